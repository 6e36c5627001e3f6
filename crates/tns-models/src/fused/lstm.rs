//! The LSTM cell (PyTorch's convention: gates `i, f, g, o`, `c' = f ⊙ c + i ⊙ g`,
//! `h' = o ⊙ tanh c'`).

use super::{Cell, Real};

/// The LSTM cell of [`super::sequence`].
pub struct Lstm;

impl Cell for Lstm {
    const NAME: &'static str = "lstm-sequence";
    const GATES: usize = 4;
    /// `i, f, g, o` (activated), the cell state before the step and `tanh` of the one after.
    const KEPT: usize = 6;

    fn step<T: Real>(
        xt: &[T],
        hh: &[T],
        h: &mut [T],
        c: &mut [T],
        kept: &mut Vec<T>,
        hidden: usize,
    ) {
        let (m, g) = (hidden, 4 * hidden);
        let start = kept.len();
        kept.resize(start + h.len() * Self::KEPT, T::zero());
        for (b, ((kb, hb), cb)) in kept[start..]
            .chunks_exact_mut(Self::KEPT * m)
            .zip(h.chunks_exact_mut(m))
            .zip(c.chunks_exact_mut(m))
            .enumerate()
        {
            let (gates, rest) = kb.split_at_mut(g);
            let (c_prev, tanh_c) = rest.split_at_mut(m);
            for ((o, &a), &r) in gates
                .iter_mut()
                .zip(&xt[b * g..][..g])
                .zip(&hh[b * g..][..g])
            {
                *o = a + r;
            }
            let (input_forget, rest) = gates.split_at_mut(2 * m);
            let (cell, output) = rest.split_at_mut(m);
            T::sigmoid_in_place(input_forget);
            T::tanh_in_place(cell);
            T::sigmoid_in_place(output);
            let (input, forget) = input_forget.split_at(m);
            c_prev.copy_from_slice(cb);
            for (((cv, &f), &i), &gv) in cb.iter_mut().zip(forget).zip(input).zip(&*cell) {
                *cv = f * *cv + i * gv;
            }
            tanh_c.copy_from_slice(cb);
            T::tanh_in_place(tanh_c);
            for ((hv, &o), &tc) in hb.iter_mut().zip(&*output).zip(&*tanh_c) {
                *hv = o * tc;
            }
        }
    }

    fn back<T: Real>(
        dh: &[T],
        dc: &mut [T],
        kept: &[T],
        _h_prev: &[T],
        dx: &mut [T],
        dhh: &mut [T],
        dh_prev: &mut [T],
        hidden: usize,
    ) {
        let (m, g) = (hidden, 4 * hidden);
        // The previous state reaches this step only through W_hh.
        dh_prev.fill(T::zero());
        for (b, kb) in kept.chunks_exact(Self::KEPT * m).enumerate() {
            let (i, rest) = kb.split_at(m);
            let (f, rest) = rest.split_at(m);
            let (gc, rest) = rest.split_at(m);
            let (o, rest) = rest.split_at(m);
            let (c_prev, tanh_c) = rest.split_at(m);
            let (gh, dcb) = (&dh[b * m..][..m], &mut dc[b * m..][..m]);
            let (gx_i, rest) = dx[b * g..][..g].split_at_mut(m);
            let (gx_f, rest) = rest.split_at_mut(m);
            let (gx_g, gx_o) = rest.split_at_mut(m);
            for j in 0..m {
                let one = T::one();
                let d_o = gh[j] * tanh_c[j];
                let dct = dcb[j] + gh[j] * o[j] * (one - tanh_c[j] * tanh_c[j]);
                gx_i[j] = dct * gc[j] * i[j] * (one - i[j]);
                gx_f[j] = dct * c_prev[j] * f[j] * (one - f[j]);
                gx_g[j] = dct * i[j] * (one - gc[j] * gc[j]);
                gx_o[j] = d_o * o[j] * (one - o[j]);
                dcb[j] = dct * f[j];
            }
            dhh[b * g..][..g].copy_from_slice(&dx[b * g..][..g]);
        }
    }
}

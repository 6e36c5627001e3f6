//! The GRU cell (PyTorch's convention: gates `r, z, n`,
//! `n = tanh(x_n + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`).

use super::{Cell, Real};

/// The GRU cell of [`super::sequence`].
pub struct Gru;

impl Cell for Gru {
    const NAME: &'static str = "gru-sequence";
    const GATES: usize = 3;
    /// `r, z, n` and `W_hn h + b_hn` (the candidate's recurrent part before the reset gate).
    const KEPT: usize = 4;

    fn step<T: Real>(
        xt: &[T],
        hh: &[T],
        h: &mut [T],
        _c: &mut [T],
        kept: &mut Vec<T>,
        hidden: usize,
    ) {
        let (m, g) = (hidden, 3 * hidden);
        let start = kept.len();
        kept.resize(start + h.len() * Self::KEPT, T::zero());
        for (b, (kb, hb)) in kept[start..]
            .chunks_exact_mut(Self::KEPT * m)
            .zip(h.chunks_exact_mut(m))
            .enumerate()
        {
            let (x, r) = (&xt[b * g..][..g], &hh[b * g..][..g]);
            let (rz, rest) = kb.split_at_mut(2 * m);
            let (n, hn) = rest.split_at_mut(m);
            for ((o, &a), &c) in rz.iter_mut().zip(&x[..2 * m]).zip(&r[..2 * m]) {
                *o = a + c;
            }
            T::sigmoid_in_place(rz);
            hn.copy_from_slice(&r[2 * m..]);
            let (reset, update) = rz.split_at(m);
            for (((o, &xn), &rv), &hv) in n.iter_mut().zip(&x[2 * m..]).zip(reset).zip(&*hn) {
                *o = xn + rv * hv;
            }
            T::tanh_in_place(n);
            for ((hv, &zv), &nv) in hb.iter_mut().zip(update).zip(&*n) {
                *hv = (T::one() - zv) * nv + zv * *hv;
            }
        }
    }

    fn back<T: Real>(
        dh: &[T],
        _dc: &mut [T],
        kept: &[T],
        h_prev: &[T],
        dx: &mut [T],
        dhh: &mut [T],
        dh_prev: &mut [T],
        hidden: usize,
    ) {
        let (m, g) = (hidden, 3 * hidden);
        for (b, kb) in kept.chunks_exact(Self::KEPT * m).enumerate() {
            let (r, rest) = kb.split_at(m);
            let (z, rest) = rest.split_at(m);
            let (n, hn) = rest.split_at(m);
            let (gh, prev) = (&dh[b * m..][..m], &h_prev[b * m..][..m]);
            let gp = &mut dh_prev[b * m..][..m];
            // Every slice `hidden` long, so that the loop has no bounds checks and vectorizes.
            let (gx_r, rest) = dx[b * g..][..g].split_at_mut(m);
            let (gx_z, gx_n) = rest.split_at_mut(m);
            let (gh_r, rest) = dhh[b * g..][..g].split_at_mut(m);
            let (gh_z, gh_n) = rest.split_at_mut(m);
            for j in 0..m {
                let one = T::one();
                let dn = gh[j] * (one - z[j]) * (one - n[j] * n[j]);
                let dz = gh[j] * (prev[j] - n[j]) * z[j] * (one - z[j]);
                let dr = dn * hn[j] * r[j] * (one - r[j]);
                gp[j] = gh[j] * z[j];
                gx_r[j] = dr;
                gx_z[j] = dz;
                gx_n[j] = dn;
                gh_r[j] = dr;
                gh_z[j] = dz;
                gh_n[j] = dn * r[j];
            }
        }
    }
}

//! Mamba's selective scan as one Candle op with a hand-written backward pass.
//!
//! Per sequence and inner channel `e`, from a zero state, `h_t = exp(Δ_t A_e) ⊙ h_{t−1} +
//! Δ_t B_t v_t` (`N` modes) and `o_t = C_t · h_t + D_e v_t`. The op runs it as the plain
//! recurrence over time, fused (no per-step graph nodes), rows of the batch in parallel in
//! fixed shards of [`SHARD_ROWS`](super::SHARD_ROWS). It is not a parallel prefix scan:
//! on a CPU's few cores the sequential loop, vectorized over the modes, already does the
//! least work (`O(L·E·N)`), and the batch gives the parallelism. The backward pass recomputes
//! each row's states (nothing is kept between the passes) and runs the recurrence backwards.
//! The weight gradients (`A`, `D`) are summed in shard order, so a result does not depend on
//! the number of threads.

use candle_core::{Shape, Tensor};
use rayon::prelude::*;

use super::{Fused, Fused3, Kernels3, MulAdd, Plain, Real, SHARD_ROWS, transpose};

/// The scan over `delta`, `v` `[B, L, E]`, `a` (`A`, negative) `[E, N]`, `b`, `c`
/// `[B, L, N]` and `skip` (`D`) `[E]` → `o` `[B, L, E]`. All f32 or all f64.
pub fn selective_scan(
    delta: &Tensor,
    v: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    skip: &Tensor,
) -> candle_core::Result<Tensor> {
    let inputs = Tensor::cat(&[delta, v], 2)?.contiguous()?;
    let modes = Tensor::cat(&[b, c], 2)?.contiguous()?;
    let params = Tensor::cat(&[&a.flatten_all()?, skip], 0)?.contiguous()?;
    inputs.apply_op3(&modes, &params, Fused3(SelectiveScan))
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    inner: usize,
    state: usize,
}

impl Dims {
    fn of(inputs: &Shape, modes: &Shape, params: &Shape) -> candle_core::Result<Self> {
        let (batch, steps, twice_inner) = inputs.dims3()?;
        let (b2, s2, twice_state) = modes.dims3()?;
        let (inner, state) = (twice_inner / 2, twice_state / 2);
        if b2 != batch
            || s2 != steps
            || twice_inner != 2 * inner
            || twice_state != 2 * state
            || params.elem_count() != inner * state + inner
        {
            return Err(candle_core::Error::Msg(format!(
                "selective scan: [Δ | v] {inputs:?}, [B | C] {modes:?} and [A | D] {params:?} do not fit (expected [B, L, 2E], [B, L, 2N], [E·N + E])"
            )));
        }
        Ok(Self {
            batch,
            steps,
            inner,
            state,
        })
    }
}

/// `[A | D]` with `A` `[E, N]` laid out by mode, `[N, E]`, as the rows take it (done once a
/// call, not once a row).
fn by_mode<T: Real>(params: &[T], d: Dims) -> Vec<T> {
    let (e, n) = (d.inner, d.state);
    let (a, skip) = params.split_at(e * n);
    let mut laid_out = transpose(a, e, n);
    laid_out.extend_from_slice(skip);
    laid_out
}

/// One row forward: writes `o` `[L, E]`; with `trace`, each step's decays and states
/// (`[L, N, E]` each: mode by mode, so that a step's loops run along the independent
/// channels and each channel's read-out sum, taken over the modes in order, is a lane of a
/// register rather than a chain of dependent additions). `params` as [`by_mode`] lays them
/// out.
#[inline(always)]
fn forward_row<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    d: Dims,
    o: &mut [T],
    mut trace: Option<(&mut [T], &mut [T])>,
) {
    let (e, n) = (d.inner, d.state);
    let e_n = e * n;
    let (a_by_mode, skip) = params.split_at(e_n);
    let mut h = vec![T::zero(); e_n];
    let mut decay = vec![T::zero(); e_n];
    let mut dv = vec![T::zero(); e];
    for t in 0..d.steps {
        let (delta, v) = inputs[t * 2 * e..(t + 1) * 2 * e].split_at(e);
        let (b, c) = modes[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        for (row, a_k) in decay
            .chunks_exact_mut(e.max(1))
            .zip(a_by_mode.chunks_exact(e.max(1)))
        {
            for ((x, &ai), &dl) in row.iter_mut().zip(a_k).zip(delta) {
                *x = dl * ai;
            }
        }
        T::exp_in_place(&mut decay);
        let acc = &mut o[t * e..(t + 1) * e];
        for (((dv, acc), &dl), (&vv, &sk)) in dv
            .iter_mut()
            .zip(acc.iter_mut())
            .zip(delta)
            .zip(v.iter().zip(skip))
        {
            *dv = dl * vv;
            *acc = sk * vv;
        }
        let mode_rows = h
            .chunks_exact_mut(e.max(1))
            .zip(decay.chunks_exact(e.max(1)));
        for ((hk, dk), (&bk, &ck)) in mode_rows.zip(b.iter().zip(c)) {
            for (((h, &decay), &dv), acc) in hk.iter_mut().zip(dk).zip(&dv).zip(acc.iter_mut()) {
                *h = M::mul_add(decay, *h, dv * bk);
                *acc = M::mul_add(ck, *h, *acc);
            }
        }
        if let Some((decays, states)) = trace.as_mut() {
            decays[t * e_n..(t + 1) * e_n].copy_from_slice(&decay);
            states[t * e_n..(t + 1) * e_n].copy_from_slice(&h);
        }
    }
}

/// `Σ xs` over 8 interleaved partial sums, so that the additions vectorize (a sum in one
/// chain would be a dependent addition per element).
#[inline(always)]
fn sum_in_lanes<T: Real>(xs: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = *lane + x;
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane = *lane + x;
    }
    lanes.iter().fold(T::zero(), |sum, &lane| sum + lane)
}

/// One row backward from `g` (`dLoss/do`, `[L, E]`): writes the row's `[dΔ | dv]` and
/// `[dB | dC]` and adds `[dA | dD]` to `d_params` (`dA` by mode, `[N, E]`, as [`by_mode`]
/// lays `A` out; [`SelectiveScan::backward`] puts it back in `[E, N]`). Its loops run mode by
/// mode along the channels, like the forward pass's, so that they vectorize.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_row<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    g: &[T],
    d: Dims,
    d_inputs: &mut [T],
    d_modes: &mut [T],
    d_params: &mut [T],
) {
    let (e, n) = (d.inner, d.state);
    let e_n = e * n;
    let mut decays = vec![T::zero(); d.steps * e_n];
    let mut states = vec![T::zero(); d.steps * e_n];
    let mut o = vec![T::zero(); d.steps * e];
    forward_row::<T, M>(
        inputs,
        modes,
        params,
        d,
        &mut o,
        Some((&mut decays, &mut states)),
    );
    let (a_by_mode, skip) = params.split_at(e_n);
    let (d_a, d_skip) = d_params.split_at_mut(e_n);
    // The state's gradient carried back from the next step, by mode `[N, E]`.
    let mut dh = vec![T::zero(); e_n];
    let zeros = vec![T::zero(); e_n];
    let (mut terms_c, mut terms_b) = (vec![T::zero(); e], vec![T::zero(); e]);
    let (mut delta_v, mut gy_now) = (vec![T::zero(); e], vec![T::zero(); e]);
    for t in (0..d.steps).rev() {
        let (delta, v) = inputs[t * 2 * e..(t + 1) * 2 * e].split_at(e);
        let (b, c) = modes[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        let (d_delta, d_v) = d_inputs[t * 2 * e..(t + 1) * 2 * e].split_at_mut(e);
        let (d_b, d_c) = d_modes[t * 2 * n..(t + 1) * 2 * n].split_at_mut(n);
        let gy = &g[t * e..(t + 1) * e];
        let now = &states[t * e_n..(t + 1) * e_n];
        let before = if t > 0 {
            &states[(t - 1) * e_n..t * e_n]
        } else {
            &zeros[..]
        };
        let decay = &decays[t * e_n..(t + 1) * e_n];
        for i in 0..e {
            d_v[i] = gy[i] * skip[i];
            d_skip[i] = M::mul_add(gy[i], v[i], d_skip[i]);
            d_delta[i] = T::zero();
            delta_v[i] = delta[i] * v[i];
            gy_now[i] = gy[i];
        }
        for k in 0..n {
            let row = k * e..(k + 1) * e;
            let (bk, ck) = (b[k], c[k]);
            let (dh_k, d_a_k) = (&mut dh[row.clone()], &mut d_a[row.clone()]);
            let (a_k, now_k) = (&a_by_mode[row.clone()], &now[row.clone()]);
            let (before_k, decay_k) = (&before[row.clone()], &decay[row]);
            for i in 0..e {
                // The state's whole gradient: through the read-out now and the next step.
                let gh = M::mul_add(gy_now[i], ck, dh_k[i]);
                terms_c[i] = gy_now[i] * now_k[i];
                // h_t = decay · h_{t−1} + Δ B v, decay = exp(Δ A).
                let g_decay = gh * before_k[i] * decay_k[i];
                d_delta[i] = M::mul_add(g_decay, a_k[i], M::mul_add(gh * bk, v[i], d_delta[i]));
                d_a_k[i] = M::mul_add(g_decay, delta[i], d_a_k[i]);
                terms_b[i] = gh * delta_v[i];
                d_v[i] = M::mul_add(gh * delta[i], bk, d_v[i]);
                dh_k[i] = gh * decay_k[i];
            }
            d_c[k] = d_c[k] + sum_in_lanes(&terms_c);
            d_b[k] = d_b[k] + sum_in_lanes(&terms_b);
        }
    }
}

/// The rows of one shard backward (`[dA | dD]` summed over them, `dA` by mode), compiled for
/// AVX2 + FMA where the CPU has them (the multiply-adds fused).
#[allow(clippy::too_many_arguments)]
fn backward_shard<T: Real>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    g: &[T],
    d: Dims,
    first_row: usize,
    d_inputs: &mut [T],
    d_modes: &mut [T],
) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if super::avx2() {
        // SAFETY: `avx2` checked that the CPU has AVX2 and FMA.
        return unsafe {
            backward_shard_avx2(inputs, modes, params, g, d, first_row, d_inputs, d_modes)
        };
    }
    backward_shard_with::<T, Plain>(inputs, modes, params, g, d, first_row, d_inputs, d_modes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn backward_shard_avx2<T: Real>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    g: &[T],
    d: Dims,
    first_row: usize,
    d_inputs: &mut [T],
    d_modes: &mut [T],
) -> Vec<T> {
    backward_shard_with::<T, Fused>(inputs, modes, params, g, d, first_row, d_inputs, d_modes)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_shard_with<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    g: &[T],
    d: Dims,
    first_row: usize,
    d_inputs: &mut [T],
    d_modes: &mut [T],
) -> Vec<T> {
    let (per_in, per_modes, per_out) = (
        (d.steps * 2 * d.inner).max(1),
        (d.steps * 2 * d.state).max(1),
        d.steps * d.inner,
    );
    let mut d_params = vec![T::zero(); params.len()];
    for (j, (di, dm)) in d_inputs
        .chunks_exact_mut(per_in)
        .zip(d_modes.chunks_exact_mut(per_modes))
        .enumerate()
    {
        let r = first_row + j;
        backward_row::<T, M>(
            &inputs[r * per_in..(r + 1) * per_in],
            &modes[r * per_modes..(r + 1) * per_modes],
            params,
            &g[r * per_out..(r + 1) * per_out],
            d,
            di,
            dm,
            &mut d_params,
        );
    }
    d_params
}

/// One row forward ([`forward_row`] without a trace), compiled for AVX2 + FMA where the CPU
/// has them.
fn forward_row_best<T: Real>(inputs: &[T], modes: &[T], params: &[T], d: Dims, o: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2() {
        // SAFETY: `avx2` checked that the CPU has AVX2 and FMA.
        return unsafe { forward_row_avx2(inputs, modes, params, d, o) };
    }
    forward_row::<T, Plain>(inputs, modes, params, d, o, None);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_row_avx2<T: Real>(inputs: &[T], modes: &[T], params: &[T], d: Dims, o: &mut [T]) {
    forward_row::<T, Fused>(inputs, modes, params, d, o, None);
}

/// The kernels of the op on `([Δ | v], [B | C], [A | D])`.
struct SelectiveScan;

impl Kernels3 for SelectiveScan {
    type Dims = Dims;

    fn name(&self) -> &'static str {
        "selective scan"
    }

    fn dims(&self, inputs: &Shape, modes: &Shape, params: &Shape) -> candle_core::Result<Dims> {
        Dims::of(inputs, modes, params)
    }

    fn output_shape(&self, d: Dims) -> Shape {
        Shape::from((d.batch, d.steps, d.inner))
    }

    fn forward<T: Real>(&self, inputs: &[T], modes: &[T], params: &[T], d: Dims) -> Vec<T> {
        let params = &by_mode(params, d);
        let mut o = vec![T::zero(); d.batch * d.steps * d.inner];
        let (per_in, per_modes) = (d.steps * 2 * d.inner, d.steps * 2 * d.state);
        o.par_chunks_mut((d.steps * d.inner).max(1))
            .enumerate()
            .for_each(|(r, row)| {
                forward_row_best(
                    &inputs[r * per_in..(r + 1) * per_in],
                    &modes[r * per_modes..(r + 1) * per_modes],
                    params,
                    d,
                    row,
                );
            });
        o
    }

    fn backward<T: Real>(
        &self,
        inputs: &[T],
        modes: &[T],
        params: &[T],
        g: &[T],
        d: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (per_in, per_modes) = (
            (d.steps * 2 * d.inner).max(1),
            (d.steps * 2 * d.state).max(1),
        );
        let by_mode = by_mode(params, d);
        let mut d_inputs = vec![T::zero(); inputs.len()];
        let mut d_modes = vec![T::zero(); modes.len()];
        let partials: Vec<Vec<T>> = d_inputs
            .par_chunks_mut(SHARD_ROWS * per_in)
            .zip(d_modes.par_chunks_mut(SHARD_ROWS * per_modes))
            .enumerate()
            .map(|(shard, (di, dm))| {
                backward_shard(inputs, modes, &by_mode, g, d, shard * SHARD_ROWS, di, dm)
            })
            .collect();
        // The shards' sums in shard order; `dA` back from by-mode `[N, E]` to `[E, N]`.
        let mut sum_by_mode = vec![T::zero(); params.len()];
        for partial in partials {
            for (sum, p) in sum_by_mode.iter_mut().zip(partial) {
                *sum = *sum + p;
            }
        }
        let (e, n) = (d.inner, d.state);
        let (d_a_by_mode, d_skip) = sum_by_mode.split_at(e * n);
        let mut d_params = transpose(d_a_by_mode, n, e);
        d_params.extend_from_slice(d_skip);
        (d_inputs, d_modes, d_params)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    /// A small case: `(delta, v, a, b, c, skip)` as f64 vectors and `(B, L, E, N)`.
    fn case() -> ([Vec<f64>; 6], (usize, usize, usize, usize)) {
        // Nine channels: the backward pass's sums over channels take a block of 8 and a rest.
        let (batch, steps, inner, state) = (3, 17, 9, 3);
        let wave = |n: usize, k: usize, scale: f64| -> Vec<f64> {
            (0..n)
                .map(|i| ((i * k % 23) as f64 - 11.0) / 11.0 * scale)
                .collect()
        };
        let delta = wave(batch * steps * inner, 7, 0.5)
            .iter()
            .map(|x| 0.05 + x.abs())
            .collect();
        let a = (0..inner * state)
            .map(|i| -((i % state) as f64 + 1.0) * (1.0 + 0.1 * (i / state) as f64))
            .collect();
        (
            [
                delta,
                wave(batch * steps * inner, 5, 1.5),
                a,
                wave(batch * steps * state, 3, 1.0),
                wave(batch * steps * state, 13, 1.0),
                wave(inner, 9, 1.0),
            ],
            (batch, steps, inner, state),
        )
    }

    /// The scan as a plain loop over rows, steps, channels and modes, with `exp` from the
    /// standard library.
    fn plain(
        x: &[Vec<f64>],
        (batch, steps, inner, state): (usize, usize, usize, usize),
    ) -> Vec<f64> {
        let [delta, v, a, b, c, skip] = x else {
            panic!("six inputs");
        };
        let mut o = vec![0.0; batch * steps * inner];
        for r in 0..batch {
            let mut h = vec![0.0; inner * state];
            for t in 0..steps {
                for (e, &skip) in skip.iter().enumerate() {
                    let at = (r * steps + t) * inner + e;
                    let mut acc = skip * v[at];
                    for n in 0..state {
                        let i = e * state + n;
                        let bt = (r * steps + t) * state + n;
                        h[i] = (delta[at] * a[i]).exp() * h[i] + delta[at] * b[bt] * v[at];
                        acc += c[bt] * h[i];
                    }
                    o[at] = acc;
                }
            }
        }
        o
    }

    fn vars(
        x: &[Vec<f64>; 6],
        (batch, steps, inner, state): (usize, usize, usize, usize),
    ) -> Vec<Var> {
        let cpu = &Device::Cpu;
        vec![
            Var::from_slice(&x[0], (batch, steps, inner), cpu).unwrap(),
            Var::from_slice(&x[1], (batch, steps, inner), cpu).unwrap(),
            Var::from_slice(&x[2], (inner, state), cpu).unwrap(),
            Var::from_slice(&x[3], (batch, steps, state), cpu).unwrap(),
            Var::from_slice(&x[4], (batch, steps, state), cpu).unwrap(),
            Var::from_slice(&x[5], inner, cpu).unwrap(),
        ]
    }

    fn scan(v: &[Var]) -> Tensor {
        selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]).unwrap()
    }

    #[test]
    fn the_scan_matches_a_plain_loop() {
        let (x, dims) = case();
        let want = plain(&x, dims);
        let got = scan(&vars(&x, dims))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{g} vs {w}");
        }
        // In f32 too, with the engine's fast exponential.
        let narrow: Vec<Tensor> = vars(&x, dims)
            .iter()
            .map(|v| v.as_tensor().to_dtype(DType::F32).unwrap())
            .collect();
        let got = selective_scan(
            &narrow[0], &narrow[1], &narrow[2], &narrow[3], &narrow[4], &narrow[5],
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn the_scan_gradients_match_finite_differences() {
        let (x, dims) = case();
        let weights: Vec<f64> = (0..dims.0 * dims.1 * dims.2)
            .map(|i| ((i * 5 % 7) as f64 - 3.0) / 7.0)
            .collect();
        let v = vars(&x, dims);
        let w = Tensor::from_slice(&weights, (dims.0, dims.1, dims.2), &Device::Cpu).unwrap();
        let grads = (scan(&v) * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &v, &x, |x| {
            plain(x, dims)
                .iter()
                .zip(&weights)
                .map(|(o, w)| o * w)
                .sum()
        });
    }

    #[test]
    fn the_scan_does_not_depend_on_the_thread_count() {
        // More rows than one shard, so that the parameter gradients are summed over shards.
        let cpu = &Device::Cpu;
        let (batch, steps, inner, state) = (40, 9, 3, 2);
        let t = |n: usize, k: usize, dims: &[usize]| {
            let data: Vec<f32> = (0..n).map(|i| ((i * k % 19) as f32 - 9.0) / 19.0).collect();
            Var::from_slice(&data, dims, cpu).unwrap()
        };
        let v = vec![
            t(batch * steps * inner, 3, &[batch, steps, inner]),
            t(batch * steps * inner, 7, &[batch, steps, inner]),
            t(inner * state, 5, &[inner, state]),
            t(batch * steps * state, 11, &[batch, steps, state]),
            t(batch * steps * state, 13, &[batch, steps, state]),
            t(inner, 2, &[inner]),
        ];
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let grads = scan(&v)
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                v.iter()
                    .map(|x| {
                        grads
                            .get(x.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    })
                    .collect()
            })
        };
        assert_eq!(run(1), run(3));
    }
}

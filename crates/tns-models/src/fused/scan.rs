//! Mamba's selective scan as one Candle op with a hand-written backward pass.
//!
//! Per sequence and inner channel `e`, from a zero state, `h_t = exp(Δ_t A_e) ⊙ h_{t−1} +
//! Δ_t B_t v_t` (`N` modes) and `o_t = C_t · h_t + D_e v_t`. The op runs the recurrence over
//! time, fused (no per-step graph nodes), its loops along the channels so that they
//! vectorize.
//!
//! **Parallel over rows, and chunked along time when the batch is small.** A batch of
//! [`PARALLEL_PIECES`] rows or more runs its rows in parallel, each the plain recurrence: on a
//! CPU's few cores that already does the least work (`O(L·E·N)`). A smaller batch (a
//! fine-tune on one series, an epoch's last batch) cannot keep the cores busy that way, so
//! its rows are also cut into chunks of at least [`MIN_CHUNK_STEPS`] steps, and the scan
//! runs in two levels. The recurrence is linear in the state, so a chunk's end state is its
//! end state from zero plus its start state times the chunk's whole decay,
//! `exp(A ⊙ Σ_t Δ_t)`:
//! 1. every chunk but the last runs from zero to its end state, in parallel;
//! 2. along each row, chunk by chunk, each start state follows from the one before
//!    (`O(E·N)` per chunk);
//! 3. every chunk runs again from its start state and writes its outputs, in parallel.
//!
//! The backward pass finds the start states the same way, the state's gradient after each
//! chunk by the mirror image (the gradient's recurrence runs backwards through the same
//! decays), then runs each chunk's backward pass from those two, in parallel, keeping the
//! trace of one chunk at a time. The backward pass recomputes the states (nothing is kept
//! between the passes); the weight gradients (`A`, `D`) are summed row by row and chunk by
//! chunk in order. The chunk length depends only on the shape, not on the thread count, so a
//! result is the same on any machine; a chunked result differs from the plain recurrence's in
//! rounding only.
//!
//! Each state-only pass costs nearly a forward pass (the decays' exponentials dominate): on
//! one thread, one row of 512 steps takes 1.9× as long chunked (2.07 against 1.11 ms,
//! `results/train/scan.md`), and on two cores it is still slower (1.36 against 1.06 ms).
//! Chunks are for machines with more cores than the batch has rows; this project's machines
//! have two, so that gain is not measured.

use candle_core::{Shape, Tensor};
use rayon::prelude::*;

use super::{Fused3, Kernels3, Loops, MulAdd, Real, run_best, transpose};

/// Rows × chunks a batch is cut into, at least: a batch of fewer rows is also cut along
/// time. Fixed, not the thread count, so that the order of every sum is the same on any
/// machine.
const PARALLEL_PIECES: usize = 8;

/// The fewest steps in a chunk (a chosen floor, not tuned): shorter chunks would spend more
/// of their time on the carry between chunks and each chunk's setup.
const MIN_CHUNK_STEPS: usize = 32;

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
    scan_with(delta, v, a, b, c, skip, SelectiveScan { chunk_steps: None })
}

/// [`selective_scan`] with the op's kernels given (a test forces the chunk length).
fn scan_with(
    delta: &Tensor,
    v: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    skip: &Tensor,
    op: SelectiveScan,
) -> candle_core::Result<Tensor> {
    let inputs = Tensor::cat(&[delta, v], 2)?.contiguous()?;
    let modes = Tensor::cat(&[b, c], 2)?.contiguous()?;
    let params = Tensor::cat(&[&a.flatten_all()?, skip], 0)?.contiguous()?;
    inputs.apply_op3(&modes, &params, Fused3(op))
}

/// Sizes of one call, or of one chunk of a row (`batch` 1, `steps` the chunk's).
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    inner: usize,
    state: usize,
    /// Steps per chunk (the last chunk of a row may be shorter); `steps` when rows are not
    /// cut.
    chunk: usize,
}

impl Dims {
    fn of(
        inputs: &Shape,
        modes: &Shape,
        params: &Shape,
        chunk_steps: Option<usize>,
    ) -> candle_core::Result<Self> {
        let (batch, steps, twice_inner) = inputs.dims3()?;
        let (b2, s2, twice_state) = modes.dims3()?;
        let (inner, state) = (twice_inner / 2, twice_state / 2);
        if b2 != batch
            || s2 != steps
            || twice_inner != 2 * inner
            || twice_state != 2 * state
            || inner == 0
            || state == 0
            || params.elem_count() != inner * state + inner
        {
            return Err(candle_core::Error::Msg(format!(
                "selective scan: [Δ | v] {inputs:?}, [B | C] {modes:?} and [A | D] {params:?} do not fit (expected [B, L, 2E], [B, L, 2N], [E·N + E], E and N at least 1)"
            )));
        }
        let chunks = if batch >= PARALLEL_PIECES {
            1
        } else {
            PARALLEL_PIECES
                .div_ceil(batch.max(1))
                .min(steps / MIN_CHUNK_STEPS)
                .max(1)
        };
        let chunk = chunk_steps.unwrap_or(steps.div_ceil(chunks)).max(1);
        Ok(Self {
            batch,
            steps,
            inner,
            state,
            chunk,
        })
    }

    /// Chunks per row.
    fn chunks(self) -> usize {
        self.steps.div_ceil(self.chunk)
    }

    /// Chunk `j` of a row: its first step and its sizes.
    fn chunk(self, j: usize) -> Chunk {
        let first = j * self.chunk;
        let steps = self.chunk.min(self.steps - first);
        Chunk {
            first,
            d: Self {
                batch: 1,
                steps,
                chunk: steps,
                ..self
            },
        }
    }

    /// The state's size, `E·N`.
    fn state_len(self) -> usize {
        self.inner * self.state
    }
}

/// One chunk of a row.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: usize,
    d: Dims,
}

impl Chunk {
    /// The chunk's part of a row's buffer of `width` values per step.
    fn of<T>(self, row: &[T], width: usize) -> &[T] {
        &row[self.first * width..(self.first + self.d.steps) * width]
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

/// One step's decays `exp(Δ_t ⊙ A)`, by mode `[N, E]`, into `decay`.
#[inline(always)]
fn decays_into<T: Real>(delta: &[T], a_by_mode: &[T], decay: &mut [T]) {
    let e = delta.len();
    for (row, a_k) in decay.chunks_exact_mut(e).zip(a_by_mode.chunks_exact(e)) {
        for ((x, &ai), &dl) in row.iter_mut().zip(a_k).zip(delta) {
            *x = dl * ai;
        }
    }
    T::exp_in_place(decay);
}

/// A chunk's whole decay `exp(A ⊙ Σ_t Δ_t)`, by mode `[N, E]`: what its start state is
/// multiplied by at its end, and the gradient after it on the way back.
fn chunk_decay<T: Real>(inputs: &[T], a_by_mode: &[T], d: Dims) -> Vec<T> {
    let e = d.inner;
    let mut sum = vec![T::zero(); e];
    for step in inputs.chunks_exact(2 * e) {
        for (s, &dl) in sum.iter_mut().zip(&step[..e]) {
            *s = *s + dl;
        }
    }
    let mut decay = vec![T::zero(); d.state_len()];
    decays_into(&sum, a_by_mode, &mut decay);
    decay
}

/// One row (or chunk) forward from the state `h` (by mode, `[N, E]`: mode by mode, so that
/// a step's loops run along the independent channels and each channel's read-out sum, taken
/// over the modes in order, is a lane of a register rather than a chain of dependent
/// additions; left at the end state): writes `o` `[L, E]`. `params` as [`by_mode`] lays
/// them out.
#[inline(always)]
fn forward_row<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    d: Dims,
    h: &mut [T],
    o: &mut [T],
) {
    let (e, n) = (d.inner, d.state);
    let e_n = e * n;
    let (a_by_mode, skip) = params.split_at(e_n);
    let mut decay = vec![T::zero(); e_n];
    let mut dv = vec![T::zero(); e];
    for t in 0..d.steps {
        let (delta, v) = inputs[t * 2 * e..(t + 1) * 2 * e].split_at(e);
        let (b, c) = modes[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        decays_into(delta, a_by_mode, &mut decay);
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
        let mode_rows = h.chunks_exact_mut(e).zip(decay.chunks_exact(e));
        for ((hk, dk), (&bk, &ck)) in mode_rows.zip(b.iter().zip(c)) {
            for (((h, &decay), &dv), acc) in hk.iter_mut().zip(dk).zip(&dv).zip(acc.iter_mut()) {
                *h = M::mul_add(decay, *h, dv * bk);
                *acc = M::mul_add(ck, *h, *acc);
            }
        }
    }
}

/// One chunk's state recurrence alone, from `h` (left at the chunk's end state), without
/// outputs: the chunked scan's first pass, and the backward pass's recomputation, which
/// keeps each step's decays and states in `trace` (`[L, N, E]` each). Its states are
/// [`forward_row`]'s to the bit: the same operations in the same order.
#[inline(always)]
fn end_state<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    a_by_mode: &[T],
    d: Dims,
    h: &mut [T],
    mut trace: Option<(&mut [T], &mut [T])>,
) {
    let (e, n) = (d.inner, d.state);
    let mut decay = vec![T::zero(); e * n];
    let mut dv = vec![T::zero(); e];
    for t in 0..d.steps {
        let (delta, v) = inputs[t * 2 * e..(t + 1) * 2 * e].split_at(e);
        let b = &modes[t * 2 * n..t * 2 * n + n];
        decays_into(delta, a_by_mode, &mut decay);
        for ((dv, &dl), &vv) in dv.iter_mut().zip(delta).zip(v) {
            *dv = dl * vv;
        }
        for ((hk, dk), &bk) in h.chunks_exact_mut(e).zip(decay.chunks_exact(e)).zip(b) {
            for ((h, &decay), &dv) in hk.iter_mut().zip(dk).zip(&dv) {
                *h = M::mul_add(decay, *h, dv * bk);
            }
        }
        if let Some((decays, states)) = trace.as_mut() {
            let e_n = e * n;
            decays[t * e_n..(t + 1) * e_n].copy_from_slice(&decay);
            states[t * e_n..(t + 1) * e_n].copy_from_slice(h);
        }
    }
}

/// One chunk's recurrence of the state's gradient alone, backwards, from `dh` (the gradient
/// after the chunk, by mode; left at the gradient before it) and the outputs' gradient `g`
/// `[L, E]`, without the other gradients: the mirror of [`end_state`].
#[inline(always)]
fn gradient_before<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    a_by_mode: &[T],
    g: &[T],
    d: Dims,
    dh: &mut [T],
) {
    let (e, n) = (d.inner, d.state);
    let mut decay = vec![T::zero(); e * n];
    for t in (0..d.steps).rev() {
        let delta = &inputs[t * 2 * e..t * 2 * e + e];
        let c = &modes[t * 2 * n + n..(t + 1) * 2 * n];
        let gy = &g[t * e..(t + 1) * e];
        decays_into(delta, a_by_mode, &mut decay);
        for ((dh_k, dk), &ck) in dh.chunks_exact_mut(e).zip(decay.chunks_exact(e)).zip(c) {
            for ((dh, &decay), &gy) in dh_k.iter_mut().zip(dk).zip(gy) {
                *dh = M::mul_add(gy, ck, *dh) * decay;
            }
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

/// The buffers one chunk's backward pass fills with its states' trace, reused from chunk to
/// chunk on a thread, so that the backward pass does not allocate (and fault in) a trace per
/// row.
struct Trace<T> {
    decays: Vec<T>,
    states: Vec<T>,
}

impl<T: Real> Trace<T> {
    /// Room for the longest chunk of `d`.
    fn for_chunks(d: Dims) -> Self {
        Self {
            decays: vec![T::zero(); d.chunk * d.state_len()],
            states: vec![T::zero(); d.chunk * d.state_len()],
        }
    }
}

/// One row (or chunk) backward from `g` (`dLoss/do`, `[L, E]`), the state before it
/// `h_before` and the state's gradient after it `dh` (both by mode), with `trace` room for
/// its forward trace: writes the `[dΔ | dv]`
/// and `[dB | dC]` of its steps and adds `[dA | dD]` to `d_params` (`dA` by mode, `[N, E]`,
/// as [`by_mode`] lays `A` out; [`SelectiveScan::backward`] puts it back in `[E, N]`). Its
/// loops run mode by mode along the channels, like the forward pass's, so that they
/// vectorize.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_row<T: Real, M: MulAdd>(
    inputs: &[T],
    modes: &[T],
    params: &[T],
    g: &[T],
    d: Dims,
    h_before: &[T],
    dh: &mut [T],
    trace: &mut Trace<T>,
    d_inputs: &mut [T],
    d_modes: &mut [T],
    d_params: &mut [T],
) {
    let (e, n) = (d.inner, d.state);
    let e_n = e * n;
    let (a_by_mode, skip) = params.split_at(e_n);
    let decays = &mut trace.decays[..d.steps * e_n];
    let states = &mut trace.states[..d.steps * e_n];
    // The states again, without the outputs the loss's gradient already stands for.
    end_state::<T, M>(
        inputs,
        modes,
        a_by_mode,
        d,
        &mut h_before.to_vec(),
        Some((&mut *decays, &mut *states)),
    );
    let (d_a, d_skip) = d_params.split_at_mut(e_n);
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
            h_before
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

/// One pass of the scan over one row or chunk: its inputs `[Δ | v]` and `[B | C]`, the
/// parameters as [`by_mode`] lays them out (or `A` alone), its sizes and the pass, as
/// [`Loops`].
struct RowPass<'a, T> {
    inputs: &'a [T],
    modes: &'a [T],
    params: &'a [T],
    d: Dims,
    pass: Pass<'a, T>,
}

/// What a [`RowPass`] runs, and the buffers it reads and writes besides the row's inputs.
enum Pass<'a, T> {
    /// [`forward_row`] from the state `h`, without a trace, writing `o`.
    Forward { h: &'a mut [T], o: &'a mut [T] },
    /// [`end_state`] from the state `h`.
    EndState { h: &'a mut [T] },
    /// [`gradient_before`] from the gradient `dh` after the chunk and its outputs' `g`.
    GradientBefore { g: &'a [T], dh: &'a mut [T] },
    /// [`backward_row`]; adds the chunk's `[dA | dD]` (by mode) to `d_params`.
    Backward {
        g: &'a [T],
        h_before: &'a [T],
        dh: &'a mut [T],
        trace: &'a mut Trace<T>,
        d_inputs: &'a mut [T],
        d_modes: &'a mut [T],
        d_params: &'a mut [T],
    },
}

impl<T: Real> Loops for RowPass<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<M: MulAdd>(self) {
        let Self {
            inputs,
            modes,
            params,
            d,
            pass,
        } = self;
        let a_by_mode = &params[..d.state_len()];
        match pass {
            Pass::Forward { h, o } => forward_row::<T, M>(inputs, modes, params, d, h, o),
            Pass::EndState { h } => end_state::<T, M>(inputs, modes, a_by_mode, d, h, None),
            Pass::GradientBefore { g, dh } => {
                gradient_before::<T, M>(inputs, modes, a_by_mode, g, d, dh);
            }
            Pass::Backward {
                g,
                h_before,
                dh,
                trace,
                d_inputs,
                d_modes,
                d_params,
            } => backward_row::<T, M>(
                inputs, modes, params, g, d, h_before, dh, trace, d_inputs, d_modes, d_params,
            ),
        }
    }
}

impl Chunk {
    /// The pass `pass` over this chunk of a row whose inputs are `row_in` and `row_modes`.
    fn pass<'a, T>(
        self,
        row_in: &'a [T],
        row_modes: &'a [T],
        params: &'a [T],
        pass: Pass<'a, T>,
    ) -> RowPass<'a, T> {
        RowPass {
            inputs: self.of(row_in, 2 * self.d.inner),
            modes: self.of(row_modes, 2 * self.d.state),
            params,
            d: self.d,
            pass,
        }
    }
}

/// The state each chunk of each row starts from, `[B, K, N·E]` (by mode; zero for a row's
/// first chunk): the chunked scan's first two passes.
fn chunk_starts<T: Real>(inputs: &[T], modes: &[T], a_by_mode: &[T], d: Dims) -> Vec<T> {
    let (e_n, k) = (d.state_len(), d.chunks());
    let mut starts = vec![T::zero(); d.batch * k * e_n];
    let (per_in, per_modes) = (d.steps * 2 * d.inner, d.steps * 2 * d.state);
    starts
        .par_chunks_mut(k * e_n)
        .zip(inputs.par_chunks(per_in))
        .zip(modes.par_chunks(per_modes))
        .for_each(|((row, row_in), row_modes)| {
            // Each chunk's end state from zero, where the next chunk's start goes.
            row[e_n..]
                .par_chunks_mut(e_n)
                .enumerate()
                .for_each(|(j, end)| {
                    let chunk = d.chunk(j);
                    let pass = Pass::EndState { h: end };
                    run_best(chunk.pass(row_in, row_modes, a_by_mode, pass));
                });
            for j in 1..k {
                let chunk = d.chunk(j - 1);
                let decay = chunk_decay(chunk.of(row_in, 2 * d.inner), a_by_mode, chunk.d);
                let (before, now) = row.split_at_mut(j * e_n);
                let previous = &before[(j - 1) * e_n..];
                for ((start, &prev), &decay) in now[..e_n].iter_mut().zip(previous).zip(&decay) {
                    *start = decay * prev + *start;
                }
            }
        });
    starts
}

/// The loss's gradient for the state after each chunk of each row, `[B, K, N·E]` (by mode;
/// zero after a row's last chunk), from the outputs' gradient `g`: the mirror image of
/// [`chunk_starts`].
fn chunk_end_gradients<T: Real>(
    inputs: &[T],
    modes: &[T],
    a_by_mode: &[T],
    g: &[T],
    d: Dims,
) -> Vec<T> {
    let (e_n, k) = (d.state_len(), d.chunks());
    let mut after = vec![T::zero(); d.batch * k * e_n];
    let (per_in, per_modes) = (d.steps * 2 * d.inner, d.steps * 2 * d.state);
    after
        .par_chunks_mut(k * e_n)
        .zip(inputs.par_chunks(per_in))
        .zip(modes.par_chunks(per_modes))
        .zip(g.par_chunks(d.steps * d.inner))
        .for_each(|(((row, row_in), row_modes), row_g)| {
            // The gradient before each chunk but the first, from zero after it, where the
            // gradient after the chunk before it goes.
            row[..(k - 1) * e_n]
                .par_chunks_mut(e_n)
                .enumerate()
                .for_each(|(j, before)| {
                    let chunk = d.chunk(j + 1);
                    let pass = Pass::GradientBefore {
                        g: chunk.of(row_g, d.inner),
                        dh: before,
                    };
                    run_best(chunk.pass(row_in, row_modes, a_by_mode, pass));
                });
            for j in (0..k.saturating_sub(1)).rev() {
                let chunk = d.chunk(j + 1);
                let decay = chunk_decay(chunk.of(row_in, 2 * d.inner), a_by_mode, chunk.d);
                let (now, later) = row.split_at_mut((j + 1) * e_n);
                for ((after, &next), &decay) in
                    now[j * e_n..].iter_mut().zip(&later[..e_n]).zip(&decay)
                {
                    *after = decay * next + *after;
                }
            }
        });
    after
}

/// The kernels of the op on `([Δ | v], [B | C], [A | D])`.
struct SelectiveScan {
    /// Steps per chunk, forced (a test's); `None` lets the shape decide.
    chunk_steps: Option<usize>,
}

impl Kernels3 for SelectiveScan {
    type Dims = Dims;

    fn name(&self) -> &'static str {
        "selective scan"
    }

    fn dims(&self, inputs: &Shape, modes: &Shape, params: &Shape) -> candle_core::Result<Dims> {
        Dims::of(inputs, modes, params, self.chunk_steps)
    }

    fn output_shape(&self, d: Dims) -> Shape {
        Shape::from((d.batch, d.steps, d.inner))
    }

    fn forward<T: Real>(&self, inputs: &[T], modes: &[T], params: &[T], d: Dims) -> Vec<T> {
        let mut o = vec![T::zero(); d.batch * d.steps * d.inner];
        if o.is_empty() {
            return o;
        }
        let params = &by_mode(params, d);
        let e_n = d.state_len();
        let starts = chunk_starts(inputs, modes, params, d);
        let (per_in, per_modes) = (d.steps * 2 * d.inner, d.steps * 2 * d.state);
        o.par_chunks_mut(d.steps * d.inner)
            .zip(starts.par_chunks(d.chunks() * e_n))
            .enumerate()
            .for_each(|(r, (row_o, row_starts))| {
                let row_in = &inputs[r * per_in..(r + 1) * per_in];
                let row_modes = &modes[r * per_modes..(r + 1) * per_modes];
                row_o
                    .par_chunks_mut(d.chunk * d.inner)
                    .zip(row_starts.par_chunks(e_n))
                    .enumerate()
                    .for_each(|(j, (out, start))| {
                        let chunk = d.chunk(j);
                        let pass = Pass::Forward {
                            h: &mut start.to_vec(),
                            o: out,
                        };
                        run_best(chunk.pass(row_in, row_modes, params, pass));
                    });
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
        let mut d_inputs = vec![T::zero(); inputs.len()];
        let mut d_modes = vec![T::zero(); modes.len()];
        if g.is_empty() {
            return (d_inputs, d_modes, vec![T::zero(); params.len()]);
        }
        let by_mode = by_mode(params, d);
        let (a_by_mode, e_n, k) = (&by_mode[..d.state_len()], d.state_len(), d.chunks());
        let starts = chunk_starts(inputs, modes, a_by_mode, d);
        let afters = chunk_end_gradients(inputs, modes, a_by_mode, g, d);
        let (per_in, per_modes) = (d.steps * 2 * d.inner, d.steps * 2 * d.state);
        // Every chunk of every row, each with its outputs' gradients, start state and state
        // gradient after it; a thread reuses one trace for the chunks it runs.
        let partials: Vec<Vec<T>> = d_inputs
            .par_chunks_mut(per_in)
            .zip(d_modes.par_chunks_mut(per_modes))
            .zip(starts.par_chunks(k * e_n).zip(afters.par_chunks(k * e_n)))
            .enumerate()
            .flat_map(|(r, ((row_di, row_dm), (row_starts, row_afters)))| {
                row_di
                    .par_chunks_mut(d.chunk * 2 * d.inner)
                    .zip(row_dm.par_chunks_mut(d.chunk * 2 * d.state))
                    .zip(row_starts.par_chunks(e_n).zip(row_afters.par_chunks(e_n)))
                    .enumerate()
                    .map(move |(j, chunk_buffers)| (r, j, chunk_buffers))
            })
            .map_init(
                || Trace::for_chunks(d),
                |trace, (r, j, ((d_inputs, d_modes), (start, after)))| {
                    let chunk = d.chunk(j);
                    let row_in = &inputs[r * per_in..(r + 1) * per_in];
                    let row_modes = &modes[r * per_modes..(r + 1) * per_modes];
                    let row_g = &g[r * d.steps * d.inner..(r + 1) * d.steps * d.inner];
                    let mut d_params = vec![T::zero(); by_mode.len()];
                    let pass = Pass::Backward {
                        g: chunk.of(row_g, d.inner),
                        h_before: start,
                        dh: &mut after.to_vec(),
                        trace,
                        d_inputs,
                        d_modes,
                        d_params: &mut d_params,
                    };
                    run_best(chunk.pass(row_in, row_modes, &by_mode, pass));
                    d_params
                },
            )
            .collect();
        // The chunks' sums in row and chunk order; `dA` back from by-mode `[N, E]` to
        // `[E, N]`.
        let mut sum_by_mode = vec![T::zero(); params.len()];
        for partial in partials {
            for (sum, p) in sum_by_mode.iter_mut().zip(partial) {
                *sum = *sum + p;
            }
        }
        let (d_a_by_mode, d_skip) = sum_by_mode.split_at(e_n);
        let mut d_params = transpose(d_a_by_mode, d.state, d.inner);
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

    /// The scan with its rows cut into chunks of `chunk_steps`.
    fn scan_in_chunks(v: &[Var], chunk_steps: usize) -> Tensor {
        let op = SelectiveScan {
            chunk_steps: Some(chunk_steps),
        };
        scan_with(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], op).unwrap()
    }

    /// Chunk lengths for the small case's 17 steps: one step, lengths that do and do not
    /// divide 17, and the whole row.
    const CHUNKS: [usize; 5] = [1, 4, 5, 16, 17];

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
    fn the_chunked_scan_matches_a_plain_loop() {
        let (x, dims) = case();
        let want = plain(&x, dims);
        let v = vars(&x, dims);
        for chunk in CHUNKS {
            let got = scan_in_chunks(&v, chunk)
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "chunks of {chunk}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn a_small_batch_is_chunked_and_a_large_one_is_not() {
        let shape = |b: usize, l: usize, w: usize| Shape::from((b, l, w));
        let params = Shape::from(16 * 4 + 16);
        let chunk = |batch: usize, steps: usize| {
            Dims::of(
                &shape(batch, steps, 32),
                &shape(batch, steps, 8),
                &params,
                None,
            )
            .unwrap()
            .chunk
        };
        // One row of 512 steps: 8 chunks of 64; four rows: 2 chunks each.
        assert_eq!(chunk(1, 512), 64);
        assert_eq!(chunk(4, 512), 256);
        // A full batch, or steps too few for two chunks of 32, run whole rows.
        assert_eq!(chunk(8, 512), 512);
        assert_eq!(chunk(1, 63), 63);
        assert_eq!(chunk(1, 64), 32);
    }

    #[test]
    fn the_scan_gradients_match_finite_differences() {
        let (x, dims) = case();
        let weights: Vec<f64> = (0..dims.0 * dims.1 * dims.2)
            .map(|i| ((i * 5 % 7) as f64 - 3.0) / 7.0)
            .collect();
        let v = vars(&x, dims);
        let w = Tensor::from_slice(&weights, (dims.0, dims.1, dims.2), &Device::Cpu).unwrap();
        let loss = |x: &[Vec<f64>]| -> f64 {
            plain(x, dims)
                .iter()
                .zip(&weights)
                .map(|(o, w)| o * w)
                .sum()
        };
        let grads = (scan(&v) * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &v, &x, loss);
        for chunk in CHUNKS {
            let grads = (scan_in_chunks(&v, chunk) * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            crate::gradcheck::assert_gradients_match(&grads, &v, &x, loss);
        }
    }

    #[test]
    fn the_scan_does_not_depend_on_the_thread_count() {
        // Many rows, whole; then a few rows, cut into chunks.
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
        let run = |threads: usize, chunk_steps: Option<usize>| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let o = match chunk_steps {
                    None => scan(&v),
                    Some(steps) => scan_in_chunks(&v, steps),
                };
                let grads = o.sqr().unwrap().sum_all().unwrap().backward().unwrap();
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
        assert_eq!(run(1, None), run(3, None));
        assert_eq!(run(1, Some(2)), run(3, Some(2)));
    }
}

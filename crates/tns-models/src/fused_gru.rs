//! The GRU's recurrence over a whole sequence as one Candle op with a hand-written backward
//! pass (backpropagation through time), instead of a graph of a dozen small ops per step.
//!
//! The op takes the sequence `x [B, T, I]`, the weights packed side by side
//! `[W_ih | W_hh]` (`[3H, I + H]`) and the biases end to end `[b_ih, b_hh]` (`[6H]`), and
//! returns the last hidden state `[B, H]` (the network reads only that). Gates follow
//! PyTorch's and Candle's order `(r, z, n)`:
//!
//! ```text
//! r = σ(xr + W_hr h + b_hr)   z = σ(xz + W_hz h + b_hz)   n = tanh(xn + r ⊙ (W_hn h + b_hn))
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//!
//! The autograd graph holds one node for the whole sequence. A training batch's forward pass
//! keeps each step's state and gates (`5 · B · T · H` values) for its backward pass; a larger
//! batch (a validation pass, with no backward) keeps nothing, and a backward pass without them
//! recomputes the forward. The backward pass walks the steps back; the input projection and its gradients are products
//! inside the op, so no `[B, T, 3H]` tensor enters the graph. Rows of the batch are processed in fixed shards of
//! [`SHARD_ROWS`] in parallel; the shards' weight gradients are summed in shard order, so a
//! result does not depend on the number of threads. Multiply-adds are fused only in the
//! AVX2 + FMA build: elsewhere `mul_add` is a slow library call.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// Rows of the batch per parallel shard. Fixed (not derived from the thread count) so that the
/// order of every floating-point sum is the same on any machine.
pub const SHARD_ROWS: usize = 16;

/// The GRU, as a Candle op on `(x [B, T, I], [W_ih | W_hh] [3H, I + H], [b_ih, b_hh] [6H])`.
#[derive(Debug, Clone, Copy)]
pub struct GruSequence;

/// Runs a zero-initialized GRU over `x [B, T, I]` (PyTorch's weight layout: `w_ih [3H, I]`,
/// `w_hh [3H, H]`, `b_ih`, `b_hh [3H]`) and returns its last hidden state `[B, H]`.
pub fn gru_last_state(
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: &Tensor,
    b_hh: &Tensor,
) -> candle_core::Result<Tensor> {
    let weights = Tensor::cat(&[w_ih, w_hh], 1)?;
    let biases = Tensor::cat(&[b_ih, b_hh], 0)?;
    x.contiguous()?
        .apply_op3(&weights.contiguous()?, &biases.contiguous()?, GruSequence)
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    inputs: usize,
    hidden: usize,
}

impl Dims {
    fn of(x: &Shape, weights: &Shape, biases: &Shape) -> candle_core::Result<Self> {
        let (batch, steps, inputs) = x.dims3()?;
        let (gates, columns) = weights.dims2()?;
        let hidden = gates / 3;
        if gates != 3 * hidden || columns != inputs + hidden || biases.elem_count() != 2 * gates {
            return Err(candle_core::Error::Msg(format!(
                "GRU: input {x:?}, packed weights {weights:?} and biases {biases:?} do not fit (expected [B, T, I], [3H, I + H], [6H])"
            )));
        }
        Ok(Self {
            batch,
            steps,
            inputs,
            hidden,
        })
    }
}

/// The weights of one call, unpacked, with the transposes the products read.
struct Weights<T> {
    /// `W_ihᵀ [I, 3H]`.
    w_ih_t: Vec<T>,
    w_hh: Vec<T>,
    /// `W_hhᵀ [H, 3H]`.
    w_hh_t: Vec<T>,
    b_ih: Vec<T>,
    b_hh: Vec<T>,
}

impl<T: Float> Weights<T> {
    fn unpack(packed: &[T], biases: &[T], d: Dims) -> Self {
        let (i, h) = (d.inputs, d.hidden);
        let mut w_ih = Vec::with_capacity(3 * h * i);
        let mut w_hh = Vec::with_capacity(3 * h * h);
        for row in packed.chunks_exact(i + h) {
            w_ih.extend_from_slice(&row[..i]);
            w_hh.extend_from_slice(&row[i..]);
        }
        Self {
            w_ih_t: transpose(&w_ih, 3 * h, i),
            w_hh_t: transpose(&w_hh, 3 * h, h),
            w_hh,
            b_ih: biases[..3 * h].to_vec(),
            b_hh: biases[3 * h..].to_vec(),
        }
    }
}

/// The element types the op runs in: f32 (training) with the engine's fast vectorized
/// activations, f64 (gradient checks) with the standard library's.
pub trait Real: Float + Send + Sync + 'static {
    /// `xs[i] ← σ(xs[i])`.
    fn sigmoid_in_place(xs: &mut [Self]);
    /// `xs[i] ← tanh(xs[i])`.
    fn tanh_in_place(xs: &mut [Self]);
}

impl Real for f32 {
    fn sigmoid_in_place(xs: &mut [Self]) {
        tns_engine::sigmoid_in_place(xs);
    }
    fn tanh_in_place(xs: &mut [Self]) {
        tns_engine::tanh_in_place(xs);
    }
}

impl Real for f64 {
    fn sigmoid_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
    }
    fn tanh_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = x.tanh());
    }
}

/// How `a · b + c` is computed: fused in the AVX2 + FMA build (one instruction), plain in
/// the portable one (where `mul_add` would be a slow library call).
trait MulAdd {
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T;
}

/// One fused multiply-add instruction (only inside `#[target_feature(enable = "fma")]`).
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T {
        a.mul_add(b, c)
    }
}

/// A multiply, then an add.
struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add<T: Real>(a: T, b: T, c: T) -> T {
        a * b + c
    }
}

/// What the backward pass needs of each step of one shard, `[T, rows, ·]` each (`h` has
/// `T + 1` entries: the state before every step and after the last).
struct Trace<T> {
    h: Vec<T>,
    /// The reset and update gates, `[T, rows, 2H]`.
    rz: Vec<T>,
    n: Vec<T>,
    /// `W_hn h + b_hn`, the candidate's recurrent part before the reset gate.
    hn: Vec<T>,
}

impl<T> Trace<T> {
    fn with_capacity(steps: usize, values_per_step: usize) -> Self {
        let n = steps * values_per_step;
        Self {
            h: Vec::with_capacity(n + values_per_step),
            rz: Vec::with_capacity(2 * n),
            n: Vec::with_capacity(n),
            hn: Vec::with_capacity(n),
        }
    }
}

/// `out[r, :] += Σ_k a(r, k) · b[k, :]` for `b [K, N]` and `out [rows, N]` row-major, with
/// `a(r, k) = a[r·K + k]` (`a [rows, K]`), or `a[k·rows + r]` when `A_TRANSPOSED` (`a [K, rows]`).
/// Blocks of 4 rows × 16 columns keep 64 accumulators in registers (8 AVX2 registers in
/// f32) while `k` runs, which hides the latency of the multiply-adds.
#[inline(always)]
fn gemm_acc<T: Real, M: MulAdd, const A_TRANSPOSED: bool>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    k: usize,
    n: usize,
) {
    let rows = out.len() / n.max(1);
    let mut r0 = 0;
    while r0 + 4 <= rows {
        gemm_rows::<T, M, A_TRANSPOSED, 4>(a, b, out, k, n, r0);
        r0 += 4;
    }
    while r0 < rows {
        gemm_rows::<T, M, A_TRANSPOSED, 1>(a, b, out, k, n, r0);
        r0 += 1;
    }
}

/// Rows `r0 .. r0 + R` of [`gemm_acc`]; `R` is a constant so that the accumulators stay in
/// registers.
#[inline(always)]
fn gemm_rows<T: Real, M: MulAdd, const A_TRANSPOSED: bool, const R: usize>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    k: usize,
    n: usize,
    r0: usize,
) {
    const C: usize = 16;
    let rows = out.len() / n.max(1);
    let at = |r: usize, kk: usize| {
        if A_TRANSPOSED {
            a[kk * rows + r]
        } else {
            a[r * k + kk]
        }
    };
    let mut c0 = 0;
    while c0 + C <= n {
        let mut acc = [[T::zero(); C]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&out[(r0 + r) * n + c0..][..C]);
        }
        for kk in 0..k {
            let brow: &[T] = &b[kk * n + c0..][..C];
            let mut av = [T::zero(); R];
            for (r, v) in av.iter_mut().enumerate() {
                *v = at(r0 + r, kk);
            }
            for (acc, &av) in acc.iter_mut().zip(&av) {
                for (o, &bv) in acc.iter_mut().zip(brow) {
                    *o = M::mul_add(av, bv, *o);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            out[(r0 + r) * n + c0..][..C].copy_from_slice(acc);
        }
        c0 += C;
    }
    // Columns past the last full block.
    for r in r0..r0 + R {
        for c in c0..n {
            let mut sum = out[r * n + c];
            for kk in 0..k {
                sum = M::mul_add(at(r, kk), b[kk * n + c], sum);
            }
            out[r * n + c] = sum;
        }
    }
}

/// `out[b, :] = b_hh + h[b, :] · W_hhᵀ` for every row; `w_t` is `W_hh` transposed (`[H, 3H]`).
#[inline(always)]
fn recurrent_part<T: Real, M: MulAdd>(
    h: &[T],
    w_t: &[T],
    b_hh: &[T],
    hidden: usize,
    out: &mut [T],
) {
    for o in out.chunks_exact_mut(3 * hidden) {
        o.copy_from_slice(b_hh);
    }
    gemm_acc::<T, M, false>(h, w_t, out, hidden, 3 * hidden);
}

/// Runs one shard of rows forward. `x` is the shard's inputs `[rows, T, I]`; returns the
/// last state `[rows, H]`, and fills `kept` when given. The activations run over whole
/// buffers of a step, so that they vectorize.
#[inline(always)]
fn forward_shard<T: Real, M: MulAdd>(
    x: &[T],
    w: &Weights<T>,
    d: Dims,
    mut kept: Option<&mut Trace<T>>,
) -> Vec<T> {
    let (steps, hidden) = (d.steps, d.hidden);
    let three_h = 3 * hidden;
    let rows = x.len() / (steps * d.inputs).max(1);
    // Every step's input projection `x W_ihᵀ + b_ih`, [rows, T, 3H], in one product.
    let mut x_proj = vec![T::zero(); rows * steps * three_h];
    for o in x_proj.chunks_exact_mut(three_h) {
        o.copy_from_slice(&w.b_ih);
    }
    gemm_acc::<T, M, false>(x, &w.w_ih_t, &mut x_proj, d.inputs, three_h);
    let x = &x_proj;
    let (w_t, b_hh) = (&w.w_hh_t, &w.b_hh);
    let mut h = vec![T::zero(); rows * hidden];
    let mut hh = vec![T::zero(); rows * three_h];
    let mut rz = vec![T::zero(); rows * 2 * hidden];
    let mut n = vec![T::zero(); rows * hidden];
    for t in 0..steps {
        recurrent_part::<T, M>(&h, w_t, b_hh, hidden, &mut hh);
        for b in 0..rows {
            let xs = &x[(b * steps + t) * three_h..][..2 * hidden];
            let hs = &hh[b * three_h..][..2 * hidden];
            for ((g, &xv), &hv) in rz[b * 2 * hidden..][..2 * hidden]
                .iter_mut()
                .zip(xs)
                .zip(hs)
            {
                *g = xv + hv;
            }
        }
        T::sigmoid_in_place(&mut rz);
        for b in 0..rows {
            let xn = &x[(b * steps + t) * three_h + 2 * hidden..][..hidden];
            let hn = &hh[b * three_h + 2 * hidden..][..hidden];
            let r = &rz[b * 2 * hidden..][..hidden];
            for (j, g) in n[b * hidden..][..hidden].iter_mut().enumerate() {
                *g = xn[j] + r[j] * hn[j];
            }
        }
        T::tanh_in_place(&mut n);
        if let Some(k) = kept.as_mut() {
            k.h.extend_from_slice(&h);
            k.rz.extend_from_slice(&rz);
            k.n.extend_from_slice(&n);
            for b in 0..rows {
                k.hn.extend_from_slice(&hh[b * three_h + 2 * hidden..][..hidden]);
            }
        }
        for b in 0..rows {
            let z = &rz[b * 2 * hidden + hidden..][..hidden];
            let nb = &n[b * hidden..][..hidden];
            for (j, hv) in h[b * hidden..][..hidden].iter_mut().enumerate() {
                *hv = (T::one() - z[j]) * nb[j] + z[j] * *hv;
            }
        }
    }
    if let Some(k) = kept.as_mut() {
        k.h.extend_from_slice(&h);
    }
    h
}

/// Gradients of one shard: `(dx [rows, T, I], d[W_ih | W_hh] [3H, I + H], d[b_ih, b_hh] [6H])`.
#[inline(always)]
fn backward_shard<T: Real, M: MulAdd>(
    x: &[T],
    w: &Weights<T>,
    grad: &[T],
    d: Dims,
    trace: Option<Trace<T>>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (steps, hidden, inputs) = (d.steps, d.hidden, d.inputs);
    let three_h = 3 * hidden;
    let rows = grad.len() / hidden;
    let w_hh = &w.w_hh;
    // The forward pass's trace when it kept one, else the forward again.
    let tr = trace.unwrap_or_else(|| {
        let mut tr = Trace::with_capacity(steps, rows * hidden);
        forward_shard::<T, M>(x, w, d, Some(&mut tr));
        tr
    });
    // Gradients of the input projections, [rows, T, 3H].
    let mut dx = vec![T::zero(); rows * steps * three_h];
    let mut dh = grad.to_vec();
    let mut dh_prev = vec![T::zero(); rows * hidden];
    // Gradients of the recurrent pre-activations `W_hh h + b_hh`, `[T, rows, 3H]` (the
    // layout of the trace's states, so that the weight gradient is one product at the end).
    let mut dhh = vec![T::zero(); steps * rows * three_h];
    for t in (0..steps).rev() {
        let step = t * rows * hidden;
        let dhh_t = &mut dhh[t * rows * three_h..][..rows * three_h];
        for b in 0..rows {
            let at = step + b * hidden;
            let rz = &tr.rz[2 * step + b * 2 * hidden..][..2 * hidden];
            let (r, z) = rz.split_at(hidden);
            let (n, hn, prev) = (
                &tr.n[at..at + hidden],
                &tr.hn[at..at + hidden],
                &tr.h[at..at + hidden],
            );
            let (g, gp) = (
                &dh[b * hidden..][..hidden],
                &mut dh_prev[b * hidden..][..hidden],
            );
            // Every slice `hidden` long, so that the loop has no bounds checks and vectorizes.
            let (gx_r, gx) = dx[(b * steps + t) * three_h..][..three_h].split_at_mut(hidden);
            let (gx_z, gx_n) = gx.split_at_mut(hidden);
            let (gh_r, gh) = dhh_t[b * three_h..][..three_h].split_at_mut(hidden);
            let (gh_z, gh_n) = gh.split_at_mut(hidden);
            let z = &z[..hidden];
            for j in 0..hidden {
                let one = T::one();
                let dn = g[j] * (one - z[j]) * (one - n[j] * n[j]);
                let dz = g[j] * (prev[j] - n[j]) * z[j] * (one - z[j]);
                let dr = dn * hn[j] * r[j] * (one - r[j]);
                gp[j] = g[j] * z[j];
                gx_r[j] = dr;
                gx_z[j] = dz;
                gx_n[j] = dn;
                gh_r[j] = dr;
                gh_z[j] = dz;
                gh_n[j] = dn * r[j];
            }
        }
        gemm_acc::<T, M, false>(dhh_t, w_hh, &mut dh_prev, three_h, hidden);
        std::mem::swap(&mut dh, &mut dh_prev);
    }
    // dW_hh = Σ_{t,b} dhh[t,b,:]ᵀ h_prev[t,b,:], db_hh = Σ_{t,b} dhh[t,b,:]; the same
    // with the projections' gradients and the inputs for W_ih and b_ih.
    let pairs = steps * rows;
    let column_sums = |g: &[T]| {
        let mut sums = vec![T::zero(); three_h];
        for row in g.chunks_exact(three_h) {
            for (a, &v) in sums.iter_mut().zip(row) {
                *a = *a + v;
            }
        }
        sums
    };
    let mut db = column_sums(&dx);
    db.extend(column_sums(&dhh));
    let mut dw_hh = vec![T::zero(); three_h * hidden];
    gemm_acc::<T, M, true>(&dhh, &tr.h[..pairs * hidden], &mut dw_hh, pairs, hidden);
    let mut dw_ih_t = vec![T::zero(); inputs * three_h];
    gemm_acc::<T, M, true>(x, &dx, &mut dw_ih_t, pairs, three_h);
    let dw_ih = transpose(&dw_ih_t, inputs, three_h);
    let mut dw = Vec::with_capacity(three_h * (inputs + hidden));
    for (a, b) in dw_ih.chunks_exact(inputs).zip(dw_hh.chunks_exact(hidden)) {
        dw.extend_from_slice(a);
        dw.extend_from_slice(b);
    }
    // dx[p, c] = Σ_i dproj[p, i] W_ih[i, c]: dot products with W_ihᵀ's rows.
    let dinputs = dx
        .chunks_exact(three_h)
        .flat_map(|g| {
            w.w_ih_t
                .chunks_exact(three_h)
                .map(move |col| dot::<T, M>(g, col))
        })
        .collect();
    (dinputs, dw, db)
}

/// `Σ a[i] b[i]` in 8 interleaved partial sums, so that it vectorizes (a single running sum
/// would fix the order and keep it scalar).
#[inline(always)]
fn dot<T: Real, M: MulAdd>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(T::zero(), |s, (&x, &y)| M::mul_add(x, y, s));
    for (x, y) in ac.zip(bc) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s = M::mul_add(x, y, *s);
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Whether the shard loops may be compiled for AVX2 + FMA on this CPU.
fn avx2() -> bool {
    tns_engine::Isa::detect() == tns_engine::Isa::Avx2Fma
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_shard_avx2<T: Real>(
    x: &[T],
    w: &Weights<T>,
    d: Dims,
    kept: Option<&mut Trace<T>>,
) -> Vec<T> {
    forward_shard::<T, Fused>(x, w, d, kept)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_shard_avx2<T: Real>(
    x: &[T],
    w: &Weights<T>,
    grad: &[T],
    d: Dims,
    trace: Option<Trace<T>>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    backward_shard::<T, Fused>(x, w, grad, d, trace)
}

/// [`forward_shard`], with the loops compiled for AVX2 + FMA where the CPU has them (the
/// same operations in the same order, the multiply-adds fused).
fn forward_shard_best<T: Real>(
    x: &[T],
    w: &Weights<T>,
    d: Dims,
    kept: Option<&mut Trace<T>>,
) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: `avx2` checked that the CPU has AVX2 and FMA.
        return unsafe { forward_shard_avx2(x, w, d, kept) };
    }
    forward_shard::<T, Plain>(x, w, d, kept)
}

/// [`backward_shard`], compiled for AVX2 + FMA where the CPU has them.
fn backward_shard_best<T: Real>(
    x: &[T],
    w: &Weights<T>,
    grad: &[T],
    d: Dims,
    trace: Option<Trace<T>>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: as in `forward_shard_best`.
        return unsafe { backward_shard_avx2(x, w, grad, d, trace) };
    }
    backward_shard::<T, Plain>(x, w, grad, d, trace)
}

/// Batches of at most this many rows keep their forward trace for the backward pass (a
/// training batch); larger ones (a validation pass over thousands of windows, which has no
/// backward) do not, so that the kept trace stays small.
const KEEP_TRACE_ROWS: usize = 1024;

/// The forward pass's inputs and per-shard traces, kept on the thread that ran it until its
/// backward pass (Candle calls both from the training loop's thread).
struct KeptTraces<T> {
    x: Vec<T>,
    weights: Vec<T>,
    biases: Vec<T>,
    traces: Vec<Trace<T>>,
}

thread_local! {
    static KEPT: std::cell::RefCell<Option<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(None) };
}

fn transpose<T: Float>(w: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::zero(); w.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = w[i * cols + j];
        }
    }
    t
}

/// The forward pass on whole buffers: the last state `[B, H]`. A training-sized batch keeps
/// its traces for [`backward`].
fn forward<T: Real>(x: &[T], weights: &[T], biases: &[T], d: Dims) -> Vec<T> {
    let w = Weights::unpack(weights, biases, d);
    let shard_len = SHARD_ROWS * (d.steps * d.inputs).max(1);
    if d.batch > KEEP_TRACE_ROWS {
        return x
            .par_chunks(shard_len)
            .map(|shard| forward_shard_best(shard, &w, d, None))
            .collect::<Vec<_>>()
            .concat();
    }
    let (states, traces): (Vec<Vec<T>>, Vec<Trace<T>>) = x
        .par_chunks(shard_len)
        .map(|shard| {
            let rows = shard.len() / (d.steps * d.inputs).max(1);
            let mut trace = Trace::with_capacity(d.steps, rows * d.hidden);
            (forward_shard_best(shard, &w, d, Some(&mut trace)), trace)
        })
        .unzip();
    let kept = KeptTraces {
        x: x.to_vec(),
        weights: weights.to_vec(),
        biases: biases.to_vec(),
        traces,
    };
    KEPT.with(|k| *k.borrow_mut() = Some(Box::new(kept)));
    states.concat()
}

/// The traces [`forward`] kept, if they were computed from exactly these inputs (compared
/// value by value, so a trace is never used for other inputs).
fn kept_traces<T: Real>(x: &[T], weights: &[T], biases: &[T]) -> Option<Vec<Trace<T>>> {
    let kept = KEPT.with(|k| k.borrow_mut().take())?;
    let kept = kept.downcast::<KeptTraces<T>>().ok()?;
    (kept.x == x && kept.weights == weights && kept.biases == biases).then_some(kept.traces)
}

/// The backward pass on whole buffers: `(dx, d weights, d biases)`, the weight gradients
/// summed over shards in shard order.
fn backward<T: Real>(
    x: &[T],
    weights: &[T],
    biases: &[T],
    grad: &[T],
    d: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let w = Weights::unpack(weights, biases, d);
    let shard_len = SHARD_ROWS * (d.steps * d.inputs).max(1);
    let shards = x.len().div_ceil(shard_len);
    let traces: Vec<Option<Trace<T>>> = match kept_traces(x, weights, biases) {
        Some(t) if t.len() == shards => t.into_iter().map(Some).collect(),
        _ => (0..shards).map(|_| None).collect(),
    };
    let shards: Vec<_> = x
        .par_chunks(shard_len)
        .zip(grad.par_chunks(SHARD_ROWS * d.hidden))
        .zip(traces)
        .map(|((xs, gs), trace)| backward_shard_best(xs, &w, gs, d, trace))
        .collect();
    let mut dx = Vec::with_capacity(x.len());
    let mut dw = vec![T::zero(); weights.len()];
    let mut db = vec![T::zero(); biases.len()];
    for (sx, sw, sb) in shards {
        dx.extend(sx);
        for (a, b) in dw.iter_mut().zip(sw) {
            *a = *a + b;
        }
        for (a, b) in db.iter_mut().zip(sb) {
            *a = *a + b;
        }
    }
    (dx, dw, db)
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::Msg(
            "GRU: inputs must be contiguous".into(),
        )),
    }
}

impl CustomOp3 for GruSequence {
    fn name(&self) -> &'static str {
        "gru-sequence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape(), l3.shape())?;
        let shape = Shape::from((d.batch, d.hidden));
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let (x, w, b) = (contiguous(x, l1)?, contiguous(w, l2)?, contiguous(b, l3)?);
                Ok((CpuStorage::F32(forward(x, w, b, d)), shape))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                let (x, w, b) = (contiguous(x, l1)?, contiguous(w, l2)?, contiguous(b, l3)?);
                Ok((CpuStorage::F64(forward(x, w, b, d)), shape))
            }
            _ => Err(candle_core::Error::Msg(
                "GRU: inputs must all be f32 or all f64".into(),
            )),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        weights: &Tensor,
        biases: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(x.shape(), weights.shape(), biases.shape())?;
        let device = x.device();
        let flat = |t: &Tensor| t.flatten_all();
        macro_rules! run {
            ($t:ty) => {{
                let (xs, w, b, g) = (
                    flat(x)?.to_vec1::<$t>()?,
                    flat(weights)?.to_vec1::<$t>()?,
                    flat(biases)?.to_vec1::<$t>()?,
                    flat(&grad_res.to_dtype(x.dtype())?)?.to_vec1::<$t>()?,
                );
                let (dx, dw, db) = backward(&xs, &w, &b, &g, d);
                (
                    Tensor::from_vec(dx, x.shape(), device)?,
                    Tensor::from_vec(dw, weights.shape(), device)?,
                    Tensor::from_vec(db, biases.shape(), device)?,
                )
            }};
        }
        let (dx, dw, db) = match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "GRU: no backward for {other:?}"
                )));
            }
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::rnn::{GRU, GRUConfig, RNN};
    use candle_nn::{VarBuilder, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A GRU's weights and an input, in f64.
    struct Case {
        batch: usize,
        steps: usize,
        inputs: usize,
        hidden: usize,
        x: Vec<f64>,
        w_ih: Vec<f64>,
        w_hh: Vec<f64>,
        b_ih: Vec<f64>,
        b_hh: Vec<f64>,
        /// Weights of the scalar loss `Σ c ⊙ h_T`.
        c: Vec<f64>,
    }

    impl Case {
        fn new(batch: usize, steps: usize, inputs: usize, hidden: usize, seed: u64) -> Self {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut draw = |n: usize, s: f64| -> Vec<f64> {
                (0..n).map(|_| rng.random_range(-s..s)).collect()
            };
            let h3 = 3 * hidden;
            Self {
                batch,
                steps,
                inputs,
                hidden,
                x: draw(batch * steps * inputs, 1.5),
                w_ih: draw(h3 * inputs, 0.6),
                w_hh: draw(h3 * hidden, 0.6),
                b_ih: draw(h3, 0.3),
                b_hh: draw(h3, 0.3),
                c: draw(batch * hidden, 1.0),
            }
        }

        fn vars(&self, dtype: DType) -> [Var; 5] {
            let dev = Device::Cpu;
            let h3 = 3 * self.hidden;
            let var = |v: &[f64], shape: &[usize]| {
                Var::from_tensor(
                    &Tensor::from_slice(v, shape, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap()
            };
            [
                var(&self.x, &[self.batch, self.steps, self.inputs]),
                var(&self.w_ih, &[h3, self.inputs]),
                var(&self.w_hh, &[h3, self.hidden]),
                var(&self.b_ih, &[h3]),
                var(&self.b_hh, &[h3]),
            ]
        }

        fn loss(&self, h: &Tensor) -> Tensor {
            let c = Tensor::from_slice(&self.c, (self.batch, self.hidden), &Device::Cpu)
                .unwrap()
                .to_dtype(h.dtype())
                .unwrap();
            (h * c).unwrap().sum_all().unwrap()
        }

        /// The fused op's last state.
        fn fused(&self, v: &[Var; 5]) -> Tensor {
            let t = |k: usize| v[k].as_tensor();
            gru_last_state(t(0), t(1), t(2), t(3), t(4)).unwrap()
        }

        /// Candle's GRU, step by step (the op-by-op graph the fused op replaces).
        fn reference(&self, v: &[Var; 5]) -> Tensor {
            let map = VarMap::new();
            {
                let mut data = map.data().lock().unwrap();
                for (name, var) in [
                    ("weight_ih_l0", &v[1]),
                    ("weight_hh_l0", &v[2]),
                    ("bias_ih_l0", &v[3]),
                    ("bias_hh_l0", &v[4]),
                ] {
                    data.insert(name.into(), var.clone());
                }
            }
            let vb = VarBuilder::from_varmap(&map, v[0].dtype(), &Device::Cpu);
            let gru: GRU =
                candle_nn::rnn::gru(self.inputs, self.hidden, GRUConfig::default(), vb).unwrap();
            let mut state = gru.zero_state(self.batch).unwrap();
            for t in 0..self.steps {
                let xt = v[0]
                    .as_tensor()
                    .narrow(1, t, 1)
                    .unwrap()
                    .squeeze(1)
                    .unwrap();
                state = gru.step(&xt, &state).unwrap();
            }
            state.h().clone()
        }
    }

    fn grads(loss: &Tensor, v: &[Var; 5]) -> Vec<Vec<f64>> {
        let g = loss.backward().unwrap();
        v.iter()
            .map(|var| {
                g.get(var.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    }

    fn worst(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f64::max)
    }

    #[test]
    fn matches_candles_gru_graph_forward_and_backward() {
        // 37 rows: two full shards and a partial one; the backward pass reads the forward's
        // kept traces. 1,100 rows: more than a kept batch, so the backward recomputes them.
        for (case, dtype, tolerance) in [
            (Case::new(37, 9, 3, 5, 1), DType::F64, 1e-12),
            (Case::new(37, 9, 3, 5, 1), DType::F32, 1e-5),
            (Case::new(1_100, 4, 2, 3, 4), DType::F64, 1e-12),
        ] {
            let v = case.vars(dtype);
            let (fused, reference) = (case.fused(&v), case.reference(&v));
            let flat = |t: &Tensor| -> Vec<f64> {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let e = worst(&flat(&fused), &flat(&reference));
            assert!(e < tolerance, "{dtype:?} forward: {e}");
            let (gf, gr) = (
                grads(&case.loss(&fused), &v),
                grads(&case.loss(&reference), &v),
            );
            for (k, (a, b)) in gf.iter().zip(&gr).enumerate() {
                let e = worst(a, b);
                assert!(e < tolerance, "{dtype:?} gradient {k}: {e}");
            }
        }
    }

    #[test]
    fn gradients_match_central_finite_differences() {
        let case = Case::new(3, 6, 2, 4, 2);
        let v = case.vars(DType::F64);
        let analytic = grads(&case.loss(&case.fused(&v)), &v);
        let eps = 1e-6;
        for (k, var) in v.iter().enumerate() {
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in 0..base.len() {
                let loss_at = |delta: f64| {
                    let mut moved = base.clone();
                    moved[i] += delta;
                    var.set(&Tensor::from_vec(moved, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    let l = case.loss(&case.fused(&v)).to_scalar::<f64>().unwrap();
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    l
                };
                let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
                let a = analytic[k][i];
                assert!(
                    (a - numeric).abs() < 1e-7 * a.abs().max(1.0),
                    "tensor {k} entry {i}: analytic {a}, numeric {numeric}"
                );
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let case = Case::new(70, 12, 3, 8, 3);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let v = case.vars(DType::F32);
                let h = case.fused(&v);
                let mut out = vec![h.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
                let g = case.loss(&h).backward().unwrap();
                for var in &v {
                    out.push(
                        g.get(var.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap(),
                    );
                }
                out
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            let other = run(threads);
            for (a, b) in one.iter().zip(&other) {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{threads} threads differ from 1");
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let w_ih = Tensor::zeros((12, 4), DType::F32, &dev).unwrap();
        let w_hh = Tensor::zeros((12, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(12, DType::F32, &dev).unwrap();
        // W_ih for 5 inputs against a 4-channel sequence.
        let wide = Tensor::zeros((12, 5), DType::F32, &dev).unwrap();
        assert!(gru_last_state(&x, &w_ih, &w_hh, &b, &b).is_ok());
        let err = gru_last_state(&x, &wide, &w_hh, &b, &b)
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not fit"), "{err}");
    }
}

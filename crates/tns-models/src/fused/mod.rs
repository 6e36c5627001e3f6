//! Recurrent layers over a whole sequence as one Candle op each, with a hand-written
//! backward pass (backpropagation through time), instead of a graph of a dozen small ops per
//! time step: the GRU and the LSTM ([`sequence`] with the cell [`Gru`] or [`Lstm`]).
//!
//! An op takes the sequence `x [B, T, I]`, the weights packed side by side `[W_ih | W_hh]`
//! (`[G·H, I + H]`, `G` gate blocks in PyTorch's order) and the biases end to end
//! `[b_ih, b_hh]` (`[2·G·H]`), and returns every step's hidden state `[B, T, H]` or only the
//! last `[B, H]` ([`States`]). The input
//! projection of every step is one product inside the op, so no `[B, T, G·H]` tensor enters
//! the autograd graph, which holds one node for the whole sequence. A [`Cell`] says what one
//! step computes and how to go back through it; everything else — the products, the sharding,
//! the weight gradients — is shared.
//!
//! A training batch's forward pass keeps each step's state and gates for its backward pass; a
//! larger batch (a validation pass, with no backward) keeps nothing, and a backward pass
//! without them recomputes the forward. Rows of the batch are processed in fixed shards of
//! [`SHARD_ROWS`] in parallel; the shards' weight gradients are summed in shard order, so a
//! result does not depend on the number of threads. Multiply-adds are fused only in the
//! AVX2 + FMA build: elsewhere `mul_add` is a slow library call.
//!
//! Mamba's selective scan ([`selective_scan`]) and its short causal depthwise convolution
//! ([`causal_depthwise_conv`]) are fused ops of the same kind, and so are the elementwise
//! activations of Mamba, S4D and SwiGLU ([`softplus`], [`silu`], [`silu_gate`]), the
//! transformer's attention ([`attention`]), rotary embedding ([`rope`]) and RMSNorm
//! ([`rms_norm`]).

mod attention;
mod conv;
mod gates;
mod gru;
mod lstm;
mod rows;
mod scan;

use std::marker::PhantomData;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

pub use attention::attention;
pub use conv::causal_depthwise_conv;
pub use gates::{silu, silu_gate, softplus};
pub use gru::Gru;
pub use lstm::Lstm;
pub use rows::{rms_norm, rope};
pub use scan::selective_scan;

/// Rows of the batch per parallel shard. Fixed (not derived from the thread count) so that the
/// order of every floating-point sum is the same on any machine.
pub const SHARD_ROWS: usize = 16;

/// Batches of at most this many rows keep their forward trace for the backward pass (a
/// training batch); larger ones do not, so that the kept trace stays small.
const KEEP_TRACE_ROWS: usize = 1024;

/// What a recurrent op returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum States {
    /// Every step's hidden state, `[B, T, H]` (a layer below another).
    All,
    /// The last step's, `[B, H]` (what a head reads; nothing of the other steps is stored).
    Last,
}

/// The hidden states of a zero-initialized recurrent layer of cell `C` ([`Gru`], [`Lstm`])
/// over `x [B, T, I]`, in PyTorch's layout: `w_ih [G·H, I]`, `w_hh [G·H, H]`, `b_ih`,
/// `b_hh [G·H]`.
pub fn sequence<C: Cell>(
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: &Tensor,
    b_hh: &Tensor,
    states: States,
) -> candle_core::Result<Tensor> {
    let weights = Tensor::cat(&[w_ih, w_hh], 1)?;
    let biases = Tensor::cat(&[b_ih, b_hh], 0)?;
    x.contiguous()?.apply_op3(
        &weights.contiguous()?,
        &biases.contiguous()?,
        Fused3(Sequence::<C> {
            states,
            cell: PhantomData,
        }),
    )
}

/// One recurrent cell: its gate blocks, one step forward and one step back, over every row of
/// a shard at once (buffers `[rows, ·]`).
pub trait Cell: Send + Sync + 'static {
    /// The op's name.
    const NAME: &'static str;
    /// Gate blocks `G` (3 for the GRU, 4 for the LSTM).
    const GATES: usize;
    /// Values per unit the step keeps for the way back.
    const KEPT: usize;

    /// One step: `xt` and `hh` are the input and recurrent parts `[rows, G·H]` (biases
    /// included); updates the state `h` (and the LSTM's `c`) `[rows, H]` and appends
    /// `[rows, KEPT·H]` to `kept`.
    fn step<T: Real>(
        xt: &[T],
        hh: &[T],
        h: &mut [T],
        c: &mut [T],
        kept: &mut Vec<T>,
        hidden: usize,
    );

    /// Back through one step: `dh` is the loss's gradient for this step's state `[rows, H]`
    /// and `dc` the cell state's, carried from the next step (updated to the previous
    /// step's); `kept` is what [`Cell::step`] kept, `h_prev` the state before the step. Writes
    /// the gradients of the input and recurrent parts `dx`, `dhh` `[rows, G·H]`, and the part
    /// of the previous state's gradient that does not go through `W_hh` to `dh_prev`.
    #[allow(clippy::too_many_arguments)]
    fn back<T: Real>(
        dh: &[T],
        dc: &mut [T],
        kept: &[T],
        h_prev: &[T],
        dx: &mut [T],
        dhh: &mut [T],
        dh_prev: &mut [T],
        hidden: usize,
    );
}

/// The element types the ops run in: f32 (training) with the engine's fast vectorized
/// activations, f64 (gradient checks) with the standard library's.
pub trait Real: Float + Send + Sync + 'static {
    /// `xs[i] ← σ(xs[i])`.
    fn sigmoid_in_place(xs: &mut [Self]);
    /// `xs[i] ← tanh(xs[i])`.
    fn tanh_in_place(xs: &mut [Self]);
    /// `xs[i] ← e^{xs[i]}`.
    fn exp_in_place(xs: &mut [Self]);
}

impl Real for f32 {
    fn sigmoid_in_place(xs: &mut [Self]) {
        tns_engine::sigmoid_in_place(xs);
    }
    fn tanh_in_place(xs: &mut [Self]) {
        tns_engine::tanh_in_place(xs);
    }
    fn exp_in_place(xs: &mut [Self]) {
        tns_engine::exp_in_place(xs);
    }
}

impl Real for f64 {
    fn sigmoid_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
    }
    fn tanh_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = x.tanh());
    }
    fn exp_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = x.exp());
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

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    inputs: usize,
    hidden: usize,
    gates: usize,
    states: States,
}

impl Dims {
    fn of<C: Cell>(
        x: &Shape,
        weights: &Shape,
        biases: &Shape,
        states: States,
    ) -> candle_core::Result<Self> {
        let (batch, steps, inputs) = x.dims3()?;
        let (rows, columns) = weights.dims2()?;
        let hidden = rows / C::GATES;
        if rows != C::GATES * hidden
            || columns != inputs + hidden
            || biases.elem_count() != 2 * rows
        {
            return Err(candle_core::Error::Msg(format!(
                "{}: input {x:?}, packed weights {weights:?} and biases {biases:?} do not fit (expected [B, T, I], [{g}H, I + H], [{}H])",
                C::NAME,
                2 * C::GATES,
                g = C::GATES,
            )));
        }
        Ok(Self {
            batch,
            steps,
            inputs,
            hidden,
            gates: C::GATES,
            states,
        })
    }

    fn width(self) -> usize {
        self.gates * self.hidden
    }

    /// Output steps per row: all of them, or the last.
    fn out_steps(self) -> usize {
        match self.states {
            States::All => self.steps,
            States::Last => 1,
        }
    }
}

/// The weights of one call, unpacked, with the transposes the products read.
struct Weights<T> {
    /// `W_ihᵀ [I, G·H]`.
    w_ih_t: Vec<T>,
    w_hh: Vec<T>,
    /// `W_hhᵀ [H, G·H]`.
    w_hh_t: Vec<T>,
    b_ih: Vec<T>,
    b_hh: Vec<T>,
}

impl<T: Float> Weights<T> {
    fn unpack(packed: &[T], biases: &[T], d: Dims) -> Self {
        let (i, h, g) = (d.inputs, d.hidden, d.width());
        let mut w_ih = Vec::with_capacity(g * i);
        let mut w_hh = Vec::with_capacity(g * h);
        for row in packed.chunks_exact(i + h) {
            w_ih.extend_from_slice(&row[..i]);
            w_hh.extend_from_slice(&row[i..]);
        }
        Self {
            w_ih_t: transpose(&w_ih, g, i),
            w_hh_t: transpose(&w_hh, g, h),
            w_hh,
            b_ih: biases[..g].to_vec(),
            b_hh: biases[g..].to_vec(),
        }
    }
}

/// What the backward pass needs of one shard: the state before every step and after the
/// last (`[T + 1, rows, H]`), and what each step kept (`[T, rows, KEPT·H]`).
struct Trace<T> {
    h: Vec<T>,
    kept: Vec<T>,
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

fn transpose<T: Float>(w: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::zero(); w.len()];
    transpose_into(w, rows, cols, &mut t);
    t
}

/// [`transpose`] into a buffer the caller reuses (`t.len() == w.len()`).
fn transpose_into<T: Float>(w: &[T], rows: usize, cols: usize, t: &mut [T]) {
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = w[i * cols + j];
        }
    }
}

/// Runs one shard of rows forward. `x` is the shard's inputs `[rows, T, I]`; returns every
/// step's state `[rows, T, H]` (or the last, `[rows, H]`), and fills `trace` when given.
#[inline(always)]
fn forward_shard<C: Cell, T: Real, M: MulAdd>(
    x: &[T],
    w: &Weights<T>,
    d: Dims,
    mut trace: Option<&mut Trace<T>>,
) -> Vec<T> {
    let (steps, hidden, g) = (d.steps, d.hidden, d.width());
    let rows = x.len() / (steps * d.inputs).max(1);
    // Every step's input projection `x W_ihᵀ + b_ih`, [rows, T, G·H], in one product.
    let mut x_proj = vec![T::zero(); rows * steps * g];
    for o in x_proj.chunks_exact_mut(g) {
        o.copy_from_slice(&w.b_ih);
    }
    gemm_acc::<T, M, false>(x, &w.w_ih_t, &mut x_proj, d.inputs, g);
    let all = d.states == States::All;
    let mut out = if all {
        vec![T::zero(); rows * steps * hidden]
    } else {
        Vec::new()
    };
    let (mut h, mut c) = (
        vec![T::zero(); rows * hidden],
        vec![T::zero(); rows * hidden],
    );
    let (mut xt, mut hh) = (vec![T::zero(); rows * g], vec![T::zero(); rows * g]);
    let mut scratch = Vec::new();
    for t in 0..steps {
        for (b, row) in xt.chunks_exact_mut(g).enumerate() {
            row.copy_from_slice(&x_proj[(b * steps + t) * g..][..g]);
        }
        for o in hh.chunks_exact_mut(g) {
            o.copy_from_slice(&w.b_hh);
        }
        gemm_acc::<T, M, false>(&h, &w.w_hh_t, &mut hh, hidden, g);
        if let Some(tr) = trace.as_mut() {
            tr.h.extend_from_slice(&h);
        }
        let kept = match trace.as_mut() {
            Some(tr) => &mut tr.kept,
            None => {
                scratch.clear();
                &mut scratch
            }
        };
        C::step(&xt, &hh, &mut h, &mut c, kept, hidden);
        if all {
            for (b, hb) in h.chunks_exact(hidden).enumerate() {
                out[(b * steps + t) * hidden..][..hidden].copy_from_slice(hb);
            }
        }
    }
    if let Some(tr) = trace {
        tr.h.extend_from_slice(&h);
    }
    if all { out } else { h }
}

/// Gradients of one shard from the gradient of its states `grad [rows, T, H]` (or of the
/// last, `[rows, H]`):
/// `(dx [rows, T, I], d[W_ih | W_hh] [G·H, I + H], d[b_ih, b_hh] [2·G·H])`.
#[inline(always)]
fn backward_shard<C: Cell, T: Real, M: MulAdd>(
    x: &[T],
    w: &Weights<T>,
    grad: &[T],
    d: Dims,
    trace: Option<Trace<T>>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (steps, hidden, inputs, g) = (d.steps, d.hidden, d.inputs, d.width());
    let rows = grad.len() / (d.out_steps() * hidden).max(1);
    // The forward pass's trace when it kept one, else the forward again.
    let tr = trace.unwrap_or_else(|| {
        let mut tr = Trace {
            h: Vec::with_capacity((steps + 1) * rows * hidden),
            kept: Vec::with_capacity(steps * rows * C::KEPT * hidden),
        };
        forward_shard::<C, T, M>(x, w, d, Some(&mut tr));
        tr
    });
    // Gradients of the input projections [rows, T, G·H] and of the recurrent parts
    // [T, rows, G·H] (the layout of the trace's states, so that the weight gradient is one
    // product at the end).
    let mut dproj = vec![T::zero(); rows * steps * g];
    let mut dhh = vec![T::zero(); steps * rows * g];
    let mut dx_t = vec![T::zero(); rows * g];
    let (mut dh, mut dh_prev) = (
        vec![T::zero(); rows * hidden],
        vec![T::zero(); rows * hidden],
    );
    let mut dc = vec![T::zero(); rows * hidden];
    let kept_len = rows * C::KEPT * hidden;
    for t in (0..steps).rev() {
        let from = match d.states {
            States::All => Some(t),
            States::Last => (t + 1 == steps).then_some(0),
        };
        if let Some(step) = from {
            let out_steps = d.out_steps();
            for (b, dhb) in dh.chunks_exact_mut(hidden).enumerate() {
                let g = &grad[(b * out_steps + step) * hidden..][..hidden];
                for (a, &v) in dhb.iter_mut().zip(g) {
                    *a = *a + v;
                }
            }
        }
        let dhh_t = &mut dhh[t * rows * g..][..rows * g];
        C::back(
            &dh,
            &mut dc,
            &tr.kept[t * kept_len..][..kept_len],
            &tr.h[t * rows * hidden..][..rows * hidden],
            &mut dx_t,
            dhh_t,
            &mut dh_prev,
            hidden,
        );
        for (b, row) in dx_t.chunks_exact(g).enumerate() {
            dproj[(b * steps + t) * g..][..g].copy_from_slice(row);
        }
        gemm_acc::<T, M, false>(dhh_t, &w.w_hh, &mut dh_prev, g, hidden);
        std::mem::swap(&mut dh, &mut dh_prev);
    }
    // dW_hh = Σ_{t,b} dhh[t,b,:]ᵀ h_prev[t,b,:], db_hh = Σ_{t,b} dhh[t,b,:]; the same
    // with the projections' gradients and the inputs for W_ih and b_ih.
    let pairs = steps * rows;
    let column_sums = |v: &[T]| {
        let mut sums = vec![T::zero(); g];
        for row in v.chunks_exact(g) {
            for (a, &x) in sums.iter_mut().zip(row) {
                *a = *a + x;
            }
        }
        sums
    };
    let mut db = column_sums(&dproj);
    db.extend(column_sums(&dhh));
    let mut dw_hh = vec![T::zero(); g * hidden];
    gemm_acc::<T, M, true>(&dhh, &tr.h[..pairs * hidden], &mut dw_hh, pairs, hidden);
    let mut dw_ih_t = vec![T::zero(); inputs * g];
    gemm_acc::<T, M, true>(x, &dproj, &mut dw_ih_t, pairs, g);
    let dw_ih = transpose(&dw_ih_t, inputs, g);
    let mut dw = Vec::with_capacity(g * (inputs + hidden));
    for (a, b) in dw_ih.chunks_exact(inputs).zip(dw_hh.chunks_exact(hidden)) {
        dw.extend_from_slice(a);
        dw.extend_from_slice(b);
    }
    // dx[p, c] = Σ_i dproj[p, i] W_ih[i, c]: dot products with W_ihᵀ's rows. Plain loops, so
    // that they are compiled into this function: through an iterator's `collect` they sat in
    // a generic function compiled without FMA, where each multiply-add was a library call
    // (45% of a GRU's training time at lookback 48).
    let mut dinputs = vec![T::zero(); pairs * inputs];
    for (row, dx) in dproj.chunks_exact(g).zip(dinputs.chunks_exact_mut(inputs)) {
        for (o, col) in dx.iter_mut().zip(w.w_ih_t.chunks_exact(g)) {
            *o = dot::<T, M>(row, col);
        }
    }
    (dinputs, dw, db)
}

/// Whether the shard loops may be compiled for AVX2 + FMA on this CPU.
fn avx2() -> bool {
    tns_engine::Isa::detect() == tns_engine::Isa::Avx2Fma
}

/// A loop nest written once for either kind of multiply-add, so that one dispatcher,
/// [`run_best`], can compile it for AVX2 + FMA. Implementations mark `run`
/// `#[inline(always)]`: it must be inlined into the `#[target_feature]` function to be
/// compiled with those instructions.
trait Loops {
    /// What the loops return.
    type Output;
    /// Runs the loops, with multiply-adds computed as `M` says.
    fn run<M: MulAdd>(self) -> Self::Output;
}

/// Runs `loops` compiled for AVX2 + FMA where the CPU has them (the same operations in the
/// same order, the multiply-adds fused), else portably.
fn run_best<L: Loops>(loops: L) -> L::Output {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: `avx2` checked that the CPU has AVX2 and FMA.
        return unsafe { run_avx2(loops) };
    }
    loops.run::<Plain>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<L: Loops>(loops: L) -> L::Output {
    loops.run::<Fused>()
}

/// [`forward_shard`] as [`Loops`].
struct ForwardShard<'a, C, T> {
    x: &'a [T],
    w: &'a Weights<T>,
    d: Dims,
    trace: Option<&'a mut Trace<T>>,
    cell: PhantomData<C>,
}

impl<C: Cell, T: Real> Loops for ForwardShard<'_, C, T> {
    type Output = Vec<T>;
    #[inline(always)]
    fn run<M: MulAdd>(self) -> Vec<T> {
        forward_shard::<C, T, M>(self.x, self.w, self.d, self.trace)
    }
}

/// [`backward_shard`] as [`Loops`].
struct BackwardShard<'a, C, T> {
    x: &'a [T],
    w: &'a Weights<T>,
    grad: &'a [T],
    d: Dims,
    trace: Option<Trace<T>>,
    cell: PhantomData<C>,
}

impl<C: Cell, T: Real> Loops for BackwardShard<'_, C, T> {
    type Output = (Vec<T>, Vec<T>, Vec<T>);
    #[inline(always)]
    fn run<M: MulAdd>(self) -> Self::Output {
        backward_shard::<C, T, M>(self.x, self.w, self.grad, self.d, self.trace)
    }
}

/// [`forward_shard`], with the loops compiled for AVX2 + FMA where the CPU has them (the
/// same operations in the same order, the multiply-adds fused).
fn forward_shard_best<C: Cell, T: Real>(
    x: &[T],
    w: &Weights<T>,
    d: Dims,
    trace: Option<&mut Trace<T>>,
) -> Vec<T> {
    run_best(ForwardShard::<C, T> {
        x,
        w,
        d,
        trace,
        cell: PhantomData,
    })
}

/// [`backward_shard`], compiled for AVX2 + FMA where the CPU has them.
fn backward_shard_best<C: Cell, T: Real>(
    x: &[T],
    w: &Weights<T>,
    grad: &[T],
    d: Dims,
    trace: Option<Trace<T>>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    run_best(BackwardShard::<C, T> {
        x,
        w,
        grad,
        d,
        trace,
        cell: PhantomData,
    })
}

/// The forward pass's inputs and per-shard traces, kept on the thread that ran it until its
/// backward pass (Candle calls both from the training loop's thread).
struct KeptTraces<T> {
    cell: &'static str,
    x: Vec<T>,
    weights: Vec<T>,
    biases: Vec<T>,
    traces: Vec<Trace<T>>,
}

thread_local! {
    static KEPT: std::cell::RefCell<Option<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(None) };
}

/// The forward pass on whole buffers: every step's state `[B, T, H]`. A training-sized batch
/// keeps its traces for [`backward`].
fn forward<C: Cell, T: Real>(x: &[T], weights: &[T], biases: &[T], d: Dims) -> Vec<T> {
    let w = Weights::unpack(weights, biases, d);
    let shard_len = SHARD_ROWS * (d.steps * d.inputs).max(1);
    if d.batch > KEEP_TRACE_ROWS {
        return x
            .par_chunks(shard_len)
            .map(|shard| forward_shard_best::<C, T>(shard, &w, d, None))
            .collect::<Vec<_>>()
            .concat();
    }
    let (states, traces): (Vec<Vec<T>>, Vec<Trace<T>>) = x
        .par_chunks(shard_len)
        .map(|shard| {
            let rows = shard.len() / (d.steps * d.inputs).max(1);
            let mut trace = Trace {
                h: Vec::with_capacity((d.steps + 1) * rows * d.hidden),
                kept: Vec::with_capacity(d.steps * rows * C::KEPT * d.hidden),
            };
            (
                forward_shard_best::<C, T>(shard, &w, d, Some(&mut trace)),
                trace,
            )
        })
        .unzip();
    let kept = KeptTraces {
        cell: C::NAME,
        x: x.to_vec(),
        weights: weights.to_vec(),
        biases: biases.to_vec(),
        traces,
    };
    KEPT.with(|k| *k.borrow_mut() = Some(Box::new(kept)));
    states.concat()
}

/// The traces [`forward`] kept, if they were computed by this cell from exactly these inputs
/// (compared value by value, so a trace is never used for other inputs).
fn kept_traces<C: Cell, T: Real>(x: &[T], weights: &[T], biases: &[T]) -> Option<Vec<Trace<T>>> {
    let kept = KEPT.with(|k| k.borrow_mut().take())?;
    let kept = kept.downcast::<KeptTraces<T>>().ok()?;
    (kept.cell == C::NAME && kept.x == x && kept.weights == weights && kept.biases == biases)
        .then_some(kept.traces)
}

/// The backward pass on whole buffers: `(dx, d weights, d biases)`, the weight gradients
/// summed over shards in shard order.
fn backward<C: Cell, T: Real>(
    x: &[T],
    weights: &[T],
    biases: &[T],
    grad: &[T],
    d: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let w = Weights::unpack(weights, biases, d);
    let shard_len = SHARD_ROWS * (d.steps * d.inputs).max(1);
    let shards = x.len().div_ceil(shard_len);
    let traces: Vec<Option<Trace<T>>> = match kept_traces::<C, T>(x, weights, biases) {
        Some(t) if t.len() == shards => t.into_iter().map(Some).collect(),
        _ => (0..shards).map(|_| None).collect(),
    };
    let shards: Vec<_> = x
        .par_chunks(shard_len)
        .zip(grad.par_chunks(SHARD_ROWS * d.out_steps() * d.hidden))
        .zip(traces)
        .map(|((xs, gs), trace)| backward_shard_best::<C, T>(xs, &w, gs, d, trace))
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

/// The kernels of a fused op on three tensors, generic over the float type; [`Fused3`] runs
/// them as a Candle op in f32 or f64 (the recurrent sequences, the selective scan, the causal
/// convolution).
trait Kernels3: Send + Sync + 'static {
    /// The sizes of one call.
    type Dims: Clone;
    /// The op's name, in Candle's graph and in errors.
    fn name(&self) -> &'static str;
    /// The sizes, or an error if the three shapes do not fit together.
    fn dims(&self, a: &Shape, b: &Shape, c: &Shape) -> candle_core::Result<Self::Dims>;
    /// The output's shape.
    fn output_shape(&self, d: Self::Dims) -> Shape;
    /// The output from the three inputs (contiguous).
    fn forward<T: Real>(&self, a: &[T], b: &[T], c: &[T], d: Self::Dims) -> Vec<T>;
    /// The three inputs' gradients from the output's `g`.
    fn backward<T: Real>(
        &self,
        a: &[T],
        b: &[T],
        c: &[T],
        g: &[T],
        d: Self::Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>);
}

/// The Candle op of the kernels `K`.
struct Fused3<K>(K);

impl<K: Kernels3> CustomOp3 for Fused3<K> {
    fn name(&self) -> &'static str {
        self.0.name()
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
        let d = self.0.dims(l1.shape(), l2.shape(), l3.shape())?;
        let shape = self.0.output_shape(d.clone());
        match (s1, s2, s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let (a, b, c) = (contiguous(a, l1)?, contiguous(b, l2)?, contiguous(c, l3)?);
                Ok((CpuStorage::F32(self.0.forward(a, b, c, d)), shape))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let (a, b, c) = (contiguous(a, l1)?, contiguous(b, l2)?, contiguous(c, l3)?);
                Ok((CpuStorage::F64(self.0.forward(a, b, c, d)), shape))
            }
            _ => Err(candle_core::Error::Msg(format!(
                "{}: inputs must all be f32 or all f64",
                self.0.name()
            ))),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.0.dims(a.shape(), b.shape(), c.shape())?;
        let device = a.device();
        let flat = |t: &Tensor| t.flatten_all();
        macro_rules! run {
            ($t:ty) => {{
                let (xa, xb, xc, g) = (
                    flat(a)?.to_vec1::<$t>()?,
                    flat(b)?.to_vec1::<$t>()?,
                    flat(c)?.to_vec1::<$t>()?,
                    flat(&grad_res.to_dtype(a.dtype())?)?.to_vec1::<$t>()?,
                );
                let (da, db, dc) = self.0.backward::<$t>(&xa, &xb, &xc, &g, d);
                (
                    Tensor::from_vec(da, a.shape(), device)?,
                    Tensor::from_vec(db, b.shape(), device)?,
                    Tensor::from_vec(dc, c.shape(), device)?,
                )
            }};
        }
        let (da, db, dc) = match a.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: no backward for {other:?}",
                    self.0.name()
                )));
            }
        };
        Ok((Some(da), Some(db), Some(dc)))
    }
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::Msg(
            "recurrent op: inputs must be contiguous".into(),
        )),
    }
}

/// The op of cell `C` on `(x [B, T, I], [W_ih | W_hh], [b_ih, b_hh])`.
struct Sequence<C> {
    states: States,
    cell: PhantomData<C>,
}

impl<C: Cell> Kernels3 for Sequence<C> {
    type Dims = Dims;

    fn name(&self) -> &'static str {
        C::NAME
    }

    fn dims(&self, x: &Shape, weights: &Shape, biases: &Shape) -> candle_core::Result<Dims> {
        Dims::of::<C>(x, weights, biases, self.states)
    }

    fn output_shape(&self, d: Dims) -> Shape {
        match self.states {
            States::All => Shape::from((d.batch, d.steps, d.hidden)),
            States::Last => Shape::from((d.batch, d.hidden)),
        }
    }

    fn forward<T: Real>(&self, x: &[T], weights: &[T], biases: &[T], d: Dims) -> Vec<T> {
        forward::<C, T>(x, weights, biases, d)
    }

    fn backward<T: Real>(
        &self,
        x: &[T],
        weights: &[T],
        biases: &[T],
        g: &[T],
        d: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        backward::<C, T>(x, weights, biases, g, d)
    }
}

#[cfg(test)]
mod tests;

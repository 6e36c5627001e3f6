//! The frozen networks: each layer of the model description lowered once to a packed,
//! allocation-free form, and one forward loop over the stack that serves both the
//! single-sample path and the lane-blocked batch path (8 or `LANES` = 16 sequences per
//! step).
//!
//! The two paths differ only in how a dense product is computed ([`Width::dense`]): a
//! matrix–vector product on column-packed weights, or a matrix product over 8 or 16
//! sequences laid side by side (`[value, lane]`) on row-major weights. Every other piece
//! of a layer — the GRU's sequence loop and cell, activations — is element-wise or a loop
//! over steps, written once for both.

use tns_model::nhits::NhitsDims;
use tns_model::{Activation, Layer, LayerNode, ModelConfig, NamedTensor};

use crate::EngineError;
use crate::aligned::Aligned;
use crate::int8::{QDense, QuantScratch};
use crate::kernels::{
    EXP_BLOCK, Isa, Kernels, LANES, Portable, VECTOR, exp, exp_shifted, max_of, sigmoid, tanh,
};

/// A dense layer `y = W x + b`, packed both ways: column by column for the single-sample
/// product and row-major for the lane-blocked batch product; or, for INT8 models, packed
/// for the integer product.
#[derive(Debug, Clone)]
struct Dense {
    inputs: usize,
    outputs: usize,
    columns: Aligned<f32>,
    rows: Aligned<f32>,
    bias: Aligned<f32>,
    int8: Option<Box<QDense>>,
}

impl Dense {
    /// `scales` is the weight's INT8 row scales when the model is quantized.
    fn new(
        weight: &NamedTensor,
        bias: &NamedTensor,
        scales: Option<&NamedTensor>,
    ) -> Result<Self, EngineError> {
        let (outputs, inputs) = (weight.shape[0], weight.shape[1]);
        if let Some(scales) = scales {
            let q = QDense::new(weight, scales, bias)?;
            return Ok(Self {
                inputs,
                outputs,
                columns: Aligned::default(),
                rows: Aligned::default(),
                bias: Aligned::from_slice(&bias.data),
                int8: Some(Box::new(q)),
            });
        }
        let columns = (0..inputs)
            .flat_map(|j| (0..outputs).map(move |r| (r, j)))
            .map(|(r, j)| weight.data[r * inputs + j])
            .collect();
        Ok(Self {
            inputs,
            outputs,
            columns,
            rows: Aligned::from_slice(&weight.data),
            bias: Aligned::from_slice(&bias.data),
            int8: None,
        })
    }

    /// The layer named `weight` and `bias` in the model file (INT8 when `int8`: the weight's
    /// scales are stored beside it).
    fn from_file(
        tensors: &[NamedTensor],
        weight: &str,
        bias: &str,
        int8: bool,
    ) -> Result<Self, EngineError> {
        let scales = scales_of(tensors, weight, int8)?;
        Self::new(tensor(tensors, weight)?, tensor(tensors, bias)?, scales)
    }

    /// The layer of weight `weight` in the model file with no bias (a zero one).
    fn unbiased(tensors: &[NamedTensor], weight: &str, int8: bool) -> Result<Self, EngineError> {
        let w = tensor(tensors, weight)?;
        let zero = NamedTensor {
            name: format!("{weight}.zero-bias"),
            shape: vec![w.shape[0]],
            data: vec![0.0; w.shape[0]],
        };
        Self::new(w, &zero, scales_of(tensors, weight, int8)?)
    }

    /// Bytes of weight storage as a model file holds them: one per INT8 code plus two per
    /// f16 scale, or four per f32 weight (biases excluded).
    fn weight_bytes(&self) -> usize {
        match &self.int8 {
            Some(q) => q.code_bytes() + 2 * self.outputs,
            None => 4 * self.inputs * self.outputs,
        }
    }
}

/// How many sequences a forward pass carries and how it multiplies by a dense layer.
trait Width {
    /// Sequences side by side (values are laid out `[value, lane]`).
    const N: usize;
    /// `y = W x + b` for every sequence.
    fn dense<K: Kernels>(d: &Dense, x: &[f32], y: &mut [f32], q: &mut QuantScratch);

    /// [`Width::dense`] for each row of `x` (`[row, inputs, lane]` → `[row, outputs, lane]`),
    /// with the bits it gives each row alone.
    #[inline(always)]
    fn dense_rows<K: Kernels>(d: &Dense, x: &[f32], y: &mut [f32], q: &mut QuantScratch) {
        let rows = x
            .chunks_exact(d.inputs * Self::N)
            .zip(y.chunks_exact_mut(d.outputs * Self::N));
        for (xr, yr) in rows {
            Self::dense::<K>(d, xr, yr, q);
        }
    }
}

/// One sequence.
struct Single;

impl Width for Single {
    const N: usize = 1;

    #[inline(always)]
    fn dense<K: Kernels>(d: &Dense, x: &[f32], y: &mut [f32], q: &mut QuantScratch) {
        match &d.int8 {
            Some(int8) => int8.forward::<K>(x, y, q),
            None => K::gemv(&d.columns, x, &d.bias, y),
        }
    }

    /// f32 rows through [`Kernels::gemv_rows`], which loads each weight once for several
    /// rows.
    #[inline(always)]
    fn dense_rows<K: Kernels>(d: &Dense, x: &[f32], y: &mut [f32], q: &mut QuantScratch) {
        match &d.int8 {
            Some(int8) => {
                let rows = x.chunks_exact(d.inputs).zip(y.chunks_exact_mut(d.outputs));
                for (xr, yr) in rows {
                    int8.forward::<K>(xr, yr, q);
                }
            }
            None => K::gemv_rows(&d.columns, x, &d.bias, y),
        }
    }
}

/// `L` sequences ([`VECTOR`] or [`LANES`]). INT8 plans never take this path:
/// [`NetworkPlan::forward_lanes`] runs them one window at a time on the integer kernels.
struct Lanes<const L: usize>;

impl<const L: usize> Width for Lanes<L> {
    const N: usize = L;

    #[inline(always)]
    fn dense<K: Kernels>(d: &Dense, x: &[f32], y: &mut [f32], _: &mut QuantScratch) {
        for (yl, &b) in y.chunks_exact_mut(L).zip(&d.bias) {
            yl.fill(b);
        }
        K::gemm_lanes_acc::<L>(&d.rows, x, y);
    }
}

/// The GRU layer: input and recurrent products, the cell, the loop over steps.
#[derive(Debug, Clone)]
struct Gru {
    hidden: usize,
    channels: usize,
    steps: usize,
    input: Dense,
    recurrent: Dense,
}

impl Gru {
    /// Runs the sequence `x` (`[step, channel, lane]`) from a zero state and leaves the
    /// last state in `h` (`[unit, lane]`).
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(&self, x: &[f32], h: &mut [f32], s: &mut LayerScratch) {
        h.fill(0.0);
        hoist_inputs::<K, W>(&self.input, x, &mut s.gates_in, &mut s.quant);
        if W::N == 1 && self.recurrent.int8.is_none() {
            let gates = &s.gates_in[..x.len() / self.channels * 3 * self.hidden];
            let (cols, bias) = (&self.recurrent.columns, &self.recurrent.bias);
            if K::gru_sequence(cols, bias, gates, h) {
                return;
            }
        }
        let gh = &mut s.gates_state[..3 * self.hidden * W::N];
        for (t, xt) in x.chunks_exact(self.channels * W::N).enumerate() {
            let gi = input_gates::<K, W>(&self.input, xt, t, &mut s.gates_in, &mut s.quant);
            W::dense::<K>(&self.recurrent, h, gh, &mut s.quant);
            gru_cell::<K>(gi, gh, h);
        }
    }
}

/// A recurrent layer's input products for one sequence (`W::N == 1`): every step's before the
/// loop, as rows that share each weight load ([`Width::dense_rows`], the bits of one product
/// per step). Lanes compute theirs step by step in [`input_gates`]: a window of lane products
/// would not stay in cache.
#[inline(always)]
fn hoist_inputs<K: Kernels, W: Width>(
    input: &Dense,
    x: &[f32],
    gates: &mut [f32],
    q: &mut QuantScratch,
) {
    if W::N == 1 {
        let steps = x.len() / input.inputs;
        W::dense_rows::<K>(input, x, &mut gates[..steps * input.outputs], q);
    }
}

/// Step `t`'s input products (`xt` is its input): [`hoist_inputs`]'s row for one sequence,
/// else computed now into the start of `gates`.
#[inline(always)]
fn input_gates<'a, K: Kernels, W: Width>(
    input: &Dense,
    xt: &[f32],
    t: usize,
    gates: &'a mut [f32],
    q: &mut QuantScratch,
) -> &'a mut [f32] {
    let g = input.outputs * W::N;
    if W::N == 1 {
        &mut gates[t * g..(t + 1) * g]
    } else {
        let gi = &mut gates[..g];
        W::dense::<K>(input, xt, gi, q);
        gi
    }
}

/// A causal dilated convolution as one dense product per output row over the `K` input rows
/// it reads (im2col): weights `[C_out, K·C_in]`, tap by tap.
#[derive(Debug, Clone)]
struct CausalConv {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    dilation: usize,
    dense: Dense,
}

impl CausalConv {
    /// From the file's `weight [C_out, C_in, K]` and `bias`.
    fn new(weight: &NamedTensor, bias: &NamedTensor, dilation: usize) -> Result<Self, EngineError> {
        let (c_out, c_in, kernel) = (weight.shape[0], weight.shape[1], weight.shape[2]);
        let data = (0..c_out)
            .flat_map(|o| (0..kernel).flat_map(move |k| (0..c_in).map(move |c| (o, c, k))))
            .map(|(o, c, k)| weight.data[(o * c_in + c) * kernel + k])
            .collect();
        let packed = NamedTensor {
            name: weight.name.clone(),
            shape: vec![c_out, kernel * c_in],
            data,
        };
        Ok(Self {
            c_in,
            c_out,
            kernel,
            dilation,
            dense: Dense::new(&packed, bias, None)?,
        })
    }

    /// Writes the input rows output row `t` reads (`[K·C_in, lane]` over `n` lanes; zeros
    /// before the first row) into `col`.
    #[inline(always)]
    fn gather(&self, x: &[f32], t: usize, n: usize, col: &mut [f32]) {
        let row = self.c_in * n;
        for (tap, dst) in col.chunks_exact_mut(row).enumerate() {
            match t.checked_sub((self.kernel - 1 - tap) * self.dilation) {
                Some(src) => dst.copy_from_slice(&x[src * row..(src + 1) * row]),
                None => dst.fill(0.0),
            }
        }
    }

    /// `x` `[step, C_in, lane]` → `y` `[step, C_out, lane]`; with `relu`, rectified. One
    /// sequence: eight output rows at a time through the lane-blocked product (the rows stand
    /// in for lanes). Eight sequences: one product per row.
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        y: &mut [f32],
        steps: usize,
        relu: bool,
        s: &mut LayerScratch,
    ) {
        let (cols, co) = (self.kernel * self.c_in, self.c_out);
        if W::N == 1 {
            let (col, out) = (
                &mut s.conv_col[..cols * LANES],
                &mut s.conv_out[..co * LANES],
            );
            let row = &mut s.conv_row[..cols];
            for t0 in (0..steps).step_by(LANES) {
                for l in 0..LANES {
                    let t = t0 + l;
                    if t < steps {
                        self.gather(x, t, 1, row);
                    } else {
                        row.fill(0.0);
                    }
                    for (j, &v) in row.iter().enumerate() {
                        col[j * LANES + l] = v;
                    }
                }
                for (ol, &b) in out.chunks_exact_mut(LANES).zip(&self.dense.bias) {
                    ol.fill(b);
                }
                K::gemm_lanes_acc::<LANES>(&self.dense.rows, col, out);
                for t in t0..(t0 + LANES).min(steps) {
                    for o in 0..co {
                        let v = out[o * LANES + t - t0];
                        y[t * co + o] = if relu { v.max(0.0) } else { v };
                    }
                }
            }
        } else {
            let col = &mut s.conv_col[..cols * W::N];
            for t in 0..steps {
                self.gather(x, t, W::N, col);
                let yt = &mut y[t * co * W::N..(t + 1) * co * W::N];
                W::dense::<K>(&self.dense, col, yt, &mut s.quant);
                if relu {
                    yt.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
        }
    }
}

/// A TCN block: `relu(relu(conv2(relu(conv1(x)))) + residual(x))`.
#[derive(Debug, Clone)]
struct TcnBlock {
    steps: usize,
    conv1: CausalConv,
    conv2: CausalConv,
    /// The 1×1 projection of the input when the channel counts differ.
    down: Option<CausalConv>,
}

impl TcnBlock {
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let steps = self.steps;
        let width = steps * self.conv1.c_out * W::N;
        // The inner activations and the residual live in the block's own buffer, taken out
        // of the scratch so that the convolutions can borrow the rest of it.
        let mut buffer = std::mem::take(&mut s.conv);
        let (hidden, residual) = buffer[..2 * width].split_at_mut(width);
        self.conv1.forward::<K, W>(x, hidden, steps, true, s);
        self.conv2.forward::<K, W>(hidden, y, steps, true, s);
        let residual: &[f32] = match &self.down {
            Some(down) => {
                down.forward::<K, W>(x, residual, steps, false, s);
                residual
            }
            None => x,
        };
        for (v, &r) in y.iter_mut().zip(residual) {
            *v = (*v + r).max(0.0);
        }
        s.conv = buffer;
    }
}

/// The LSTM layer: input and recurrent products, the cell, the loop over steps.
#[derive(Debug, Clone)]
struct Lstm {
    hidden: usize,
    channels: usize,
    steps: usize,
    /// Whether every step's state is written (a layer below another), else only the last.
    sequence: bool,
    input: Dense,
    recurrent: Dense,
}

impl Lstm {
    /// Runs the sequence `x` (`[step, channel, lane]`) from a zero state and writes every
    /// state (`[step, unit, lane]`) or the last (`[unit, lane]`) to `y`.
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let m = self.hidden * W::N;
        let (h, c) = s.state[..2 * m].split_at_mut(m);
        h.fill(0.0);
        c.fill(0.0);
        hoist_inputs::<K, W>(&self.input, x, &mut s.gates_in, &mut s.quant);
        if W::N == 1 && self.recurrent.int8.is_none() {
            let steps = x.len() / self.channels;
            let gates = &s.gates_in[..steps * 4 * self.hidden];
            let (cols, bias) = (&self.recurrent.columns, &self.recurrent.bias);
            let states = if self.sequence {
                &mut y[..steps * m]
            } else {
                &mut []
            };
            if K::lstm_sequence(cols, bias, gates, (&mut *h, &mut *c), states) {
                if !self.sequence {
                    y.copy_from_slice(h);
                }
                return;
            }
        }
        let gh = &mut s.gates_state[..4 * m];
        for (t, xt) in x.chunks_exact(self.channels * W::N).enumerate() {
            let gi = input_gates::<K, W>(&self.input, xt, t, &mut s.gates_in, &mut s.quant);
            W::dense::<K>(&self.recurrent, h, gh, &mut s.quant);
            lstm_cell::<K>(gi, gh, h, c);
            if self.sequence {
                y[t * m..(t + 1) * m].copy_from_slice(h);
            }
        }
        if !self.sequence {
            y.copy_from_slice(h);
        }
    }
}

/// The LSTM cell's element-wise part (PyTorch convention), over `m` values: with
/// `gi = W_ih x + b_ih` and `gh = W_hh h + b_hh` laid out `[i | f | g | o]`,
/// `c ← σ(f) ⊙ c + σ(i) ⊙ tanh(g)`, `h = σ(o) ⊙ tanh(c)`.
#[inline(always)]
fn lstm_cell<K: Kernels>(gi: &mut [f32], gh: &[f32], h: &mut [f32], c: &mut [f32]) {
    let m = h.len();
    for (g, &r) in gi.iter_mut().zip(gh) {
        *g += r;
    }
    let (i, rest) = gi.split_at_mut(m);
    let (f, rest) = rest.split_at_mut(m);
    let (g, o) = rest.split_at_mut(m);
    // One plain loop per gate (a chained iterator would not vectorize).
    for gate in [&mut *i, &mut *f, &mut *o] {
        for v in gate.iter_mut() {
            *v = sigmoid::<K>(*v);
        }
    }
    for v in g.iter_mut() {
        *v = tanh::<K>(*v);
    }
    for (((cv, &fv), &iv), &gv) in c.iter_mut().zip(&*f).zip(&*i).zip(&*g) {
        *cv = K::mul_add(fv, *cv, iv * gv);
    }
    for ((hv, &ov), &cv) in h.iter_mut().zip(&*o).zip(&*c) {
        *hv = ov * tanh::<K>(cv);
    }
}

/// The GRU cell's element-wise part (PyTorch convention), over `m` values: with
/// `gi = W_ih x + b_ih` and `gh = W_hh h + b_hh` laid out `[r | z | n]`,
/// `r = σ(gi_r + gh_r)`, `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r ⊙ gh_n)`,
/// `h ← n + z ⊙ (h − n)`. `m` is the hidden size times the number of sequences.
#[inline(always)]
fn gru_cell<K: Kernels>(gi: &mut [f32], gh: &[f32], h: &mut [f32]) {
    let m = h.len();
    let (rz, n) = gi.split_at_mut(2 * m);
    if 2 * m < K::SLICE_FROM {
        // A single sequence's step: fused loops, inline.
        for (g, &r) in rz.iter_mut().zip(&gh[..2 * m]) {
            *g = sigmoid::<K>(*g + r);
        }
        for ((g, &r), &hn) in n.iter_mut().zip(&rz[..m]).zip(&gh[2 * m..]) {
            *g = tanh::<K>(K::mul_add(r, hn, *g));
        }
    } else {
        // A block of sequences: the sums first, then the activations through the kernels'
        // slices (the same values, so the same bits).
        for (g, &r) in rz.iter_mut().zip(&gh[..2 * m]) {
            *g += r;
        }
        K::sigmoid_slice(rz);
        for ((g, &r), &hn) in n.iter_mut().zip(&rz[..m]).zip(&gh[2 * m..]) {
            *g = K::mul_add(r, hn, *g);
        }
        K::tanh_slice(n);
    }
    for ((hv, &z), &nv) in h.iter_mut().zip(&rz[m..]).zip(n.iter()) {
        *hv = K::mul_add(z, *hv - nv, nv);
    }
}

/// An N-HiTS layer ([`Layer::Nhits`]).
#[derive(Debug, Clone)]
struct Nhits {
    dims: NhitsDims,
    blocks: Vec<NhitsBlock>,
}

/// One N-HiTS block: pooling, the MLP, the backcast and the knots with their interpolation.
#[derive(Debug, Clone)]
struct NhitsBlock {
    pool: usize,
    window_rows: usize,
    future_rows: usize,
    mlp: [Dense; 2],
    backcast: Option<Dense>,
    forecast: Dense,
    /// Per predicted step: the two knots it reads and the weight of the second.
    taps: Vec<(usize, usize, f32)>,
}

/// Max-pools `rows` rows of `row` values (`[step, value]`, lanes inside a row) in the groups
/// of [`tns_model::nhits::pool_groups`] into `y` (`[group, value]`).
#[inline(always)]
fn max_pool_rows(x: &[f32], rows: usize, row: usize, pool: usize, y: &mut [f32]) {
    for (group, out) in tns_model::nhits::pool_groups(rows, pool).zip(y.chunks_exact_mut(row)) {
        out.copy_from_slice(&x[group.start * row..(group.start + 1) * row]);
        for r in group.start + 1..group.end {
            for (o, &v) in out.iter_mut().zip(&x[r * row..(r + 1) * row]) {
                *o = o.max(v);
            }
        }
    }
}

impl Nhits {
    fn new(node: &LayerNode, tensors: &[NamedTensor], int8: bool) -> Result<Self, EngineError> {
        let dims = node
            .nhits_dims()
            .ok_or_else(|| EngineError::Model(format!("layer {} is not N-HiTS", node.name)))?;
        let dense = |prefix: &str| {
            Dense::from_file(
                tensors,
                &format!("{prefix}.weight"),
                &format!("{prefix}.bias"),
                int8,
            )
        };
        let blocks = node
            .nhits_blocks()
            .into_iter()
            .map(|b| {
                Ok(NhitsBlock {
                    pool: b.pool,
                    window_rows: b.window_rows,
                    future_rows: b.future_rows,
                    mlp: [
                        dense(&format!("{}.mlp.0", b.prefix))?,
                        dense(&format!("{}.mlp.1", b.prefix))?,
                    ],
                    backcast: b
                        .backcast
                        .then(|| dense(&format!("{}.backcast", b.prefix)))
                        .transpose()?,
                    forecast: dense(&format!("{}.forecast", b.prefix))?,
                    taps: tns_model::nhits::interpolation_taps(dims.horizon, b.knots)
                        .into_iter()
                        .map(|(i, j, l)| (i, j, l as f32))
                        .collect(),
                })
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(Self { dims, blocks })
    }

    /// Scratch values per sequence: the residual, the block input, two hidden layers, the
    /// knots and the backcast.
    fn scratch_len(&self) -> usize {
        let window = self.dims.steps * self.dims.channels;
        let widest_input = self.blocks.iter().map(|b| b.mlp[0].inputs).max();
        let most_knots = self.blocks.iter().map(|b| b.forecast.outputs).max();
        2 * window + widest_input.unwrap_or(0) + 2 * self.dims.hidden + most_knots.unwrap_or(0)
    }

    /// `x` (`[step, channel, lane]`) and `future` (`[step, value, lane]`) → `y`
    /// (`[step, target, lane]`).
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        future: &[f32],
        y: &mut [f32],
        s: &mut LayerScratch,
    ) {
        let d = self.dims;
        let n = W::N;
        let (window, hidden) = (x.len(), d.hidden * n);
        let mut buffer = std::mem::take(&mut s.nhits);
        let (residual, rest) = buffer.split_at_mut(window);
        let (back, rest) = rest.split_at_mut(window);
        let (h0, rest) = rest.split_at_mut(hidden);
        let (h1, rest) = rest.split_at_mut(hidden);
        residual.copy_from_slice(x);
        y.fill(0.0);
        for block in &self.blocks {
            let (input, knots) = rest.split_at_mut(block.mlp[0].inputs * n);
            let knots = &mut knots[..block.forecast.outputs * n];
            let pooled = block.window_rows * d.channels * n;
            max_pool_rows(
                residual,
                d.steps,
                d.channels * n,
                block.pool,
                &mut input[..pooled],
            );
            if block.future_rows > 0 {
                max_pool_rows(
                    future,
                    d.horizon,
                    d.future * n,
                    block.pool,
                    &mut input[pooled..],
                );
            }
            W::dense::<K>(&block.mlp[0], input, h0, &mut s.quant);
            h0.iter_mut().for_each(|v| *v = v.max(0.0));
            W::dense::<K>(&block.mlp[1], h0, h1, &mut s.quant);
            h1.iter_mut().for_each(|v| *v = v.max(0.0));
            W::dense::<K>(&block.forecast, h1, knots, &mut s.quant);
            let row = d.targets * n;
            for (step, &(i, j, lambda)) in y.chunks_exact_mut(row).zip(&block.taps) {
                let (a, b) = (
                    &knots[i * row..(i + 1) * row],
                    &knots[j * row..(j + 1) * row],
                );
                for ((o, &ka), &kb) in step.iter_mut().zip(a).zip(b) {
                    *o += K::mul_add(lambda, kb - ka, ka);
                }
            }
            if let Some(backcast) = &block.backcast {
                W::dense::<K>(backcast, h1, back, &mut s.quant);
                for (r, &v) in residual.iter_mut().zip(back.iter()) {
                    *r -= v;
                }
            }
        }
        s.nhits = buffer;
    }

    fn dense_layers(&self) -> Vec<&Dense> {
        self.blocks
            .iter()
            .flat_map(|b| {
                b.mlp
                    .iter()
                    .chain(b.backcast.as_ref())
                    .chain(std::iter::once(&b.forecast))
            })
            .collect()
    }
}

/// RMSNorm of `rows` rows of `width` values (`[row, value, lane]` over `n` lanes) with
/// `gain`: `x / √(mean(x²) + ε) ⊙ g`, per row and lane.
#[inline(always)]
fn rms_norm(x: &[f32], y: &mut [f32], width: usize, n: usize, gain: &[f32]) {
    let eps = tns_model::RMS_NORM_EPS as f32;
    for (xr, yr) in x.chunks_exact(width * n).zip(y.chunks_exact_mut(width * n)) {
        for lane in 0..n {
            let mean = (0..width).map(|c| xr[c * n + lane].powi(2)).sum::<f32>() / width as f32;
            let inverse = 1.0 / (mean + eps).sqrt();
            for (c, g) in gain.iter().enumerate() {
                yr[c * n + lane] = xr[c * n + lane] * inverse * g;
            }
        }
    }
}

/// Keys whose scores are computed together before their softmax weights: the one buffer
/// that grows with nothing but this constant.
const KEY_BLOCK: usize = 32;

/// Queries [`attention_online`] takes through the keys together (bidirectional attention,
/// where they read the same keys): each value row loaded serves all of them, and their sums
/// are independent chains of multiply-adds, where one query's sum (one register at a head of
/// 8) waits on the latency of each multiply-add before the next.
const QUERY_GROUP: usize = 4;

/// Scratch values [`attention_online`] needs for `tokens` tokens and heads of width `head`.
fn attention_scratch_len(tokens: usize, head: usize) -> usize {
    QUERY_GROUP * (head + KEY_BLOCK) + tokens * head
}

/// Attention of one sequence, every query head against its key/value head (`heads /
/// kv_heads` query heads each), in one pass over the keys per query with a running maximum
/// and sum (the online softmax of FlashAttention), a block of [`KEY_BLOCK`] keys at a time:
/// no score matrix is ever stored: besides a block of scores, the scratch holds one key head
/// transposed (`[d_head, token]`, so that a block's scores are products along the keys)
/// ([`attention_scratch_len`]). `q` is `[token, heads ·
/// d_head]`, `k` and `v` `[token, kv_heads · d_head]`; writes `softmax(q kᵀ / √d_head) v` per
/// head into `out` (laid out as `q`). `causal`: query `i` reads keys `j ≤ i` only (the keys
/// after it are never scored, rather than masked).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_online<K: Kernels>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (heads, kv_heads, head): (usize, usize, usize),
    causal: bool,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let (d, kv) = (heads * head, kv_heads * head);
    let tokens = q.len() / d.max(1);
    let group = heads / kv_heads.max(1);
    let scale = 1.0 / (head as f32).sqrt();
    let (acc, rest) = scratch.split_at_mut(QUERY_GROUP * head);
    let (scores, rest) = rest.split_at_mut(QUERY_GROUP * KEY_BLOCK);
    let keys = &mut rest[..tokens * head];
    for h in 0..heads {
        let (qh, kvh) = (h * head, (h / group) * head);
        if h % group == 0 {
            for j in 0..tokens {
                for c in 0..head {
                    keys[c * tokens + j] = k[j * kv + kvh + c];
                }
            }
        }
        let query = |i: usize| &q[i * d + qh..i * d + qh + head];
        // Bidirectional: `QUERY_GROUP` queries at a time, each with the operations it has
        // alone (so the same bits), their value sums taken key by key together.
        let grouped = if causal || !matches!(head, 4 | 8 | 16 | 32) {
            0
        } else {
            tokens - tokens % QUERY_GROUP
        };
        for i in (0..grouped).step_by(QUERY_GROUP) {
            let (mut max, mut sum) = ([f32::NEG_INFINITY; QUERY_GROUP], [0f32; QUERY_GROUP]);
            acc.fill(0.0);
            let queries: [&[f32]; QUERY_GROUP] = std::array::from_fn(|g| query(i + g));
            for first in (0..tokens).step_by(KEY_BLOCK) {
                let len = KEY_BLOCK.min(tokens - first);
                let keys = (&*keys, tokens, first);
                softmax_blocks::<K, QUERY_GROUP>(
                    queries,
                    keys,
                    scores,
                    len,
                    scale,
                    (&mut max, &mut sum),
                    acc,
                );
                let values = &v[first * kv + kvh..];
                match head {
                    4 => accumulate_group::<K, 4>(acc, scores, len, values, kv),
                    8 => accumulate_group::<K, 8>(acc, scores, len, values, kv),
                    16 => accumulate_group::<K, 16>(acc, scores, len, values, kv),
                    _ => accumulate_group::<K, 32>(acc, scores, len, values, kv),
                }
            }
            for (g, a) in acc.chunks_exact(head).enumerate() {
                let out = &mut out[(i + g) * d + qh..(i + g) * d + qh + head];
                for (o, a) in out.iter_mut().zip(a) {
                    *o = a / sum[g];
                }
            }
        }
        let (acc, block) = (&mut acc[..head], &mut scores[..KEY_BLOCK]);
        for i in grouped..tokens {
            let (mut max, mut sum) = ([f32::NEG_INFINITY], [0.0f32]);
            acc.fill(0.0);
            let visible = if causal { i + 1 } else { tokens };
            for first in (0..visible).step_by(KEY_BLOCK) {
                let len = KEY_BLOCK.min(visible - first);
                let keys = (&*keys, tokens, first);
                softmax_blocks::<K, 1>(
                    [query(i)],
                    keys,
                    block,
                    len,
                    scale,
                    (&mut max, &mut sum),
                    acc,
                );
                let block = &block[..len];
                let values = &v[first * kv + kvh..];
                match head {
                    4 => accumulate::<K, 4>(acc, block, values, kv),
                    8 => accumulate::<K, 8>(acc, block, values, kv),
                    16 => accumulate::<K, 16>(acc, block, values, kv),
                    32 => accumulate::<K, 32>(acc, block, values, kv),
                    _ => {
                        for (&weight, j) in block.iter().zip(first..) {
                            let value = &v[j * kv + kvh..j * kv + kvh + head];
                            for (a, &x) in acc.iter_mut().zip(value) {
                                *a = K::mul_add(weight, x, *a);
                            }
                        }
                    }
                }
            }
            for (o, a) in out[i * d + qh..i * d + qh + head]
                .iter_mut()
                .zip(acc.iter())
            {
                *o = a / sum[0];
            }
        }
    }
}

/// `G` queries against the keys `first..first + len` (`keys` is one key head transposed,
/// `[d_head, tokens]`): each query's scores, then its softmax weights, in its row of
/// `scores` (`[query, KEY_BLOCK]`), with its running maximum and sum and its value sums (its
/// `d_head` values of `acc`) moved onto the new maximum. Per query the same operations in the
/// same order whatever `G`; the queries' sums are independent chains, taken key by key
/// together so that one's additions do not wait on another's.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn softmax_blocks<K: Kernels, const G: usize>(
    queries: [&[f32]; G],
    (keys, tokens, first): (&[f32], usize, usize),
    scores: &mut [f32],
    len: usize,
    scale: f32,
    (max, sum): (&mut [f32; G], &mut [f32; G]),
    acc: &mut [f32],
) {
    let head = acc.len() / G;
    // In phases over the queries, so that each phase's `G` dependent chains (a maximum, an
    // exponential) sit side by side rather than one query's after another's.
    let mut new_max = *max;
    for (g, block) in scores.chunks_exact_mut(KEY_BLOCK).take(G).enumerate() {
        let block = &mut block[..len];
        let key_rows = (keys, tokens, first);
        if len == KEY_BLOCK {
            block_scores::<K, KEY_BLOCK>(queries[g], key_rows, block);
        } else {
            block_scores::<K, 0>(queries[g], key_rows, block);
        }
        block.iter_mut().for_each(|s| *s *= scale);
        new_max[g] = max_of(block, max[g]);
    }
    // The terms so far shrink by e^(old max − new max); each new one enters at
    // e^(score − new max) ≤ 1, so nothing overflows.
    // A plain loop, not `array::from_fn`: a closure passed to a generic function may be
    // compiled outside this function's target features, where `exp`'s multiply-adds are
    // library calls.
    let mut shrink = [0f32; G];
    for ((s, &old), &new) in shrink.iter_mut().zip(max.iter()).zip(new_max.iter()) {
        *s = exp::<K>(old - new);
    }
    let rows = scores
        .chunks_exact_mut(KEY_BLOCK)
        .zip(acc.chunks_exact_mut(head));
    for (g, (block, acc)) in rows.enumerate() {
        sum[g] *= shrink[g];
        acc.iter_mut().for_each(|a| *a *= shrink[g]);
        exp_shifted::<K>(&mut block[..len], new_max[g]);
    }
    *max = new_max;
    for j in 0..len {
        for (g, sum) in sum.iter_mut().enumerate() {
            *sum += scores[g * KEY_BLOCK + j];
        }
    }
}

/// One query's scores against the keys `first..first + block.len()` (`keys` one key head
/// transposed, `[d_head, tokens]`) into `block`: along the keys, one dimension at a time,
/// independent products that vectorize rather than one dependent chain per key. `N`: the
/// block's length when known (then the scores stay in registers), 0 when not.
#[inline(always)]
fn block_scores<K: Kernels, const N: usize>(
    query: &[f32],
    (keys, tokens, first): (&[f32], usize, usize),
    block: &mut [f32],
) {
    let len = block.len();
    if N > 0 {
        let mut scores = [0f32; N];
        for (c, &x) in query.iter().enumerate() {
            let row = &keys[c * tokens + first..][..N];
            for (s, &y) in scores.iter_mut().zip(row) {
                *s = K::mul_add(x, y, *s);
            }
        }
        block.copy_from_slice(&scores);
    } else {
        block.fill(0.0);
        for (c, &x) in query.iter().enumerate() {
            let row = &keys[c * tokens + first..][..len];
            for (s, &y) in block.iter_mut().zip(row) {
                *s = K::mul_add(x, y, *s);
            }
        }
    }
}

/// [`accumulate`] for `QUERY_GROUP` queries at once: `acc` is their `[query, H]` sums,
/// `weights` their `[query, KEY_BLOCK]` weights of the same `len` keys. Key after key, each
/// value row loaded once for all of them; per query the same operations in the same order.
#[inline(always)]
fn accumulate_group<K: Kernels, const H: usize>(
    acc: &mut [f32],
    weights: &[f32],
    len: usize,
    values: &[f32],
    stride: usize,
) {
    let mut sums = [[0f32; H]; QUERY_GROUP];
    for (s, a) in sums.iter_mut().zip(acc.chunks_exact(H)) {
        s.copy_from_slice(a);
    }
    for j in 0..len {
        let row = &values[j * stride..j * stride + H];
        for (g, s) in sums.iter_mut().enumerate() {
            let weight = weights[g * KEY_BLOCK + j];
            for c in 0..H {
                s[c] = K::mul_add(weight, row[c], s[c]);
            }
        }
    }
    for (s, a) in sums.iter().zip(acc.chunks_exact_mut(H)) {
        a.copy_from_slice(s);
    }
}

/// `acc ← acc + Σ_j weights[j] · values[j · stride ..][..H]`, key after key in order (the same
/// operations as the general loop), with the `H` accumulators held in registers: through the
/// slice they went to memory and back for every key.
#[inline(always)]
fn accumulate<K: Kernels, const H: usize>(
    acc: &mut [f32],
    weights: &[f32],
    values: &[f32],
    stride: usize,
) {
    let mut sums = [0f32; H];
    sums.copy_from_slice(&acc[..H]);
    for (j, &weight) in weights.iter().enumerate() {
        let row = &values[j * stride..j * stride + H];
        for c in 0..H {
            sums[c] = K::mul_add(weight, row[c], sums[c]);
        }
    }
    acc[..H].copy_from_slice(&sums);
}

/// Copies lane `lane` of `x` (`[row, value, lane]` over `n` lanes) into `y` (`[row, value]`),
/// or `y` back into that lane of `x` with `back`.
#[inline(always)]
fn lane_copy(x: &mut [f32], y: &mut [f32], n: usize, lane: usize, back: bool) {
    for (i, value) in y.iter_mut().enumerate() {
        if back {
            x[i * n + lane] = *value;
        } else {
            *value = x[i * n + lane];
        }
    }
}

/// A pre-norm transformer block ([`Layer::TransformerBlock`]).
#[derive(Debug, Clone)]
struct TransformerBlock {
    /// Tokens per sequence (the input holds one or more sequences, one after the other).
    tokens: usize,
    width: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    causal: bool,
    norm1: Aligned<f32>,
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    norm2: Aligned<f32>,
    gate: Dense,
    up: Dense,
    down: Dense,
    /// The rotary angles' cosines and sines, `[token, d_head / 2]`.
    cos: Aligned<f32>,
    sin: Aligned<f32>,
}

/// Tokens a transformer block's feed-forward map takes at a time (as many as
/// [`Kernels::gemv_rows`] shares a weight load among).
const FFN_TOKENS: usize = 4;

impl TransformerBlock {
    fn new(node: &LayerNode, tensors: &[NamedTensor], int8: bool) -> Result<Self, EngineError> {
        let Layer::TransformerBlock {
            heads,
            kv_heads,
            ffn,
            causal,
            sequences,
        } = node.layer
        else {
            return Err(EngineError::Model(format!(
                "layer {} is not a transformer block",
                node.name
            )));
        };
        let width = node.input.channels();
        let tokens = node.input.len() / width.max(1) / sequences.max(1);
        let head = width / heads.max(1);
        let dense =
            |part: &str| Dense::unbiased(tensors, &format!("{}.{part}.weight", node.name), int8);
        let gain = |part: &str| -> Result<Vec<f32>, EngineError> {
            Ok(tensor(tensors, &format!("{}.{part}.weight", node.name))?
                .data
                .clone())
        };
        let angles = tns_model::rope_angles(tokens, head);
        Ok(Self {
            tokens,
            width,
            heads,
            kv_heads,
            ffn,
            causal,
            norm1: gain("norm1")?.into(),
            q: dense("q")?,
            k: dense("k")?,
            v: dense("v")?,
            o: dense("o")?,
            norm2: gain("norm2")?.into(),
            gate: dense("gate")?,
            up: dense("up")?,
            down: dense("down")?,
            cos: angles.iter().map(|a| a.cos() as f32).collect(),
            sin: angles.iter().map(|a| a.sin() as f32).collect(),
        })
    }

    /// Values of scratch per sequence.
    fn scratch_len(&self) -> usize {
        let (p, d, kv) = (
            self.tokens,
            self.width,
            self.kv_heads * self.width / self.heads,
        );
        // The batch path copies each lane's queries, keys, values and output out of the
        // lane layout: 2·P·d + 2·P·kv more.
        6 * p * d
            + 4 * p * kv
            + 3 * FFN_TOKENS * self.ffn
            + attention_scratch_len(p, d / self.heads)
    }

    /// Turns each head's pairs `(i, i + d_head/2)` of every token by its rotary angle.
    #[inline(always)]
    fn rotate(&self, x: &mut [f32], width: usize, n: usize) {
        let half = self.width / self.heads / 2;
        for (p, row) in x.chunks_exact_mut(width * n).enumerate() {
            for head in row.chunks_exact_mut(2 * half * n) {
                let (first, second) = head.split_at_mut(half * n);
                for i in 0..half {
                    let (c, s) = (self.cos[p * half + i], self.sin[p * half + i]);
                    for lane in 0..n {
                        let (a, b) = (first[i * n + lane], second[i * n + lane]);
                        first[i * n + lane] = a * c - b * s;
                        second[i * n + lane] = b * c + a * s;
                    }
                }
            }
        }
    }

    /// Every sequence through the block on its own (`[sequence, token, value, lane]`).
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let span = self.tokens * self.width * W::N;
        for (xs, ys) in x.chunks_exact(span).zip(y.chunks_exact_mut(span)) {
            self.forward_one::<K, W>(xs, ys, s);
        }
    }

    /// One sequence of `tokens` tokens.
    #[inline(always)]
    fn forward_one<K: Kernels, W: Width>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let n = W::N;
        let (p, d) = (self.tokens, self.width);
        let head = d / self.heads;
        let kv = self.kv_heads * head;
        let mut buffer = std::mem::take(&mut s.attention);
        let (normed, rest) = buffer.split_at_mut(p * d * n);
        let (q, rest) = rest.split_at_mut(p * d * n);
        let (k, rest) = rest.split_at_mut(p * kv * n);
        let (v, rest) = rest.split_at_mut(p * kv * n);
        let (mixed, rest) = rest.split_at_mut(p * d * n);
        let (hidden, rest) = rest.split_at_mut(p * d * n);
        let (gate, rest) = rest.split_at_mut(FFN_TOKENS * self.ffn * n);
        let (up, rest) = rest.split_at_mut(FFN_TOKENS * self.ffn * n);
        let (inner, acc) = rest.split_at_mut(FFN_TOKENS * self.ffn * n);
        rms_norm(x, normed, d, n, &self.norm1);
        W::dense_rows::<K>(&self.q, normed, q, &mut s.quant);
        W::dense_rows::<K>(&self.k, normed, k, &mut s.quant);
        W::dense_rows::<K>(&self.v, normed, v, &mut s.quant);
        self.rotate(q, d, n);
        self.rotate(k, kv, n);
        let (acc, lanes) = acc.split_at_mut(attention_scratch_len(p, head));
        let shape = (self.heads, self.kv_heads, head);
        if n == 1 {
            attention_online::<K>(q, k, v, shape, self.causal, mixed, acc);
        } else {
            let (ql, rest) = lanes.split_at_mut(p * d);
            let (kl, rest) = rest.split_at_mut(p * kv);
            let (vl, rest) = rest.split_at_mut(p * kv);
            let ol = &mut rest[..p * d];
            for lane in 0..n {
                lane_copy(q, ql, n, lane, false);
                lane_copy(k, kl, n, lane, false);
                lane_copy(v, vl, n, lane, false);
                attention_online::<K>(ql, kl, vl, shape, self.causal, ol, acc);
                lane_copy(mixed, ol, n, lane, true);
            }
        }
        W::dense_rows::<K>(&self.o, mixed, hidden, &mut s.quant);
        for (h, &xv) in hidden.iter_mut().zip(&x[..p * d * n]) {
            *h += xv;
        }
        rms_norm(hidden, normed, d, n, &self.norm2);
        // The feed-forward map `FFN_TOKENS` tokens at a time, so that its buffers stay small.
        let token = d * n;
        let blocks = normed
            .chunks(FFN_TOKENS * token)
            .zip(y.chunks_mut(FFN_TOKENS * token))
            .zip(hidden.chunks(FFN_TOKENS * token));
        for ((nb, yb), hb) in blocks {
            let count = nb.len() / token;
            let (gate, up, inner) = (
                &mut gate[..count * self.ffn * n],
                &mut up[..count * self.ffn * n],
                &mut inner[..count * self.ffn * n],
            );
            W::dense_rows::<K>(&self.gate, nb, gate, &mut s.quant);
            W::dense_rows::<K>(&self.up, nb, up, &mut s.quant);
            for ((i, &g), &u) in inner.iter_mut().zip(gate.iter()).zip(up.iter()) {
                *i = g * sigmoid::<K>(g) * u;
            }
            W::dense_rows::<K>(&self.down, inner, yb, &mut s.quant);
            for (o, &h) in yb.iter_mut().zip(hb) {
                *o += h;
            }
        }
        s.attention = buffer;
    }

    fn dense_layers(&self) -> Vec<&Dense> {
        vec![
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// A block that reads one row at a time and carries a state between rows (S4D, Mamba): what
/// a window runs for each of its rows from a zero state ([`ssm_window`]), and a stream for
/// each new row ([`NetworkPlan::stream_push`]).
trait StateSpaceBlock {
    /// Channels of a row.
    fn width(&self) -> usize;
    /// Values of work space per sequence for one step.
    fn work_len(&self) -> usize;
    /// Values of carried state per sequence.
    fn state_len(&self) -> usize;
    /// One row `x` → `y` (`[channel, lane]`), advancing `state`.
    fn step<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        y: &mut [f32],
        state: &mut [f32],
        work: &mut [f32],
        quant: &mut QuantScratch,
    );
}

/// A residual S4D block ([`Layer::S4dBlock`]), run as its recurrence: O(state) per step and
/// channel, no kernel of the window's length.
#[derive(Debug, Clone)]
struct S4dBlock {
    width: usize,
    state: usize,
    steps: usize,
    norm: Aligned<f32>,
    /// The discretized modes `Ā`, `B̄` and the read-out `C`, `[mode, channel]` (computed in
    /// f64 from the stored parameters by [`tns_model::s4d::discretize_all`], which, like
    /// the file, lays them out `[channel, mode]`): mode-major, so that a step runs along the
    /// channels, which are independent, rather than along one channel's modes, which a
    /// single sequence would sum one after another.
    a_bar: Aligned<f32>,
    b_bar: Aligned<f32>,
    c: Aligned<f32>,
    skip: Aligned<f32>,
    out: Dense,
}

impl S4dBlock {
    fn new(node: &LayerNode, tensors: &[NamedTensor], int8: bool) -> Result<Self, EngineError> {
        let Layer::S4dBlock { state } = node.layer else {
            return Err(EngineError::Model(format!(
                "layer {} is not an S4D block",
                node.name
            )));
        };
        let part = |p: &str| -> Result<&Vec<f32>, EngineError> {
            Ok(&tensor(tensors, &format!("{}.{p}", node.name))?.data)
        };
        let (a_bar, b_bar) = tns_model::s4d::discretize_all(part("log_dt")?, part("log_a")?);
        let width = node.input.channels();
        // [channel, mode] → [mode, channel].
        let mode_major = |v: &[f32]| -> Vec<f32> {
            (0..state)
                .flat_map(|m| (0..width).map(move |ch| v[ch * state + m]))
                .collect()
        };
        let narrow = |v: Vec<f64>| mode_major(&v.into_iter().map(|x| x as f32).collect::<Vec<_>>());
        Ok(Self {
            width,
            state,
            steps: node.input.len() / width.max(1),
            norm: Aligned::from_slice(part("norm.weight")?),
            a_bar: narrow(a_bar).into(),
            b_bar: narrow(b_bar).into(),
            c: mode_major(part("c")?).into(),
            skip: Aligned::from_slice(part("skip")?),
            out: Dense::from_file(
                tensors,
                &format!("{}.out.weight", node.name),
                &format!("{}.out.bias", node.name),
                int8,
            )?,
        })
    }
}

impl StateSpaceBlock for S4dBlock {
    fn width(&self) -> usize {
        self.width
    }

    /// The normalized row and the state-space output.
    fn work_len(&self) -> usize {
        2 * self.width
    }

    /// Every mode of every channel.
    fn state_len(&self) -> usize {
        self.width * self.state
    }

    /// `state` is `[mode, channel, lane]`. Every channel's output is `D u` plus its modes'
    /// read-outs added in mode order, alone or in a block of sequences, so both paths give
    /// the same bits; the loops run along the channels (and lanes), which do not depend on
    /// each other, so a single sequence's step vectorizes instead of waiting on a chain of
    /// `state` multiply-adds per channel.
    #[inline(always)]
    fn step<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        y: &mut [f32],
        state: &mut [f32],
        work: &mut [f32],
        quant: &mut QuantScratch,
    ) {
        let d = self.width * W::N;
        let (u, rest) = work.split_at_mut(d);
        let z = &mut rest[..d];
        self.mix::<K>(x, z, state, u, W::N);
        W::dense::<K>(&self.out, z, y, quant);
        for (o, &v) in y.iter_mut().zip(x) {
            *o += v;
        }
    }
}

impl S4dBlock {
    /// A step up to the output map: `x` normalized into `u`, the state advanced, and the
    /// gated state-space output in `z` (`n` sequences side by side).
    #[inline(always)]
    fn mix<K: Kernels>(
        &self,
        x: &[f32],
        z: &mut [f32],
        state: &mut [f32],
        u: &mut [f32],
        n: usize,
    ) {
        let d = self.width;
        rms_norm(x, u, d, n, &self.norm);
        for ((zc, uc), &skip) in z.chunks_exact_mut(n).zip(u.chunks_exact(n)).zip(&self.skip) {
            for (o, &v) in zc.iter_mut().zip(uc) {
                *o = skip * v;
            }
        }
        if n == 1 {
            // Channel blocks of 32, 8 and 1, each with its sums in registers across the modes.
            let mut first = 0;
            while first + EXP_BLOCK <= d {
                self.mix_channels::<K, EXP_BLOCK>(z, state, u, first);
                first += EXP_BLOCK;
            }
            while first + VECTOR <= d {
                self.mix_channels::<K, VECTOR>(z, state, u, first);
                first += VECTOR;
            }
            while first < d {
                self.mix_channels::<K, 1>(z, state, u, first);
                first += 1;
            }
        } else {
            let modes = self
                .a_bar
                .chunks_exact(d)
                .zip(self.b_bar.chunks_exact(d))
                .zip(self.c.chunks_exact(d))
                .zip(state.chunks_exact_mut(d * n));
            for (((a, b), c), sm) in modes {
                let channels = sm
                    .chunks_exact_mut(n)
                    .zip(u.chunks_exact(n))
                    .zip(z.chunks_exact_mut(n));
                for (ch, ((sc, uc), zc)) in channels.enumerate() {
                    let (a, b, c) = (a[ch], b[ch], c[ch]);
                    for ((sv, &v), o) in sc.iter_mut().zip(uc).zip(zc.iter_mut()) {
                        *sv = K::mul_add(a, *sv, b * v);
                        *o = K::mul_add(c, *sv, *o);
                    }
                }
            }
        }
        for v in z.iter_mut() {
            *v *= sigmoid::<K>(*v);
        }
    }

    /// [`S4dBlock::mix`]'s state update and read-out for one sequence's `W` channels from
    /// `first`, mode after mode: the same multiply-adds per channel in the same order as the
    /// lane path, with the `W` read-out sums in local arrays the compiler keeps in registers
    /// (looping mode by mode over every channel instead, they went through memory once per
    /// mode).
    #[inline(always)]
    fn mix_channels<K: Kernels, const W: usize>(
        &self,
        z: &mut [f32],
        state: &mut [f32],
        u: &[f32],
        first: usize,
    ) {
        let d = self.width;
        let inputs = &u[first..first + W];
        let mut sums = [0f32; W];
        sums.copy_from_slice(&z[first..first + W]);
        for mode in 0..self.state {
            let at = mode * d + first;
            let (a, b, c) = (
                &self.a_bar[at..at + W],
                &self.b_bar[at..at + W],
                &self.c[at..at + W],
            );
            let sm = &mut state[at..at + W];
            for i in 0..W {
                sm[i] = K::mul_add(a[i], sm[i], b[i] * inputs[i]);
                sums[i] = K::mul_add(c[i], sm[i], sums[i]);
            }
        }
        z[first..first + W].copy_from_slice(&sums);
    }

    /// Values of one sequence's window work space ([`S4dBlock::window`]).
    fn window_len(&self) -> usize {
        (self.steps + 1) * self.width
    }

    /// One sequence's window from a zero state: [`S4dBlock::mix`] row after row, then the
    /// output map over every row at once through [`Width::dense_rows`] (each weight loaded
    /// once for several rows, the bits of one product per row), then the residual. The same
    /// operations per value as [`StateSpaceBlock::step`], so the same bits.
    #[inline(always)]
    fn window<K: Kernels>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let d = self.width;
        let (u, mixed) = s.ssm_rows.split_at_mut(d);
        let mixed = &mut mixed[..x.len()];
        let state = &mut s.ssm_state[..self.state_len()];
        state.fill(0.0);
        for (xt, zt) in x.chunks_exact(d).zip(mixed.chunks_exact_mut(d)) {
            self.mix::<K>(xt, zt, state, u, 1);
        }
        Single::dense_rows::<K>(&self.out, mixed, y, &mut s.quant);
        for (o, &v) in y.iter_mut().zip(x) {
            *o += v;
        }
    }
}

/// A residual Mamba block ([`Layer::MambaBlock`]), run step by step: the convolution reads
/// the last `conv` rows of the input map, the scan carries `[E, N]` states.
#[derive(Debug, Clone)]
struct MambaBlock {
    dims: tns_model::mamba::MambaDims,
    /// Rows of the window the block reads.
    steps: usize,
    norm: Aligned<f32>,
    input: Dense,
    /// The convolution's taps `[conv, E]` (the file's `[E, conv]` transposed, so that a tap
    /// runs along the independent channels) and bias `[E]`.
    conv: Aligned<f32>,
    conv_bias: Aligned<f32>,
    x_proj: Dense,
    dt: Dense,
    /// `A = −exp(a_log)` (computed once in f64), `[N, E]`: mode-major, like the scan state,
    /// so that a step runs along the independent channels (see [`MambaBlock::step`]).
    a: Aligned<f32>,
    skip: Aligned<f32>,
    out: Dense,
}

impl MambaBlock {
    fn new(node: &LayerNode, tensors: &[NamedTensor], int8: bool) -> Result<Self, EngineError> {
        let dims = node.mamba_dims().ok_or_else(|| {
            EngineError::Model(format!("layer {} is not a Mamba block", node.name))
        })?;
        let name = |p: &str| format!("{}.{p}", node.name);
        let part = |p: &str| -> Result<Vec<f32>, EngineError> {
            Ok(tensor(tensors, &name(p))?.data.clone())
        };
        let steps = node.input.len() / node.input.channels().max(1);
        let taps = part("conv.weight")?;
        Ok(Self {
            dims,
            steps,
            norm: part("norm.weight")?.into(),
            input: Dense::unbiased(tensors, &name("in.weight"), int8)?,
            conv: (0..dims.conv)
                .flat_map(|tap| (0..dims.inner).map(move |ch| (ch, tap)))
                .map(|(ch, tap)| taps[ch * dims.conv + tap])
                .collect(),
            conv_bias: part("conv.bias")?.into(),
            x_proj: Dense::unbiased(tensors, &name("x.weight"), int8)?,
            dt: Dense::from_file(tensors, &name("dt.weight"), &name("dt.bias"), int8)?,
            a: {
                let a_log = part("a_log")?;
                let (e, n) = (dims.inner, dims.state);
                (0..n)
                    .flat_map(|mode| (0..e).map(move |ch| (ch, mode)))
                    .map(|(ch, mode)| -f64::from(a_log[ch * n + mode]).exp() as f32)
                    .collect()
            },
            skip: part("skip")?.into(),
            out: Dense::unbiased(tensors, &name("out.weight"), int8)?,
        })
    }

    /// Values of [`MambaBlock::window`]'s work space: every row's normalized input, input
    /// map, convolution, `[δ, B, C]`, `δ` alone, `Δ` and gated output, and one row's `Δ v`
    /// and decays.
    fn window_len(&self) -> usize {
        let m = self.dims;
        self.steps * (m.d_model + 5 * m.inner + 2 * m.rank + 2 * m.state)
            + m.inner
            + m.inner * m.state
    }

    /// One sequence's window from a zero state, with the operations of
    /// [`StateSpaceBlock::step`] row after row (so the same bits), but every map that carries
    /// no state (the normalization, the projections, the convolution, the gates) runs over
    /// all rows at once, the projections through [`Width::dense_rows`], which loads each f32
    /// weight once for several rows; only the scan goes row by row. `x` and `y` are
    /// `[steps, d_model]`.
    #[inline(always)]
    fn window<K: Kernels>(&self, x: &[f32], y: &mut [f32], s: &mut LayerScratch) {
        let m = self.dims;
        let (d, e, modes, k, rank) = (m.d_model, m.inner, m.state, m.conv, m.rank);
        let rows = self.steps;
        let proj = rank + 2 * modes;
        let (normed, rest) = s.ssm_rows.split_at_mut(rows * d);
        let (xz, rest) = rest.split_at_mut(rows * 2 * e);
        let (convolved, rest) = rest.split_at_mut(rows * e);
        let (dbc, rest) = rest.split_at_mut(rows * proj);
        let (dt_in, rest) = rest.split_at_mut(rows * rank);
        let (delta, rest) = rest.split_at_mut(rows * e);
        let (gated, rest) = rest.split_at_mut(rows * e);
        let (pushes, rest) = rest.split_at_mut(e);
        let decays = &mut rest[..modes * e];
        for (xt, nt) in x.chunks_exact(d).zip(normed.chunks_exact_mut(d)) {
            rms_norm(xt, nt, d, 1, &self.norm);
        }
        let quant = &mut s.quant;
        Single::dense_rows::<K>(&self.input, normed, xz, quant);
        // The causal convolution; rows before the first read as the zeros a fresh state
        // holds, multiplied in as the step does.
        for (t, out) in convolved.chunks_exact_mut(e).enumerate() {
            out.copy_from_slice(&self.conv_bias);
            for (tap, taps) in self.conv.chunks_exact(e).enumerate() {
                match (t + tap).checked_sub(k - 1) {
                    Some(row) => {
                        let v = &xz[row * 2 * e..row * 2 * e + e];
                        for ((o, &w), &value) in out.iter_mut().zip(taps).zip(v) {
                            *o = K::mul_add(w, value, *o);
                        }
                    }
                    None => {
                        for (o, &w) in out.iter_mut().zip(taps) {
                            *o = K::mul_add(w, 0.0, *o);
                        }
                    }
                }
            }
        }
        for value in convolved.iter_mut() {
            *value *= sigmoid::<K>(*value);
        }
        Single::dense_rows::<K>(&self.x_proj, convolved, dbc, quant);
        for (dt, row) in dt_in.chunks_exact_mut(rank).zip(dbc.chunks_exact(proj)) {
            dt.copy_from_slice(&row[..rank]);
        }
        Single::dense_rows::<K>(&self.dt, dt_in, delta, quant);
        for value in delta.iter_mut() {
            *value = softplus::<K>(*value);
        }
        let h = &mut s.ssm_state[..modes * e];
        h.fill(0.0);
        let steps = delta
            .chunks_exact(e)
            .zip(convolved.chunks_exact(e))
            .zip(dbc.chunks_exact(proj))
            .zip(gated.chunks_exact_mut(e));
        for (((dl, v), row), g) in steps {
            for ((p, &step), &value) in pushes.iter_mut().zip(dl).zip(v) {
                *p = step * value;
            }
            let (b, c) = row[rank..].split_at(modes);
            scan_row::<K>(h, (&self.a, dl), pushes, (b, c), decays, g);
        }
        for ((g, v), xzt) in gated
            .chunks_exact_mut(e)
            .zip(convolved.chunks_exact(e))
            .zip(xz.chunks_exact(2 * e))
        {
            gate::<K>(g, v, &xzt[e..], &self.skip);
        }
        Single::dense_rows::<K>(&self.out, gated, y, quant);
        for (o, &value) in y.iter_mut().zip(x) {
            *o += value;
        }
    }
}

/// softplus without overflow: `max(x, 0) + ln(1 + e^{−|x|})`.
#[inline(always)]
fn softplus<K: Kernels>(x: f32) -> f32 {
    x.max(0.0) + K::ln_1p_unit(exp::<K>(-x.abs()))
}

/// One row of a single sequence's scan over every mode (`h`, `a` and `decays` `[N, E]`, the
/// rest `[E]`): the decays `exp(Δ A)` of every mode in one [`Kernels::exp_slice`] (they do not
/// depend on the state), then for each channel `h_n ← fma(decay_n, h_n, (Δ v) B_n)` and
/// `out = Σ_n h_n C_n`, summed in mode order from zero — the same operations per value as the
/// lane path. The recurrence takes the channels in blocks of [`EXP_BLOCK`], then
/// [`VECTOR`], then one at a time, each block through every mode before the next, so that
/// its sums stay in registers (see [`scan_channels`]).
#[inline(always)]
fn scan_row<K: Kernels>(
    h: &mut [f32],
    (a, delta): (&[f32], &[f32]),
    pushes: &[f32],
    bc: (&[f32], &[f32]),
    decays: &mut [f32],
    out: &mut [f32],
) {
    let e = out.len();
    for (dm, am) in decays.chunks_exact_mut(e).zip(a.chunks_exact(e)) {
        for ((d, &a), &step) in dm.iter_mut().zip(am).zip(delta) {
            *d = step * a;
        }
    }
    K::exp_slice(decays);
    let mut first = 0;
    while first + EXP_BLOCK <= e {
        scan_channels::<K, EXP_BLOCK>(h, decays, pushes, bc, out, first);
        first += EXP_BLOCK;
    }
    while first + VECTOR <= e {
        scan_channels::<K, VECTOR>(h, decays, pushes, bc, out, first);
        first += VECTOR;
    }
    for channel in first..e {
        scan_channels::<K, 1>(h, decays, pushes, bc, out, channel);
    }
}

/// [`scan_row`]'s recurrence for the `W` channels from `first`, through local arrays that
/// the compiler keeps in registers: the read-out sums stay in registers across the modes
/// instead of going through memory once per mode.
#[inline(always)]
fn scan_channels<K: Kernels, const W: usize>(
    h: &mut [f32],
    decays: &[f32],
    pushes: &[f32],
    (b, c): (&[f32], &[f32]),
    out: &mut [f32],
    first: usize,
) {
    let e = out.len();
    let pushes = &pushes[first..first + W];
    let mut sum = [0f32; W];
    for (mode, (&bv, &cv)) in b.iter().zip(c).enumerate() {
        let at = mode * e + first;
        let (hm, decay) = (&mut h[at..at + W], &decays[at..at + W]);
        for i in 0..W {
            hm[i] = K::mul_add(decay[i], hm[i], pushes[i] * bv);
            sum[i] += hm[i] * cv;
        }
    }
    out[first..first + W].copy_from_slice(&sum);
}

/// A single sequence's gate (`[E]` each): `out ← (out + D v) · silu(z)`, one flat loop,
/// which vectorizes.
#[inline(always)]
fn gate<K: Kernels>(out: &mut [f32], v: &[f32], z: &[f32], skip: &[f32]) {
    for (((o, &value), &zv), &skip) in out.iter_mut().zip(v).zip(z).zip(skip) {
        *o += skip * value;
        *o *= zv * sigmoid::<K>(zv);
    }
}

impl StateSpaceBlock for MambaBlock {
    fn width(&self) -> usize {
        self.dims.d_model
    }

    /// The normalized row, the input map, the convolution, `[δ, B, C]`, `Δ`, `Δ v`, the
    /// gated output and the decays (which only a single sequence's scan keeps).
    fn work_len(&self) -> usize {
        let m = self.dims;
        m.d_model + 6 * m.inner + (m.rank + 2 * m.state) + m.inner * m.state
    }

    /// The scan's `[N, E]` and the last `conv − 1` rows the convolution reads
    /// (`[conv − 1, E]`, oldest first).
    fn state_len(&self) -> usize {
        let m = self.dims;
        m.inner * m.state + (m.conv - 1) * m.inner
    }

    /// `state` is laid out as [`MambaBlock::state_len`] says (each part `[…, lane]`). The
    /// scan runs mode by mode along the channels: `h ← fma(exp(Δ A), h, (Δ v) B)`, and each
    /// channel's read-out `Σ_n C h` is summed in mode order before `D v` is added, alone or
    /// in a block of sequences, so both give the same bits; along the channels the
    /// exponentials and the sums of a single sequence vectorize.
    #[inline(always)]
    fn step<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        y: &mut [f32],
        state: &mut [f32],
        work: &mut [f32],
        quant: &mut QuantScratch,
    ) {
        let n = W::N;
        let m = self.dims;
        let (d, e, modes, k) = (m.d_model, m.inner, m.state, m.conv);
        let (h, history) = state.split_at_mut(e * modes * n);
        let history = &mut history[..(k - 1) * e * n];
        let (normed, rest) = work.split_at_mut(d * n);
        let (xz, rest) = rest.split_at_mut(2 * e * n);
        let (convolved, rest) = rest.split_at_mut(e * n);
        let (dbc, rest) = rest.split_at_mut((m.rank + 2 * modes) * n);
        let (delta, rest) = rest.split_at_mut(e * n);
        let (pushes, rest) = rest.split_at_mut(e * n);
        let (gated, rest) = rest.split_at_mut(e * n);
        rms_norm(x, normed, d, n, &self.norm);
        W::dense::<K>(&self.input, normed, xz, quant);
        let (v, z) = xz.split_at(e * n);
        // The causal depthwise convolution over the carried rows and this one, then the
        // carried rows moved on by one.
        for (out, &bias) in convolved.chunks_exact_mut(n).zip(&self.conv_bias) {
            out.fill(bias);
        }
        for (tap, taps) in self.conv.chunks_exact(e).enumerate() {
            let rows = if tap + 1 == k {
                &v[..e * n]
            } else {
                &history[tap * e * n..(tap + 1) * e * n]
            };
            let channels = convolved.chunks_exact_mut(n).zip(taps);
            for ((out, &w), row) in channels.zip(rows.chunks_exact(n)) {
                for (o, &value) in out.iter_mut().zip(row) {
                    *o = K::mul_add(w, value, *o);
                }
            }
        }
        if k > 1 {
            history.copy_within(e * n.., 0);
            history[(k - 2) * e * n..].copy_from_slice(v);
        }
        for value in convolved.iter_mut() {
            *value *= sigmoid::<K>(*value);
        }
        W::dense::<K>(&self.x_proj, convolved, dbc, quant);
        W::dense::<K>(&self.dt, &dbc[..m.rank * n], delta, quant);
        for value in delta.iter_mut() {
            *value = softplus::<K>(*value);
        }
        // `Δ v`, which every mode's input `(Δ v) B` scales: once per channel, not per mode.
        for ((p, &step), &value) in pushes.iter_mut().zip(delta.iter()).zip(convolved.iter()) {
            *p = step * value;
        }
        let b = &dbc[m.rank * n..(m.rank + modes) * n];
        let c = &dbc[(m.rank + modes) * n..];
        if n == 1 {
            let decays = &mut rest[..modes * e];
            scan_row::<K>(h, (&self.a, delta), pushes, (b, c), decays, gated);
        } else {
            gated.fill(0.0);
            let scan = h
                .chunks_exact_mut(e * n)
                .zip(self.a.chunks_exact(e))
                .zip(b.chunks_exact(n).zip(c.chunks_exact(n)));
            for ((hm, am), (bm, cm)) in scan {
                let channels = hm
                    .chunks_exact_mut(n)
                    .zip(am)
                    .zip(delta.chunks_exact(n))
                    .zip(pushes.chunks_exact(n).zip(gated.chunks_exact_mut(n)));
                // The lanes through local arrays, as in `scan_channels` (`B` and `C` too: the
                // output might be them, as far as the compiler can tell).
                let (mut next, mut b_lanes, mut c_lanes) =
                    ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
                let (next, b_lanes, c_lanes) =
                    (&mut next[..n], &mut b_lanes[..n], &mut c_lanes[..n]);
                b_lanes.copy_from_slice(bm);
                c_lanes.copy_from_slice(cm);
                for (((hc, &a), dl), (push, out)) in channels {
                    for lane in 0..n {
                        next[lane] = K::mul_add(
                            exp::<K>(dl[lane] * a),
                            hc[lane],
                            push[lane] * b_lanes[lane],
                        );
                    }
                    hc.copy_from_slice(next);
                    for lane in 0..n {
                        out[lane] += next[lane] * c_lanes[lane];
                    }
                }
            }
        }
        if n == 1 {
            gate::<K>(gated, convolved, z, &self.skip);
        } else {
            for (ch, out) in gated.chunks_exact_mut(n).enumerate() {
                let (vc, zc) = (&convolved[ch * n..(ch + 1) * n], &z[ch * n..(ch + 1) * n]);
                for ((o, &value), &zv) in out.iter_mut().zip(vc).zip(zc) {
                    *o += self.skip[ch] * value;
                    *o *= zv * sigmoid::<K>(zv);
                }
            }
        }
        W::dense::<K>(&self.out, gated, y, quant);
        for (o, &value) in y.iter_mut().zip(x) {
            *o += value;
        }
    }
}

/// A state-space block ([`S4dBlock`] or [`MambaBlock`]) over a whole window: every row in
/// turn from a zero state, as a stream would see them.
#[inline(always)]
fn ssm_window<K: Kernels, W: Width>(
    block: &impl StateSpaceBlock,
    x: &[f32],
    y: &mut [f32],
    s: &mut LayerScratch,
) {
    let mut state = std::mem::take(&mut s.ssm_state);
    let mut work = std::mem::take(&mut s.ssm);
    let width = block.width() * W::N;
    state.fill(0.0);
    for (xt, yt) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
        block.step::<K, W>(xt, yt, &mut state, &mut work, &mut s.quant);
    }
    s.ssm_state = state;
    s.ssm = work;
}

/// [`Layer::Decompose`] over `x` (`[step, value]` with `row` values per step: the channels
/// times the sequences side by side): the trend `[steps, row]`, then the remainder. The
/// window's first and last rows stand in for the rows beyond its ends.
#[inline(always)]
fn decompose(x: &[f32], y: &mut [f32], steps: usize, row: usize, kernel: usize) {
    let (trend, remainder) = y.split_at_mut(steps * row);
    let p = kernel / 2;
    let scale = 1.0 / kernel as f32;
    for i in 0..steps {
        let t = &mut trend[i * row..(i + 1) * row];
        t.fill(0.0);
        for j in i as isize - p as isize..=(i + p) as isize {
            let r = j.clamp(0, steps as isize - 1) as usize;
            for (acc, &v) in t.iter_mut().zip(&x[r * row..(r + 1) * row]) {
                *acc += v;
            }
        }
        for v in t.iter_mut() {
            *v *= scale;
        }
    }
    for ((r, &v), &t) in remainder.iter_mut().zip(x).zip(trend.iter()) {
        *r = v - t;
    }
}

/// A decomposition followed (past an optional `ConcatFuture`) by a dense layer is linear end
/// to end: `W_t · (A x) + W_r · (x − A x) + W_f · f + b`. Folds the pair at load into one
/// dense map of the window `(W_t A + W_r (I − A)) x + W_f f + b` (the decomposition becomes a
/// no-op flatten), so DLinear runs as one product. f32 plans only: INT8 codes are quantized
/// per layer as the file holds them.
fn fold_decompositions(
    nodes: &[LayerNode],
    tensors: &[NamedTensor],
    layers: &mut [LayerPlan],
    widths: &mut [usize],
) -> Result<(), EngineError> {
    for i in 0..nodes.len() {
        let Layer::Decompose { kernel } = nodes[i].layer else {
            continue;
        };
        let dense_at = match nodes.get(i + 1).map(|n| n.layer) {
            Some(Layer::ConcatFuture { .. }) => i + 2,
            _ => i + 1,
        };
        let Some(head) = nodes
            .get(dense_at)
            .filter(|n| matches!(n.layer, Layer::Dense { .. }))
        else {
            continue;
        };
        let (channels, window) = (nodes[i].input.channels(), nodes[i].input.len());
        let steps = window / channels.max(1);
        let weight = tensor(tensors, &format!("{}.weight", head.name))?;
        let bias = tensor(tensors, &format!("{}.bias", head.name))?;
        let (outputs, inputs) = (weight.shape[0], weight.shape[1]);
        let average = tns_model::moving_average_matrix(steps, kernel);
        let future = inputs - 2 * window;
        let mut folded = vec![0f32; outputs * (window + future)];
        for o in 0..outputs {
            let w = &weight.data[o * inputs..(o + 1) * inputs];
            let (w_trend, rest) = w.split_at(window);
            let (w_rest, w_future) = rest.split_at(window);
            let out = &mut folded[o * (window + future)..(o + 1) * (window + future)];
            for c in 0..channels {
                for j in 0..steps {
                    // Row j's weight: directly through the remainder, and through every
                    // trend row i that averages it (A[j → i]), trend minus remainder.
                    let through_trend: f64 = (0..steps)
                        .map(|t| {
                            average[j * steps + t]
                                * f64::from(w_trend[t * channels + c] - w_rest[t * channels + c])
                        })
                        .sum();
                    out[j * channels + c] =
                        (f64::from(w_rest[j * channels + c]) + through_trend) as f32;
                }
            }
            out[window..].copy_from_slice(w_future);
        }
        let folded = NamedTensor {
            name: weight.name.clone(),
            shape: vec![outputs, window + future],
            data: folded,
        };
        layers[i] = LayerPlan::Flatten;
        widths[i] = window;
        if dense_at == i + 2 {
            widths[i + 1] = window + future;
        }
        layers[dense_at] = LayerPlan::Dense(Dense::new(&folded, bias, None)?);
    }
    Ok(())
}

/// One layer of the description, lowered for the engine.
#[derive(Debug, Clone)]
enum LayerPlan {
    /// No data moves: `[step, channel]` is already the flat vector.
    Flatten,
    Dense(Dense),
    Activation(Activation),
    Gru(Gru),
    Lstm(Lstm),
    /// Copies the vector, then the normalized future block after it.
    ConcatFuture,
    /// A TCN block (see [`Layer::TcnBlock`]).
    TcnBlock(Box<TcnBlock>),
    /// The last row of a sequence.
    LastStep,
    /// Moving-average trend, then the remainder (see [`Layer::Decompose`]).
    Decompose {
        steps: usize,
        channels: usize,
        kernel: usize,
    },
    /// N-HiTS blocks (see [`Layer::Nhits`]).
    Nhits(Box<Nhits>),
    /// The patch embedding, one product per token; consecutive tokens start `stride` rows
    /// apart in a sequence of `channels` (`[step, channel]`; times the lanes in the batch
    /// path). When `independent`, each channel's tokens (its values `channels` apart) are
    /// gathered and embedded in turn.
    PatchEmbed {
        dense: Dense,
        stride: usize,
        channels: usize,
        independent: bool,
    },
    /// A transformer block (see [`Layer::TransformerBlock`]).
    TransformerBlock(Box<TransformerBlock>),
    /// RMSNorm of every row.
    RmsNorm {
        width: usize,
        gain: Aligned<f32>,
    },
    /// An S4D block (see [`Layer::S4dBlock`]).
    S4dBlock(Box<S4dBlock>),
    /// A Mamba block (see [`Layer::MambaBlock`]).
    MambaBlock(Box<MambaBlock>),
}

impl LayerPlan {
    /// Lowers one layer, packing its tensors (INT8 when `int8`).
    fn lower(node: &LayerNode, tensors: &[NamedTensor], int8: bool) -> Result<Self, EngineError> {
        let dense = |weight: &str, bias: &str| {
            let (weight, bias) = (
                format!("{}.{weight}", node.name),
                format!("{}.{bias}", node.name),
            );
            Dense::from_file(tensors, &weight, &bias, int8)
        };
        Ok(match node.layer {
            Layer::Flatten => Self::Flatten,
            Layer::Dense { .. } => Self::Dense(dense("weight", "bias")?),
            Layer::Activation(a) => Self::Activation(a),
            Layer::Gru { hidden } => Self::Gru(Gru {
                hidden,
                channels: node.input.channels(),
                steps: node.input.len() / node.input.channels().max(1),
                input: dense("weight_ih_l0", "bias_ih_l0")?,
                recurrent: dense("weight_hh_l0", "bias_hh_l0")?,
            }),
            Layer::ConcatFuture { .. } => Self::ConcatFuture,
            Layer::Lstm { hidden, sequence } => Self::Lstm(Lstm {
                hidden,
                channels: node.input.channels(),
                steps: node.input.len() / node.input.channels().max(1),
                sequence,
                input: dense("weight_ih_l0", "bias_ih_l0")?,
                recurrent: dense("weight_hh_l0", "bias_hh_l0")?,
            }),
            Layer::TcnBlock { dilation, .. } => {
                let conv = |part: &str, dilation: usize| -> Result<CausalConv, EngineError> {
                    let weight = tensor(tensors, &format!("{}.{part}.weight", node.name))?;
                    let bias = tensor(tensors, &format!("{}.{part}.bias", node.name))?;
                    CausalConv::new(weight, bias, dilation)
                };
                let has_down = node.input.channels() != node.output.channels();
                Self::TcnBlock(Box::new(TcnBlock {
                    steps: node.input.len() / node.input.channels().max(1),
                    conv1: conv("conv1", dilation)?,
                    conv2: conv("conv2", dilation)?,
                    down: has_down.then(|| conv("down", 1)).transpose()?,
                }))
            }
            Layer::LastStep => Self::LastStep,
            Layer::Decompose { kernel } => Self::Decompose {
                steps: node.input.len() / node.input.channels().max(1),
                channels: node.input.channels(),
                kernel,
            },
            Layer::Nhits { .. } => Self::Nhits(Box::new(Nhits::new(node, tensors, int8)?)),
            Layer::PatchEmbed {
                stride,
                independent,
                ..
            } => Self::PatchEmbed {
                dense: dense("weight", "bias")?,
                stride,
                channels: node.input.channels(),
                independent,
            },
            Layer::TransformerBlock { .. } => {
                Self::TransformerBlock(Box::new(TransformerBlock::new(node, tensors, int8)?))
            }
            Layer::RmsNorm => Self::RmsNorm {
                width: node.input.channels(),
                gain: Aligned::from_slice(&tensor(tensors, &format!("{}.weight", node.name))?.data),
            },
            Layer::S4dBlock { .. } => Self::S4dBlock(Box::new(S4dBlock::new(node, tensors, int8)?)),
            Layer::MambaBlock { .. } => {
                Self::MambaBlock(Box::new(MambaBlock::new(node, tensors, int8)?))
            }
        })
    }

    /// `x` → `y` for `W::N` sequences; `future` is the normalized future block of the model
    /// input (`[value, lane]` like everything else). The stack skips `Flatten` (it moves no
    /// data) unless it is the last layer, where it copies.
    #[inline(always)]
    fn forward<K: Kernels, W: Width>(
        &self,
        x: &[f32],
        future: &[f32],
        y: &mut [f32],
        s: &mut LayerScratch,
    ) {
        match self {
            Self::ConcatFuture => {
                let (head, tail) = y.split_at_mut(x.len());
                head.copy_from_slice(x);
                tail.copy_from_slice(future);
            }
            Self::Flatten => y.copy_from_slice(x),
            Self::Dense(d) => W::dense::<K>(d, x, y, &mut s.quant),
            Self::Activation(Activation::Relu) => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v.max(0.0);
                }
            }
            Self::Gru(gru) => gru.forward::<K, W>(x, y, s),
            Self::Lstm(lstm) => lstm.forward::<K, W>(x, y, s),
            Self::TcnBlock(block) => block.forward::<K, W>(x, y, s),
            // The last row is the last `y.len()` values (`[step, channel, lane]`).
            Self::LastStep => y.copy_from_slice(&x[x.len() - y.len()..]),
            &Self::Decompose {
                steps,
                channels,
                kernel,
            } => decompose(x, y, steps, channels * W::N, kernel),
            Self::Nhits(nhits) => nhits.forward::<K, W>(x, future, y, s),
            // Each token's rows are contiguous (`[step, channel, lane]`): one product each.
            &Self::PatchEmbed {
                dense: ref d,
                stride,
                channels,
                independent: false,
            } => {
                for (t, yt) in y.chunks_exact_mut(d.outputs * W::N).enumerate() {
                    let first = t * stride * channels * W::N;
                    W::dense::<K>(d, &x[first..first + d.inputs * W::N], yt, &mut s.quant);
                }
            }
            // A channel's values are `channels` apart: gather each token's `patch` of them.
            &Self::PatchEmbed {
                dense: ref d,
                stride,
                channels,
                independent: true,
            } => {
                let n = W::N;
                let token = &mut s.attention[..d.inputs * n];
                let per_channel = y.len() / (d.outputs * n * channels.max(1));
                for (t, yt) in y.chunks_exact_mut(d.outputs * n).enumerate() {
                    let (channel, first) = (t / per_channel, (t % per_channel) * stride);
                    for (r, value) in token.chunks_exact_mut(n).enumerate() {
                        let at = ((first + r) * channels + channel) * n;
                        value.copy_from_slice(&x[at..at + n]);
                    }
                    W::dense::<K>(d, token, yt, &mut s.quant);
                }
            }
            Self::TransformerBlock(block) => block.forward::<K, W>(x, y, s),
            Self::RmsNorm { width, gain } => rms_norm(x, y, *width, W::N, gain),
            // One sequence at a time, its output map over every row at once.
            Self::S4dBlock(b) if W::N == 1 => b.window::<K>(x, y, s),
            Self::S4dBlock(b) => ssm_window::<K, W>(&**b, x, y, s),
            // One sequence at a time, its maps over every row at once.
            Self::MambaBlock(b) if W::N == 1 => b.window::<K>(x, y, s),
            Self::MambaBlock(b) => ssm_window::<K, W>(&**b, x, y, s),
        }
    }

    /// A state-space block's `(work, state)` values per sequence (zeros for other layers).
    fn ssm_lens(&self) -> (usize, usize) {
        match self {
            Self::S4dBlock(b) => (b.work_len(), b.state_len()),
            Self::MambaBlock(b) => (b.work_len(), b.state_len()),
            _ => (0, 0),
        }
    }

    fn dense_layers(&self) -> Vec<&Dense> {
        match self {
            Self::Flatten
            | Self::Activation(_)
            | Self::ConcatFuture
            | Self::Decompose { .. }
            | Self::TcnBlock(_)
            | Self::LastStep => Vec::new(),
            Self::Dense(d) => vec![d],
            Self::Gru(g) => vec![&g.input, &g.recurrent],
            Self::Lstm(l) => vec![&l.input, &l.recurrent],
            Self::Nhits(n) => n.dense_layers(),
            Self::PatchEmbed { dense: d, .. } => vec![d],
            Self::TransformerBlock(b) => b.dense_layers(),
            Self::RmsNorm { .. } => Vec::new(),
            Self::S4dBlock(b) => vec![&b.out],
            Self::MambaBlock(b) => vec![&b.input, &b.x_proj, &b.dt, &b.out],
        }
    }
}

/// A network ready to run: a normalized model input (f32: the window `[lookback,
/// features]`, then the future block) in, `[H·T]` out.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    layers: Vec<LayerPlan>,
    /// Values each layer writes, per sequence.
    widths: Vec<usize>,
    inputs: usize,
    /// Values of the past window at the start of the input.
    past: usize,
    /// Values per row of the window.
    row: usize,
    /// Where the row-wise part of a network that streams ends ([`streaming_end`]).
    stream_end: Option<usize>,
    outputs: usize,
    macs: usize,
    /// Every weight matrix is INT8 (decided once: the batch path asks on every block).
    int8: bool,
    isa: Isa,
}

/// Buffers a layer needs beyond its input and output.
#[derive(Debug, Clone)]
struct LayerScratch {
    gates_in: Aligned<f32>,
    gates_state: Aligned<f32>,
    /// An LSTM's hidden and cell state, `[2, unit, lane]`.
    state: Aligned<f32>,
    /// A TCN block's inner activations and residual, `[2, step, channel, lane]`.
    conv: Aligned<f32>,
    /// A convolution's gathered input rows `[K·C_in, lane]`, its single-sequence gather
    /// `[K·C_in]` and its eight output rows `[C_out, 8]`.
    conv_col: Aligned<f32>,
    conv_row: Aligned<f32>,
    conv_out: Aligned<f32>,
    /// An N-HiTS layer's residual, backcast, block input, hidden layers and knots.
    nhits: Aligned<f32>,
    /// A transformer block's normalized tokens, queries, keys, values, attention output,
    /// residual stream, feed-forward values and attention accumulators; an independent
    /// patch embedding's gathered token.
    attention: Aligned<f32>,
    /// A state-space block's work space for one step, and its carried state.
    ssm: Aligned<f32>,
    ssm_state: Aligned<f32>,
    /// A Mamba or S4D block's work space for a whole window of one sequence.
    ssm_rows: Aligned<f32>,
    quant: QuantScratch,
}

/// Buffers of one forward pass (single sample or one lane block), sized by the plan.
#[derive(Debug, Clone)]
pub struct NetworkScratch {
    a: Aligned<f32>,
    b: Aligned<f32>,
    layer: LayerScratch,
    lanes_in: Aligned<f32>,
    lanes_out: Aligned<f32>,
}

impl NetworkScratch {
    /// Bytes its buffers hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        let l = &self.layer;
        [
            &self.a,
            &self.b,
            &self.lanes_in,
            &self.lanes_out,
            &l.gates_in,
            &l.gates_state,
            &l.state,
            &l.conv,
            &l.conv_col,
            &l.conv_row,
            &l.conv_out,
            &l.nhits,
            &l.attention,
            &l.ssm,
            &l.ssm_state,
            &l.ssm_rows,
        ]
        .iter()
        .map(|buffer| buffer.heap_bytes())
        .sum::<usize>()
            + l.quant.heap_bytes()
    }
}

impl NetworkPlan {
    /// Lowers every layer of `config`'s network from the model file's tensors; with `int8`,
    /// every weight matrix must be INT8 (have a `<weight>.scale` tensor) and runs on the
    /// integer kernels.
    pub fn new(
        config: &ModelConfig,
        tensors: &[NamedTensor],
        int8: bool,
        isa: Isa,
    ) -> Result<Self, EngineError> {
        config.check_tensors(tensors)?;
        let nodes = config.layers()?;
        if nodes.is_empty() {
            return Err(EngineError::Model("this model kind has no network".into()));
        }
        let mut layers: Vec<LayerPlan> = nodes
            .iter()
            .map(|n| LayerPlan::lower(n, tensors, int8))
            .collect::<Result<_, _>>()?;
        let mut widths: Vec<usize> = nodes.iter().map(|n| n.output.len()).collect();
        if !int8 {
            fold_decompositions(&nodes, tensors, &mut layers, &mut widths)?;
        }
        let stream_end = streaming_end(&layers, config.features.len());
        Ok(Self {
            layers,
            widths,
            inputs: config.network_input_len(),
            past: config.network_rows() * config.features.len(),
            row: config.features.len(),
            stream_end,
            outputs: config.network_output_width(),
            macs: config.macs(),
            int8,
            isa,
        })
    }

    /// Whether the weights are INT8.
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// Bytes of weight storage the plan computes with, as a model file holds them: one per
    /// INT8 code plus two per f16 scale, or four per f32 weight (biases excluded).
    pub fn weight_bytes(&self) -> usize {
        self.dense_layers().iter().map(|d| d.weight_bytes()).sum()
    }

    fn dense_layers(&self) -> Vec<&Dense> {
        self.layers
            .iter()
            .flat_map(LayerPlan::dense_layers)
            .collect()
    }

    /// Output values per window.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Multiply–accumulate operations of one forward pass (from the model description).
    pub fn macs(&self) -> usize {
        self.macs
    }

    /// Buffers for [`NetworkPlan::forward`] and [`NetworkPlan::forward_lanes`].
    pub fn scratch(&self) -> NetworkScratch {
        let widest = self.widths.iter().copied().max().unwrap_or(0);
        // Each recurrent layer's gate values per step, and its steps.
        let recurrent = || {
            self.layers.iter().filter_map(|l| match l {
                LayerPlan::Gru(g) => Some((3 * g.hidden, g.steps)),
                LayerPlan::Lstm(l) => Some((4 * l.hidden, l.steps)),
                _ => None,
            })
        };
        let gates = recurrent().map(|(g, _)| g).max().unwrap_or(0);
        // One sequence holds every step's input products at once (`hoist_inputs`).
        let hoisted_gates = recurrent().map(|(g, steps)| g * steps).max().unwrap_or(0);
        let states = self
            .layers
            .iter()
            .map(|l| match l {
                LayerPlan::Lstm(l) => 2 * l.hidden,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let blocks = || {
            self.layers.iter().filter_map(|l| match l {
                LayerPlan::TcnBlock(b) => Some(b),
                _ => None,
            })
        };
        let convs = blocks()
            .map(|b| 2 * b.steps * b.conv1.c_out)
            .max()
            .unwrap_or(0);
        let conv_parts = || {
            blocks().flat_map(|b| {
                [Some(&b.conv1), Some(&b.conv2), b.down.as_ref()]
                    .into_iter()
                    .flatten()
            })
        };
        let conv_cols = conv_parts().map(|c| c.kernel * c.c_in).max().unwrap_or(0);
        let conv_outs = conv_parts().map(|c| c.c_out).max().unwrap_or(0);
        let nhits = self
            .layers
            .iter()
            .map(|l| match l {
                LayerPlan::Nhits(n) => n.scratch_len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let attention = self
            .layers
            .iter()
            .map(|l| match l {
                LayerPlan::TransformerBlock(b) => b.scratch_len(),
                LayerPlan::PatchEmbed {
                    dense: d,
                    independent: true,
                    ..
                } => d.inputs,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let ssm = self
            .layers
            .iter()
            .map(|l| l.ssm_lens().0)
            .max()
            .unwrap_or(0);
        let ssm_state = self
            .layers
            .iter()
            .map(|l| l.ssm_lens().1)
            .max()
            .unwrap_or(0);
        let ssm_rows = self
            .layers
            .iter()
            .map(|l| match l {
                LayerPlan::MambaBlock(b) => b.window_len(),
                LayerPlan::S4dBlock(b) => b.window_len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let dense = self.dense_layers();
        let widest_input = dense.iter().map(|d| d.inputs).max().unwrap_or(0);
        let tallest = dense.iter().map(|d| d.outputs).max().unwrap_or(0);
        NetworkScratch {
            a: Aligned::zeros(widest * LANES),
            b: Aligned::zeros(widest * LANES),
            layer: LayerScratch {
                gates_in: Aligned::zeros((gates * LANES).max(hoisted_gates)),
                gates_state: Aligned::zeros(gates * LANES),
                state: Aligned::zeros(states * LANES),
                conv: Aligned::zeros(convs * LANES),
                conv_col: Aligned::zeros(conv_cols * LANES),
                conv_row: Aligned::zeros(conv_cols),
                conv_out: Aligned::zeros(conv_outs * LANES),
                nhits: Aligned::zeros(nhits * LANES),
                attention: Aligned::zeros(attention * LANES),
                ssm: Aligned::zeros(ssm * LANES),
                ssm_state: Aligned::zeros(ssm_state * LANES),
                ssm_rows: Aligned::zeros(ssm_rows),
                quant: QuantScratch::new(widest_input, tallest),
            },
            lanes_in: Aligned::zeros(self.inputs * LANES),
            lanes_out: Aligned::zeros(self.outputs * LANES),
        }
    }

    /// One normalized model input → `out` `[H·T]`. No allocation.
    pub fn forward(&self, window: &[f32], out: &mut [f32], scratch: &mut NetworkScratch) {
        assert_eq!(window.len(), self.inputs, "window shape");
        assert_eq!(out.len(), self.outputs, "output shape");
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2Fma` is only chosen when the CPU reports AVX2 and FMA.
            Isa::Avx2Fma => unsafe { forward_avx2::<Single>(self, window, out, scratch) },
            _ => forward_stack::<Portable, Single>(self, window, out, scratch),
        }
    }

    /// Up to `LANES` normalized model inputs (`[n, input]`, n ≤ LANES) → `out`
    /// `[n, H·T]`, advancing all sequences together so each weight is loaded once per step:
    /// in one register's lanes up to [`VECTOR`] windows, in two beyond. Each window gets
    /// the same bits either way.
    pub fn forward_lanes(&self, windows: &[f32], out: &mut [f32], scratch: &mut NetworkScratch) {
        let per = self.inputs;
        let n = windows.len() / per;
        assert!(n <= LANES && windows.len() == n * per, "lane block shape");
        assert_eq!(out.len(), n * self.outputs, "output shape");
        if self.is_int8() {
            // The integer kernels run one window at a time.
            for (w, o) in windows
                .chunks_exact(per)
                .zip(out.chunks_exact_mut(self.outputs))
            {
                self.forward(w, o, scratch);
            }
        } else if n <= VECTOR {
            self.forward_width::<Lanes<VECTOR>>(windows, out, scratch);
        } else {
            self.forward_width::<Lanes<LANES>>(windows, out, scratch);
        }
    }

    /// [`NetworkPlan::forward_lanes`] on `W::N` lanes.
    fn forward_width<W: Width>(
        &self,
        windows: &[f32],
        out: &mut [f32],
        scratch: &mut NetworkScratch,
    ) {
        let (per, lanes) = (self.inputs, W::N);
        // Transpose to [value, lane]; unused lanes are zero windows.
        let mut lanes_in = std::mem::take(&mut scratch.lanes_in);
        let mut lanes_out = std::mem::take(&mut scratch.lanes_out);
        let (input, output) = (
            &mut lanes_in[..per * lanes],
            &mut lanes_out[..self.outputs * lanes],
        );
        input.fill(0.0);
        for (l, w) in windows.chunks_exact(per).enumerate() {
            for (i, &v) in w.iter().enumerate() {
                input[i * lanes + l] = v;
            }
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `forward`.
            Isa::Avx2Fma => unsafe { forward_avx2::<W>(self, input, output, scratch) },
            _ => forward_stack::<Portable, W>(self, input, output, scratch),
        }
        for (l, o) in out.chunks_exact_mut(self.outputs).enumerate() {
            for (k, v) in o.iter_mut().enumerate() {
                *v = output[k * lanes + l];
            }
        }
        scratch.lanes_in = lanes_in;
        scratch.lanes_out = lanes_out;
    }
}

/// Where the row-wise part of a network ends: the index of its `LastStep` when every layer
/// before it reads one row at a time (a one-row embedding, RMSNorm, S4D and Mamba blocks), so
/// that the network can stream; `None` otherwise (recurrent layers that are not state-space
/// blocks, convolutions, attention and window-wide maps).
fn streaming_end(layers: &[LayerPlan], row: usize) -> Option<usize> {
    let end = layers
        .iter()
        .position(|l| matches!(l, LayerPlan::LastStep))?;
    layers[..end]
        .iter()
        .all(|l| match l {
            LayerPlan::PatchEmbed {
                dense: d,
                independent: false,
                ..
            } => d.inputs == row,
            LayerPlan::RmsNorm { .. } | LayerPlan::Activation(_) => true,
            LayerPlan::S4dBlock(_) | LayerPlan::MambaBlock(_) => true,
            _ => false,
        })
        .then_some(end)
}

/// A network's carried state for streaming one row at a time ([`NetworkPlan::stream`]):
/// each state-space block's state and the buffers of one step. Its size does not depend on
/// how many rows have been pushed nor on the lookback.
#[derive(Debug, Clone)]
pub struct NetworkStream {
    states: Vec<Aligned<f32>>,
    scratch: NetworkScratch,
}

impl NetworkStream {
    /// Bytes its buffers hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.scratch.heap_bytes() + self.states.iter().map(|s| s.heap_bytes()).sum::<usize>()
    }

    /// Back to the state before the first row.
    pub fn reset(&mut self) {
        self.states.iter_mut().for_each(|s| s.fill(0.0));
    }
}

impl NetworkPlan {
    /// Where the row-wise part of the network ends, if it streams ([`streaming_end`]).
    fn streaming_end(&self) -> Option<usize> {
        self.stream_end
    }

    /// Values layer `i` writes per streamed row: one row of a row-wise layer, the whole
    /// output of a layer after the last row.
    fn stream_width(&self, i: usize) -> usize {
        match self.streaming_end() {
            Some(end) if i < end => self.widths[i] / (self.past / self.row.max(1)).max(1),
            _ => self.widths[i],
        }
    }

    /// Whether the network streams (see [`NetworkPlan::stream`]).
    pub fn streams(&self) -> bool {
        self.streaming_end().is_some() && !self.int8
    }

    /// A stream at its first row, for networks whose layers before the last row are
    /// state-space blocks and row-wise maps (S4D, Mamba): each push then costs one step of
    /// every block, O(1) in the rows seen and in the lookback.
    pub fn stream(&self) -> Result<NetworkStream, EngineError> {
        if !self.streams() {
            return Err(EngineError::Model(
                "only f32 S4D and Mamba networks stream (their layers read one row at a time); run this network on windows".into(),
            ));
        }
        let states = self
            .layers
            .iter()
            .map(|l| Aligned::zeros(l.ssm_lens().1))
            .collect();
        // One row of one sequence at a time: buffers of a row's width, not a window's, and
        // one lane.
        let widest = (0..self.layers.len())
            .map(|i| self.stream_width(i))
            .max()
            .unwrap_or(0);
        let mut scratch = self.scratch();
        scratch.a = Aligned::zeros(widest);
        scratch.b = Aligned::zeros(widest);
        scratch.lanes_in = Aligned::default();
        scratch.lanes_out = Aligned::default();
        let work = self
            .layers
            .iter()
            .map(|l| l.ssm_lens().0)
            .max()
            .unwrap_or(0);
        scratch.layer.ssm = Aligned::zeros(work);
        scratch.layer.ssm_state = Aligned::default();
        scratch.layer.ssm_rows = Aligned::default();
        Ok(NetworkStream { states, scratch })
    }

    /// Pushes one normalized row (`[features]`) into `stream` and writes the network output
    /// `[H·T]` for the window that ends at this row with the future block `future` (its
    /// normalized values, empty without future inputs). After exactly `lookback` rows from
    /// the start (or a [`NetworkStream::reset`]) this equals [`NetworkPlan::forward`] on
    /// those rows; later rows carry every earlier one in their state. No allocation.
    pub fn stream_push(
        &self,
        stream: &mut NetworkStream,
        row: &[f32],
        future: &[f32],
        out: &mut [f32],
    ) {
        assert_eq!(row.len(), self.row, "row shape");
        assert_eq!(future.len(), self.inputs - self.past, "future shape");
        assert_eq!(out.len(), self.outputs, "output shape");
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `forward`.
            Isa::Avx2Fma => unsafe { stream_avx2(self, stream, row, future, out) },
            _ => stream_stack::<Portable>(self, stream, row, future, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn stream_avx2(
    plan: &NetworkPlan,
    stream: &mut NetworkStream,
    row: &[f32],
    future: &[f32],
    out: &mut [f32],
) {
    stream_stack::<crate::kernels::Avx2>(plan, stream, row, future, out);
}

/// One streamed row through the stack: the row-wise layers (state-space blocks stepping
/// their carried state), then, from the last row on, the layers that read its vector.
#[inline(always)]
fn stream_stack<K: Kernels>(
    plan: &NetworkPlan,
    stream: &mut NetworkStream,
    row: &[f32],
    future: &[f32],
    out: &mut [f32],
) {
    let Some(end) = plan.streaming_end() else {
        return;
    };
    let s = &mut stream.scratch;
    let (mut x, mut y) = (&mut s.a, &mut s.b);
    x[..row.len()].copy_from_slice(row);
    let mut len = row.len();
    let last = plan.layers.len() - 1;
    for (i, layer) in plan.layers.iter().enumerate() {
        if i == end {
            // The last row is the current one: already in `x`.
            continue;
        }
        let width = plan.stream_width(i);
        if i == last {
            layer.forward::<K, Single>(&x[..len], future, out, &mut s.layer);
            return;
        }
        let target = &mut y[..width];
        let (state, work, quant) = (&mut stream.states[i], &mut s.layer.ssm, &mut s.layer.quant);
        match layer {
            LayerPlan::S4dBlock(b) => b.step::<K, Single>(&x[..len], target, state, work, quant),
            LayerPlan::MambaBlock(b) => b.step::<K, Single>(&x[..len], target, state, work, quant),
            _ => layer.forward::<K, Single>(&x[..len], future, target, &mut s.layer),
        }
        std::mem::swap(&mut x, &mut y);
        len = width;
    }
}

/// The INT8 row scales stored beside `weight` when the plan is INT8 (`None` for f32).
fn scales_of<'a>(
    tensors: &'a [NamedTensor],
    weight: &str,
    int8: bool,
) -> Result<Option<&'a NamedTensor>, EngineError> {
    int8.then(|| tensor(tensors, &format!("{weight}{}", tns_format::SCALE_SUFFIX)))
        .transpose()
}

fn tensor<'a>(tensors: &'a [NamedTensor], name: &str) -> Result<&'a NamedTensor, EngineError> {
    tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| tns_model::ConfigError::MissingTensor(name.to_string()).into())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2<W: Width>(
    plan: &NetworkPlan,
    input: &[f32],
    out: &mut [f32],
    scratch: &mut NetworkScratch,
) {
    forward_stack::<crate::kernels::Avx2, W>(plan, input, out, scratch);
}

/// Where a layer's input lies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Input,
    A,
    B,
}

/// Runs the stack for `W::N` sequences: each layer reads the previous layer's output and
/// writes into the other of two buffers; the last layer writes into `out`.
#[inline(always)]
fn forward_stack<K: Kernels, W: Width>(
    plan: &NetworkPlan,
    input: &[f32],
    out: &mut [f32],
    s: &mut NetworkScratch,
) {
    let mut source = Source::Input;
    // The window comes first; layers read the future block only through `ConcatFuture`.
    let (input, future) = input.split_at(plan.past * W::N);
    let mut len = input.len();
    let last = plan.layers.len() - 1;
    for (i, (layer, &width)) in plan.layers.iter().zip(&plan.widths).enumerate() {
        if matches!(layer, LayerPlan::Flatten) && i != last {
            continue;
        }
        let width = width * W::N;
        let (x, y): (&[f32], &mut [f32]) = if i == last {
            let x = match source {
                Source::Input => input,
                Source::A => &s.a[..len],
                Source::B => &s.b[..len],
            };
            (x, out)
        } else {
            match source {
                Source::Input => {
                    source = Source::A;
                    (input, &mut s.a[..width])
                }
                Source::A => {
                    source = Source::B;
                    (&s.a[..len], &mut s.b[..width])
                }
                Source::B => {
                    source = Source::A;
                    (&s.b[..len], &mut s.a[..width])
                }
            }
        };
        layer.forward::<K, W>(x, future, y, &mut s.layer);
        len = width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_model::ModelKind;

    /// Deterministic tensors for `config`'s network, each drawn within its initialization's
    /// range (no training library here).
    fn initialized(config: &ModelConfig) -> Vec<NamedTensor> {
        config
            .layers()
            .unwrap()
            .iter()
            .flat_map(LayerNode::params)
            .enumerate()
            .map(|(k, p)| {
                let n: usize = p.shape.iter().product();
                let wave = |i: usize| (((i * 37 + k * 11) % 29) as f32 - 14.0) / 14.0;
                let states = p.shape.last().copied().unwrap_or(1);
                let data = (0..n)
                    .map(|i| match p.init {
                        tns_model::Init::Uniform(b) => b * wave(i),
                        tns_model::Init::One => 1.0,
                        tns_model::Init::LogUniform(lo, hi) => {
                            lo.ln() + (hi.ln() - lo.ln()) * (0.5 + 0.5 * wave(i))
                        }
                        tns_model::Init::S4dReal => ((i % states) as f32 + 1.0).ln(),
                        tns_model::Init::SoftplusInverseLogUniform(..) => {
                            tns_model::mamba::softplus_inverse(
                                0.01 + 0.05 * f64::from(wave(i).abs()),
                            ) as f32
                        }
                    })
                    .collect();
                NamedTensor {
                    name: p.name,
                    shape: p.shape,
                    data,
                }
            })
            .collect()
    }

    fn streaming_config(network: &str, lookback: usize, future: bool) -> ModelConfig {
        let columns = ["a", "b", "c"];
        let mut config = ModelConfig::new(
            "s",
            ModelKind::SystemA,
            &columns,
            &columns[..2],
            lookback,
            2,
            1,
        );
        config.network = Some(network.parse().unwrap());
        if future {
            config.future = Some(tns_model::FutureInputs {
                columns: vec!["c".into()],
                calendar: None,
            });
        }
        config
    }

    #[test]
    fn a_streamed_state_space_network_equals_the_window_it_has_seen() {
        for network in ["s4d:6,4,2", "mamba:6,4,2,3,2", "mamba:5,2,1,1,1"] {
            for future in [false, true] {
                let config = streaming_config(network, 12, future);
                let tensors = initialized(&config);
                for isa in [Isa::Portable, Isa::detect()] {
                    let plan = NetworkPlan::new(&config, &tensors, false, isa).unwrap();
                    assert!(plan.streams());
                    let rows: Vec<f32> = (0..plan.past)
                        .map(|i| ((i * 13 % 17) as f32 - 8.0) / 6.0)
                        .collect();
                    let fut: Vec<f32> = (0..plan.inputs - plan.past)
                        .map(|i| (i as f32 - 1.0) / 3.0)
                        .collect();
                    let mut window = rows.clone();
                    window.extend_from_slice(&fut);
                    let mut expected = vec![0.0; plan.outputs()];
                    plan.forward(&window, &mut expected, &mut plan.scratch());
                    let mut stream = plan.stream().unwrap();
                    let mut got = vec![0.0; plan.outputs()];
                    for row in rows.chunks_exact(3) {
                        plan.stream_push(&mut stream, row, &fut, &mut got);
                    }
                    assert_eq!(got, expected, "{network} future {future} on {isa:?}");
                    // A reset starts over: the same rows give the same output again.
                    stream.reset();
                    for row in rows.chunks_exact(3) {
                        plan.stream_push(&mut stream, row, &fut, &mut got);
                    }
                    assert_eq!(got, expected, "{network} after a reset");
                }
            }
        }
    }

    #[test]
    fn sixteen_lanes_give_each_window_the_bits_of_eight() {
        let networks = [
            "gru:6",
            "lstm:5",
            "mlp:7,5",
            "tcn:4,2,3",
            "transformer:8,2,1,1",
            "transformer:8,2,2,1,4",
            "s4d:6,4,2",
            "mamba:6,4,2,3,2",
            "nhits:2,1,6,1",
        ];
        for network in networks {
            for future in [false, true] {
                let config = streaming_config(network, 12, future);
                let tensors = initialized(&config);
                for isa in [Isa::Portable, Isa::detect()] {
                    let plan = NetworkPlan::new(&config, &tensors, false, isa).unwrap();
                    let mut scratch = plan.scratch();
                    let windows: Vec<f32> = (0..LANES * plan.inputs)
                        .map(|i| ((i * 13 % 31) as f32 - 15.0) / 9.0)
                        .collect();
                    let mut sixteen = vec![f32::NAN; LANES * plan.outputs()];
                    plan.forward_lanes(&windows, &mut sixteen, &mut scratch);
                    let mut eights = vec![f32::NAN; LANES * plan.outputs()];
                    for (w, o) in windows
                        .chunks_exact(VECTOR * plan.inputs)
                        .zip(eights.chunks_exact_mut(VECTOR * plan.outputs()))
                    {
                        plan.forward_lanes(w, o, &mut scratch);
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&sixteen),
                        bits(&eights),
                        "{network} future {future} on {isa:?}"
                    );
                    assert!(sixteen.iter().all(|v| v.is_finite()), "{network}");
                }
            }
        }
    }

    /// The single-sequence path has code of its own (the fused GRU recurrence of 16 to 64
    /// units and the LSTM's of 16 to 48, channel blocks of 32, 8 and 1 in the state-space
    /// blocks, 512-bit products from 64 rows, grouped queries): each window must get the bits
    /// its lane of the batch path gives it.
    #[test]
    fn a_single_window_gets_the_bits_of_its_lane() {
        let networks = [
            "gru:40",
            "gru:64",
            "gru:48",
            "gru:32",
            "gru:16",
            "lstm:32",
            "lstm:16,2",
            "lstm:48",
            "s4d:40,4,1",
            "s4d:35,3,1",
            "mamba:33,4,2,3,1",
            "transformer:32,4,2,1",
            "transformer:16,2,1,1,2,flatten,independent",
        ];
        for network in networks {
            let config = streaming_config(network, 12, false);
            let tensors = initialized(&config);
            for isa in [Isa::Portable, Isa::detect()] {
                let plan = NetworkPlan::new(&config, &tensors, false, isa).unwrap();
                let mut scratch = plan.scratch();
                let windows: Vec<f32> = (0..VECTOR * plan.inputs)
                    .map(|i| ((i * 13 % 31) as f32 - 15.0) / 9.0)
                    .collect();
                let mut lanes = vec![f32::NAN; VECTOR * plan.outputs()];
                plan.forward_lanes(&windows, &mut lanes, &mut scratch);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for (window, want) in windows
                    .chunks_exact(plan.inputs)
                    .zip(lanes.chunks_exact(plan.outputs()))
                {
                    let mut got = vec![f32::NAN; plan.outputs()];
                    plan.forward(window, &mut got, &mut scratch);
                    assert_eq!(bits(&got), bits(want), "{network} on {isa:?}");
                }
            }
        }
    }

    #[test]
    fn a_stream_holds_the_same_state_whatever_the_lookback() {
        for network in ["s4d:6,4,2", "mamba:6,4,2,3,2"] {
            let bytes = |lookback: usize| {
                let config = streaming_config(network, lookback, false);
                let plan =
                    NetworkPlan::new(&config, &initialized(&config), false, Isa::Portable).unwrap();
                plan.stream()
                    .unwrap()
                    .states
                    .iter()
                    .map(|state| state.len())
                    .sum::<usize>()
            };
            assert_eq!(bytes(8), bytes(800), "{network}");
        }
        // Networks that read the whole window do not stream.
        for network in ["gru:4", "transformer:8,2,1,1", "mlp:8", "tcn:4,2,3"] {
            let config = streaming_config(network, 12, false);
            let plan =
                NetworkPlan::new(&config, &initialized(&config), false, Isa::Portable).unwrap();
            assert!(plan.stream().is_err(), "{network}");
        }
    }

    /// The tensors of `nhits:2,1,6,1` over windows `[3, 1]`, horizon 2: block 0 passes the
    /// window through its MLP as `(x⁺, x⁻)` and backcasts `x⁺ − x⁻ = x` exactly, forecasting
    /// its bias 0.5; block 1 has arbitrary weights. `backcast` scales block 0's backcast.
    fn constructed(backcast: f32) -> (ModelConfig, Vec<NamedTensor>) {
        let mut config = ModelConfig::new("n", ModelKind::SystemA, &["y"], &["y"], 3, 2, 1);
        config.network = Some("nhits:2,1,6,1".parse().unwrap());
        let mut tensors = Vec::new();
        let mut add = |name: &str, shape: Vec<usize>, f: &dyn Fn(usize, usize) -> f32| {
            let cols = shape.get(1).copied().unwrap_or(1);
            let data = (0..shape.iter().product::<usize>())
                .map(|i| f(i / cols, i % cols))
                .collect();
            tensors.push(NamedTensor {
                name: name.into(),
                shape,
                data,
            });
        };
        let eye = |r: usize, c: usize| f32::from(u8::from(r == c));
        add("nhits.0.mlp.0.weight", vec![6, 3], &|r, c| {
            if r < 3 { eye(r, c) } else { -eye(r - 3, c) }
        });
        add("nhits.0.mlp.0.bias", vec![6], &|_, _| 0.0);
        add("nhits.0.mlp.1.weight", vec![6, 6], &eye);
        add("nhits.0.mlp.1.bias", vec![6], &|_, _| 0.0);
        add("nhits.0.backcast.weight", vec![3, 6], &|r, c| {
            backcast * if c < 3 { eye(r, c) } else { -eye(r, c - 3) }
        });
        add("nhits.0.backcast.bias", vec![3], &|_, _| 0.0);
        add("nhits.0.forecast.weight", vec![2, 6], &|_, _| 0.0);
        add("nhits.0.forecast.bias", vec![2], &|_, _| 0.5);
        let arbitrary = |r: usize, c: usize| ((r * 7 + c * 3) % 5) as f32 * 0.3 - 0.5;
        add("nhits.1.mlp.0.weight", vec![6, 3], &arbitrary);
        add("nhits.1.mlp.0.bias", vec![6], &|r, _| 0.1 * r as f32);
        add("nhits.1.mlp.1.weight", vec![6, 6], &arbitrary);
        add("nhits.1.mlp.1.bias", vec![6], &|r, _| 0.2 - 0.05 * r as f32);
        add("nhits.1.forecast.weight", vec![2, 6], &arbitrary);
        add("nhits.1.forecast.bias", vec![2], &|r, _| r as f32);
        (config, tensors)
    }

    #[test]
    fn a_query_group_softmax_gives_each_query_the_bits_it_has_alone() {
        use rand::{Rng, SeedableRng};
        // Four queries' blocks in phases against each query through the same steps alone,
        // over 70 keys (blocks of 32, 32 and 6) and a head of 8.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (tokens, head) = (70, 8);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-3.0..3.0)).collect() };
        let (queries, keys) = (draw(QUERY_GROUP * head), draw(head * tokens));
        // A block's step: (first key, scores, maxima, sums, value sums).
        type Step<'a> = dyn FnMut(usize, &mut [f32], &mut [f32], &mut [f32], &mut [f32]) + 'a;
        let run = |group: &mut Step| {
            let mut scores = vec![0f32; QUERY_GROUP * KEY_BLOCK];
            let (mut max, mut sum) = ([f32::NEG_INFINITY; QUERY_GROUP], [0f32; QUERY_GROUP]);
            let mut acc = vec![1f32; QUERY_GROUP * head];
            let mut weights = Vec::new();
            for first in (0..tokens).step_by(KEY_BLOCK) {
                group(first, &mut scores, &mut max, &mut sum, &mut acc);
                weights.extend_from_slice(&scores);
            }
            (weights, max, sum, acc)
        };
        let together = run(&mut |first, scores, max, sum, acc| {
            let len = KEY_BLOCK.min(tokens - first);
            let queries: [&[f32]; QUERY_GROUP] =
                std::array::from_fn(|g| &queries[g * head..(g + 1) * head]);
            let (max, sum): (&mut [f32; QUERY_GROUP], &mut [f32; QUERY_GROUP]) =
                (max.try_into().unwrap(), sum.try_into().unwrap());
            let keys = (&keys[..], tokens, first);
            softmax_blocks::<Portable, QUERY_GROUP>(
                queries,
                keys,
                scores,
                len,
                0.3,
                (max, sum),
                acc,
            );
        });
        let alone = run(&mut |first, scores, max, sum, acc| {
            let len = KEY_BLOCK.min(tokens - first);
            for g in 0..QUERY_GROUP {
                let (mut m, mut s) = ([max[g]], [sum[g]]);
                let query = [&queries[g * head..(g + 1) * head]];
                let block = &mut scores[g * KEY_BLOCK..(g + 1) * KEY_BLOCK];
                let acc = &mut acc[g * head..(g + 1) * head];
                let keys = (&keys[..], tokens, first);
                softmax_blocks::<Portable, 1>(query, keys, block, len, 0.3, (&mut m, &mut s), acc);
                (max[g], sum[g]) = (m[0], s[0]);
            }
        });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&together.0), bits(&alone.0), "weights");
        assert_eq!(bits(&together.1), bits(&alone.1), "maxima");
        assert_eq!(bits(&together.2), bits(&alone.2), "sums");
        assert_eq!(bits(&together.3), bits(&alone.3), "value sums");
    }

    #[test]
    fn online_softmax_attention_matches_the_naive_formula() {
        use rand::{Rng, SeedableRng};
        // softmax(q kᵀ / √d) v the naive way in f64 (the whole score matrix, then each row's
        // softmax and weighted sum) against the one-pass kernel in f32, for grouped heads,
        // several sequences and up to 512 tokens.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for ((tokens, heads, kv_heads, head, lanes, spread), causal) in [
            (1, 1, 1, 2, 1, 1.0),
            (7, 4, 2, 4, 3, 1.0),
            (33, 2, 1, 8, 8, 2.0),
            (512, 2, 2, 4, 1, 3.0),
            // Heads of 16 (held in registers) and of 6 (the general loop), over several
            // blocks of keys.
            (70, 2, 1, 16, 2, 1.0),
            (70, 3, 3, 6, 1, 1.0),
        ]
        .into_iter()
        .flat_map(|case| [(case, false), (case, true)])
        {
            let (d, kv) = (heads * head, kv_heads * head);
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-spread..spread)).collect()
            };
            let (q, k, v) = (
                draw(tokens * d * lanes),
                draw(tokens * kv * lanes),
                draw(tokens * kv * lanes),
            );
            let mut out = vec![0f32; tokens * d * lanes];
            let mut scratch = vec![0f32; attention_scratch_len(tokens, head)];
            // Each lane is a sequence of its own here: `[lane, token, value]`.
            for lane in 0..lanes {
                let (a, b) = (lane * tokens * d, lane * tokens * kv);
                attention_online::<Portable>(
                    &q[a..a + tokens * d],
                    &k[b..b + tokens * kv],
                    &v[b..b + tokens * kv],
                    (heads, kv_heads, head),
                    causal,
                    &mut out[a..a + tokens * d],
                    &mut scratch,
                );
            }
            let group = heads / kv_heads;
            let get = |x: &[f32], width: usize, t: usize, i: usize, lane: usize| {
                f64::from(x[(lane * tokens + t) * width + i])
            };
            let mut worst = 0f64;
            for lane in 0..lanes {
                for h in 0..heads {
                    let g = h / group;
                    for i in 0..tokens {
                        // Causal: the keys after the query take no part.
                        let visible = if causal { i + 1 } else { tokens };
                        let scores: Vec<f64> = (0..visible)
                            .map(|j| {
                                let dot = (0..head)
                                    .map(|c| {
                                        get(&q, d, i, h * head + c, lane)
                                            * get(&k, kv, j, g * head + c, lane)
                                    })
                                    .sum::<f64>();
                                dot / (head as f64).sqrt()
                            })
                            .collect();
                        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                        let total: f64 = weights.iter().sum();
                        for c in 0..head {
                            let naive: f64 = (0..visible)
                                .map(|j| weights[j] / total * get(&v, kv, j, g * head + c, lane))
                                .sum();
                            let got = get(&out, d, i, h * head + c, lane);
                            worst = worst.max((naive - got).abs() / naive.abs().max(1.0));
                        }
                    }
                }
            }
            assert!(
                worst < 1e-6 * spread.max(1.0) as f64,
                "{tokens} tokens, causal {causal}: {worst}"
            );
            assert!(out.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn nhits_blocks_read_the_residual_their_predecessors_leave() {
        let run = |backcast: f32, window: [f32; 3], isa: Isa| {
            let (config, tensors) = constructed(backcast);
            let plan = NetworkPlan::new(&config, &tensors, false, isa).unwrap();
            let mut out = [0f32; 2];
            plan.forward(&window, &mut out, &mut plan.scratch());
            let mut lanes = [0f32; 4];
            let two = [window, [0.0; 3]].concat();
            plan.forward_lanes(&two, &mut lanes, &mut plan.scratch());
            assert_eq!(lanes[..2], out, "lane path");
            out
        };
        for isa in [Isa::Portable, Isa::detect()] {
            // Block 0 removes the whole window: block 1 sees zeros, so the output is the
            // same for every window, and equals block 0's 0.5 plus block 1 on a zero input.
            let a = run(1.0, [1.0, -2.0, 3.0], isa);
            let b = run(1.0, [-4.0, 0.5, 2.0], isa);
            assert_eq!(a, b);
            let h0: Vec<f32> = (0..6).map(|r| (0.1 * r as f32).max(0.0)).collect();
            let arbitrary = |r: usize, c: usize| ((r * 7 + c * 3) % 5) as f32 * 0.3 - 0.5;
            let h1: Vec<f32> = (0..6)
                .map(|r| {
                    let v: f32 = (0..6).map(|c| arbitrary(r, c) * h0[c]).sum();
                    (v + 0.2 - 0.05 * r as f32).max(0.0)
                })
                .collect();
            for (t, &got) in a.iter().enumerate() {
                let knot: f32 = (0..6).map(|c| arbitrary(t, c) * h1[c]).sum::<f32>() + t as f32;
                assert!((got - (0.5 + knot)).abs() < 1e-5, "step {t}: {got}");
            }
            // Without the backcast, block 1 reads the window itself and the output moves.
            assert_ne!(
                run(0.0, [1.0, -2.0, 3.0], isa),
                run(0.0, [-4.0, 0.5, 2.0], isa)
            );
        }
    }
}

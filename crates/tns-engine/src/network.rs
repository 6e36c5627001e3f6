//! The frozen networks: weights packed once for the kernels, forward passes that write into
//! caller-owned scratch, and the batch forward that advances `LANES` sequences per step.

use tns_format::{ModelConfig, NamedTensor, NetworkConfig, SCALE_SUFFIX};

use crate::EngineError;
use crate::int8::{QDense, QuantScratch};
use crate::kernels::{Isa, Kernels, LANES, Portable, sigmoid, tanh};

/// A dense layer `y = W x + b`, packed both ways: column by column for the single-sample
/// product and row-major for the lane-blocked batch product; or, for INT8 models, packed
/// for the integer product.
#[derive(Debug, Clone)]
struct Dense {
    inputs: usize,
    outputs: usize,
    columns: Vec<f32>,
    rows: Vec<f32>,
    bias: Vec<f32>,
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
                columns: Vec::new(),
                rows: Vec::new(),
                bias: bias.data.clone(),
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
            rows: weight.data.clone(),
            bias: bias.data.clone(),
            int8: None,
        })
    }

    #[inline(always)]
    fn forward<K: Kernels>(&self, x: &[f32], y: &mut [f32], q: &mut QuantScratch) {
        match &self.int8 {
            Some(int8) => int8.forward::<K>(x, y, q),
            None => K::gemv(&self.columns, x, &self.bias, y),
        }
    }

    #[inline(always)]
    fn forward_lanes<K: Kernels>(&self, xs: &[f32], ys: &mut [f32]) {
        for (y, &b) in ys.chunks_exact_mut(LANES).zip(&self.bias) {
            y.fill(b);
        }
        K::gemm_lanes_acc(&self.rows, xs, ys);
    }
}

#[derive(Debug, Clone)]
enum Layers {
    Linear(Dense),
    Mlp(Vec<Dense>),
    Gru {
        hidden: usize,
        input: Dense,
        recurrent: Dense,
        head: Dense,
    },
}

/// A network ready to run: `[lookback, features]` normalized f32 in, `[H·T]` out.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    layers: Layers,
    lookback: usize,
    features: usize,
    outputs: usize,
    /// Every weight matrix is INT8 (decided once: the batch path asks on every block).
    int8: bool,
    isa: Isa,
}

/// Buffers of one forward pass (single sample or one lane block), sized by the plan.
#[derive(Debug, Clone)]
pub struct NetworkScratch {
    a: Vec<f32>,
    b: Vec<f32>,
    state: Vec<f32>,
    lanes_in: Vec<f32>,
    lanes_out: Vec<f32>,
    quant: QuantScratch,
}

impl NetworkPlan {
    /// Packs the weights of `config`'s network from the model file's tensors; with `int8`,
    /// every weight matrix must be INT8 (have a `<weight>.scale` tensor) and runs on the
    /// integer kernels.
    pub fn new(
        config: &ModelConfig,
        tensors: &[NamedTensor],
        int8: bool,
        isa: Isa,
    ) -> Result<Self, EngineError> {
        let layout = config.tensor_layout();
        for (name, shape) in &layout {
            let t = tensor(tensors, name)?;
            if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
                return Err(EngineError::Model(format!(
                    "tensor {name:?} has shape {:?}, the config needs {shape:?}",
                    t.shape
                )));
            }
        }
        let layer = |weight: &str, bias: &str| -> Result<Dense, EngineError> {
            let scales = int8
                .then(|| tensor(tensors, &format!("{weight}{SCALE_SUFFIX}")))
                .transpose()?;
            Dense::new(tensor(tensors, weight)?, tensor(tensors, bias)?, scales)
        };
        let dense = |prefix: &str| layer(&format!("{prefix}.weight"), &format!("{prefix}.bias"));
        let layers = match &config.network {
            Some(NetworkConfig::Linear) => Layers::Linear(dense("linear")?),
            Some(NetworkConfig::Mlp { hidden }) => Layers::Mlp(
                (0..=hidden.len())
                    .map(|i| dense(&format!("mlp.{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Some(NetworkConfig::Gru { hidden }) => Layers::Gru {
                hidden: *hidden,
                input: layer("gru.weight_ih_l0", "gru.bias_ih_l0")?,
                recurrent: layer("gru.weight_hh_l0", "gru.bias_hh_l0")?,
                head: dense("head")?,
            },
            None => return Err(EngineError::Model("this model kind has no network".into())),
        };
        Ok(Self {
            layers,
            lookback: config.lookback,
            features: config.input_width(),
            outputs: config.output_width(),
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
        self.dense_layers()
            .iter()
            .map(|d| match &d.int8 {
                Some(q) => q.code_bytes() + 2 * d.outputs,
                None => 4 * d.inputs * d.outputs,
            })
            .sum()
    }

    fn dense_layers(&self) -> Vec<&Dense> {
        match &self.layers {
            Layers::Linear(d) => vec![d],
            Layers::Mlp(layers) => layers.iter().collect(),
            Layers::Gru {
                input,
                recurrent,
                head,
                ..
            } => vec![input, recurrent, head],
        }
    }

    /// Output values per window.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Multiply–accumulate operations of one forward pass (for throughput figures).
    pub fn macs(&self) -> usize {
        match &self.layers {
            Layers::Linear(d) => d.inputs * d.outputs,
            Layers::Mlp(layers) => layers.iter().map(|d| d.inputs * d.outputs).sum(),
            Layers::Gru {
                input,
                recurrent,
                head,
                ..
            } => {
                self.lookback
                    * (input.inputs * input.outputs + recurrent.inputs * recurrent.outputs)
                    + head.inputs * head.outputs
            }
        }
    }

    /// Buffers for [`NetworkPlan::forward`] and [`NetworkPlan::forward_lanes`].
    pub fn scratch(&self) -> NetworkScratch {
        let widest = match &self.layers {
            Layers::Linear(d) => d.outputs,
            Layers::Mlp(layers) => layers.iter().map(|d| d.outputs).max().unwrap_or(0),
            Layers::Gru { recurrent, .. } => recurrent.outputs,
        };
        let state = match &self.layers {
            Layers::Gru { hidden, .. } => *hidden,
            _ => 0,
        };
        let dense = self.dense_layers();
        let widest_input = dense.iter().map(|d| d.inputs).max().unwrap_or(0);
        let tallest = dense.iter().map(|d| d.outputs).max().unwrap_or(0);
        NetworkScratch {
            quant: QuantScratch::new(widest_input, tallest),
            a: vec![0.0; widest * LANES],
            b: vec![0.0; widest * LANES],
            state: vec![0.0; state * LANES],
            lanes_in: vec![0.0; self.lookback * self.features * LANES],
            lanes_out: vec![0.0; self.outputs * LANES],
        }
    }

    /// One normalized window `[lookback, features]` → `out` `[H·T]`. No allocation.
    pub fn forward(&self, window: &[f32], out: &mut [f32], scratch: &mut NetworkScratch) {
        assert_eq!(window.len(), self.lookback * self.features, "window shape");
        assert_eq!(out.len(), self.outputs, "output shape");
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2Fma` is only chosen when the CPU reports AVX2 and FMA.
            Isa::Avx2Fma => unsafe { forward_avx2(self, window, out, scratch) },
            _ => forward_generic::<Portable>(self, window, out, scratch),
        }
    }

    /// Up to `LANES` normalized windows (`[n, lookback, features]`, n ≤ LANES) → `out`
    /// `[n, H·T]`, advancing all sequences together so each weight is loaded once per step.
    pub fn forward_lanes(&self, windows: &[f32], out: &mut [f32], scratch: &mut NetworkScratch) {
        let per = self.lookback * self.features;
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
            return;
        }
        // Transpose to [row, feature, lane]; unused lanes are zero windows.
        scratch.lanes_in.fill(0.0);
        for (l, w) in windows.chunks_exact(per).enumerate() {
            for (i, &v) in w.iter().enumerate() {
                scratch.lanes_in[i * LANES + l] = v;
            }
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `forward`.
            Isa::Avx2Fma => unsafe { forward_lanes_avx2(self, scratch) },
            _ => forward_lanes_generic::<Portable>(self, scratch),
        }
        for (l, o) in out.chunks_exact_mut(self.outputs).enumerate() {
            for (k, v) in o.iter_mut().enumerate() {
                *v = scratch.lanes_out[k * LANES + l];
            }
        }
    }
}

fn tensor<'a>(tensors: &'a [NamedTensor], name: &str) -> Result<&'a NamedTensor, EngineError> {
    tensors.iter().find(|t| t.name == name).ok_or_else(|| {
        EngineError::Model(format!("tensor {name:?} is missing from the model file"))
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(plan: &NetworkPlan, window: &[f32], out: &mut [f32], scratch: &mut NetworkScratch) {
    forward_generic::<crate::kernels::Avx2>(plan, window, out, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_lanes_avx2(plan: &NetworkPlan, scratch: &mut NetworkScratch) {
    forward_lanes_generic::<crate::kernels::Avx2>(plan, scratch);
}

/// The GRU cell's element-wise part (PyTorch convention), over `m` values: with
/// `gi = W_ih x + b_ih` and `gh = W_hh h + b_hh` laid out `[r | z | n]`,
/// `r = σ(gi_r + gh_r)`, `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r ⊙ gh_n)`,
/// `h ← n + z ⊙ (h − n)`. `m` is the hidden size (single sample) or hidden × LANES.
#[inline(always)]
fn gru_cell<K: Kernels>(gi: &mut [f32], gh: &[f32], h: &mut [f32]) {
    let m = h.len();
    let (rz, n) = gi.split_at_mut(2 * m);
    for (g, &r) in rz.iter_mut().zip(&gh[..2 * m]) {
        *g = sigmoid::<K>(*g + r);
    }
    for ((g, &r), &hn) in n.iter_mut().zip(&rz[..m]).zip(&gh[2 * m..]) {
        *g = tanh::<K>(K::mul_add(r, hn, *g));
    }
    for ((hv, &z), &nv) in h.iter_mut().zip(&rz[m..]).zip(n.iter()) {
        *hv = K::mul_add(z, *hv - nv, nv);
    }
}

#[inline(always)]
fn forward_generic<K: Kernels>(
    plan: &NetworkPlan,
    window: &[f32],
    out: &mut [f32],
    s: &mut NetworkScratch,
) {
    match &plan.layers {
        Layers::Linear(d) => d.forward::<K>(window, out, &mut s.quant),
        Layers::Mlp(layers) => {
            let last = layers.len() - 1;
            for (i, d) in layers.iter().enumerate() {
                // Activations alternate between the two buffers: even layers write `a`.
                let (src, dst) = if i % 2 == 0 {
                    (&s.b, &mut s.a)
                } else {
                    (&s.a, &mut s.b)
                };
                let x: &[f32] = if i == 0 { window } else { &src[..d.inputs] };
                if i == last {
                    d.forward::<K>(x, out, &mut s.quant);
                } else {
                    let y = &mut dst[..d.outputs];
                    d.forward::<K>(x, y, &mut s.quant);
                    for v in y.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        }
        Layers::Gru {
            hidden,
            input,
            recurrent,
            head,
        } => {
            let h = &mut s.state[..*hidden];
            h.fill(0.0);
            let g = recurrent.outputs;
            for x in window.chunks_exact(plan.features) {
                let gi = &mut s.a[..g];
                let gh = &mut s.b[..g];
                input.forward::<K>(x, gi, &mut s.quant);
                recurrent.forward::<K>(h, gh, &mut s.quant);
                gru_cell::<K>(gi, gh, h);
            }
            head.forward::<K>(h, out, &mut s.quant);
        }
    }
}

#[inline(always)]
fn forward_lanes_generic<K: Kernels>(plan: &NetworkPlan, s: &mut NetworkScratch) {
    let out = &mut s.lanes_out;
    match &plan.layers {
        Layers::Linear(d) => d.forward_lanes::<K>(&s.lanes_in, out),
        Layers::Mlp(layers) => {
            let last = layers.len() - 1;
            for (i, d) in layers.iter().enumerate() {
                let (src, dst) = if i % 2 == 0 {
                    (&s.b, &mut s.a)
                } else {
                    (&s.a, &mut s.b)
                };
                let x: &[f32] = if i == 0 {
                    &s.lanes_in
                } else {
                    &src[..d.inputs * LANES]
                };
                if i == last {
                    d.forward_lanes::<K>(x, out);
                } else {
                    let y = &mut dst[..d.outputs * LANES];
                    d.forward_lanes::<K>(x, y);
                    for v in y.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        }
        Layers::Gru {
            hidden,
            input,
            recurrent,
            head,
        } => {
            let h = &mut s.state[..*hidden * LANES];
            h.fill(0.0);
            let g = recurrent.outputs * LANES;
            for x in s.lanes_in.chunks_exact(plan.features * LANES) {
                let gi = &mut s.a[..g];
                let gh = &mut s.b[..g];
                input.forward_lanes::<K>(x, gi);
                recurrent.forward_lanes::<K>(h, gh);
                gru_cell::<K>(gi, gh, h);
            }
            head.forward_lanes::<K>(h, out);
        }
    }
}

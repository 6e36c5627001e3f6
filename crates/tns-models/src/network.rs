use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tns_model::{Activation, Init, Layer, LayerNode, ModelConfig, NamedTensor, QuantileHeads};

use crate::fused::{Gru, Lstm, States};

use crate::ModelError;

/// One layer of the description, lowered to Candle modules.
#[derive(Debug, Clone)]
enum CandleLayer {
    Flatten,
    Dense(Linear),
    Activation(Activation),
    /// PyTorch's GRU layout: `W_ih [3H, I]`, `W_hh [3H, H]`, `b_ih`, `b_hh [3H]`.
    Gru {
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
    },
    ConcatFuture,
    /// The moving-average weights `[L, L]` ([`tns_model::moving_average_matrix`]).
    Decompose(Tensor),
    /// A TCN block: two causal convolutions and the residual path.
    TcnBlock {
        conv1: CausalConv,
        conv2: CausalConv,
        down: Option<CausalConv>,
    },
    LastStep,
    /// PyTorch's LSTM layout (`W_ih [4H, C]`, `W_hh [4H, H]`, two biases); every step's
    /// state when `sequence`, else the last.
    Lstm {
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
        sequence: bool,
    },
    Nhits(Box<Nhits>),
    /// Tokens of `patch` rows every `stride` rows, embedded (of each channel alone when
    /// `independent`).
    PatchEmbed {
        patch: usize,
        stride: usize,
        independent: bool,
        linear: Linear,
    },
    TransformerBlock(Box<TransformerBlock>),
    /// An RMSNorm's gain.
    RmsNorm(Tensor),
    S4dBlock(Box<S4dBlock>),
    MambaBlock(Box<MambaBlock>),
}

/// `x / √(mean(x²) + ε) ⊙ g` over the last dimension (the fused op, with its gradient).
fn rms_norm(x: &Tensor, gain: &Tensor) -> Result<Tensor, ModelError> {
    Ok(crate::fused::rms_norm(x, gain, tns_model::RMS_NORM_EPS)?)
}

/// A pre-norm transformer block ([`Layer::TransformerBlock`]).
#[derive(Debug, Clone)]
struct TransformerBlock {
    heads: usize,
    kv_heads: usize,
    /// Independent token sequences, each `[tokens, d]`, one after the other.
    sequences: usize,
    norm1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    norm2: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    /// The rotary angles' cosines and sines, `[tokens, d_head / 2]` each.
    cos: Tensor,
    sin: Tensor,
    /// Causal attention: a query reads only the keys up to its own token (`j ≤ i`).
    causal: bool,
}

impl TransformerBlock {
    fn new(
        node: &LayerNode,
        vb: &VarBuilder,
        heads: usize,
        kv_heads: usize,
        (ffn, causal, sequences): (usize, bool, usize),
    ) -> Result<Self, ModelError> {
        let (tokens, d) = (
            node.input.len() / node.input.channels() / sequences.max(1),
            node.input.channels(),
        );
        let head = d / heads;
        let kv = kv_heads * head;
        let angles = tns_model::rope_angles(tokens, head);
        let table = |f: fn(f64) -> f64| {
            let values: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
            Tensor::from_vec(values, (tokens, head / 2), vb.device())
        };
        Ok(Self {
            heads,
            kv_heads,
            sequences,
            norm1: vb.get(d, "norm1.weight")?,
            q: vb.get((d, d), "q.weight")?,
            k: vb.get((kv, d), "k.weight")?,
            v: vb.get((kv, d), "v.weight")?,
            o: vb.get((d, d), "o.weight")?,
            norm2: vb.get(d, "norm2.weight")?,
            gate: vb.get((ffn, d), "gate.weight")?,
            up: vb.get((ffn, d), "up.weight")?,
            down: vb.get((d, ffn), "down.weight")?,
            cos: table(f64::cos)?,
            sin: table(f64::sin)?,
            causal,
        })
    }

    /// `[B, P, heads · d_head]` → `[B, heads, P, d_head]` with rotary embeddings turned in.
    fn heads_of(&self, x: &Tensor, heads: usize, rotate: bool) -> Result<Tensor, ModelError> {
        let (b, p, width) = x.dims3()?;
        let head = width / heads;
        let x = x
            .reshape((b, p, heads, head))?
            .transpose(1, 2)?
            .contiguous()?;
        if !rotate {
            return Ok(x);
        }
        // (x₁, x₂) ↦ (x₁ cos − x₂ sin, x₂ cos + x₁ sin) on the two halves of each head.
        Ok(crate::fused::rope(&x, &self.cos, &self.sin)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        if self.sequences > 1 {
            // Each sequence on its own: [B, S · P, d] → [B · S, P, d] and back.
            let (b, tokens, d) = x.dims3()?;
            let s = self.sequences;
            let apart = x.reshape((b * s, tokens / s, d))?;
            return Ok(self.forward_one(&apart)?.reshape((b, tokens, d))?);
        }
        self.forward_one(x)
    }

    /// The block over `[B, P, d]`, every token one sequence.
    fn forward_one(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, p, d) = x.dims3()?;
        let project = |x: &Tensor, w: &Tensor| x.broadcast_matmul(&w.t()?);
        let n1 = rms_norm(x, &self.norm1)?;
        let q = self.heads_of(&project(&n1, &self.q)?, self.heads, true)?;
        // Each key/value head serves `heads / kv_heads` query heads (inside the op, no copies).
        let k = self.heads_of(&project(&n1, &self.k)?, self.kv_heads, true)?;
        let v = self.heads_of(&project(&n1, &self.v)?, self.kv_heads, false)?;
        let head = d / self.heads;
        // The later keys of a causal query get weight 0, as in the engine, which never scores
        // them.
        let mixed = crate::fused::attention(&q, &k, &v, 1.0 / (head as f64).sqrt(), self.causal)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, p, d))?;
        let h = (x + project(&mixed, &self.o)?)?;
        let n2 = rms_norm(&h, &self.norm2)?;
        let inner = crate::fused::silu_gate(&project(&n2, &self.up)?, &project(&n2, &self.gate)?)?;
        Ok((h + project(&inner, &self.down)?)?)
    }
}

/// A residual S4D block ([`Layer::S4dBlock`]), its state-space model run as a convolution
/// (see [`s4d_convolve`]).
#[derive(Debug, Clone)]
struct S4dBlock {
    norm: Tensor,
    modes: S4dModes,
    out: Linear,
    lags: Lags,
}

/// An S4D layer's state-space parameters: `log_dt [d]`, `log_a`, `c [d, state]`, `skip [d]`.
#[derive(Debug, Clone)]
struct S4dModes {
    log_dt: Tensor,
    log_a: Tensor,
    c: Tensor,
    skip: Tensor,
}

/// What turns a kernel `[d, L]` into its causal convolution matrices `[d, L, L]`: the lag
/// `t − s` of every entry (0 above the diagonal) and the mask that zeroes those.
#[derive(Debug, Clone)]
struct Lags {
    lag: Tensor,
    causal: Tensor,
}

impl Lags {
    fn new(steps: usize, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let (mut lag, mut causal) = (Vec::new(), Vec::new());
        for t in 0..steps {
            for s in 0..steps {
                lag.push(t.saturating_sub(s) as u32);
                causal.push(if s <= t { 1.0f64 } else { 0.0 });
            }
        }
        Ok(Self {
            lag: Tensor::from_vec(lag, steps * steps, device)?,
            causal: Tensor::from_vec(causal, (steps, steps), device)?.to_dtype(dtype)?,
        })
    }
}

/// The S4D state-space model over `u` `[B, L, d]` → `[B, L, d]`, as the causal convolution
/// with its kernel `K_k = Σ_n C_n B̄_n Ā_n^k` (see [`tns_model::s4d`]) plus the skip. The
/// kernel is computed in f64 (`B̄ = (Ā − 1)/A` loses digits in f32 when `ΔA` is small) and
/// the convolution runs as one batched product of `[d, L, L]` Toeplitz matrices with the
/// sequences, in `u`'s dtype. Differentiable by Candle throughout.
fn s4d_convolve(u: &Tensor, modes: &S4dModes, lags: &Lags) -> Result<Tensor, ModelError> {
    let (_, steps, d) = u.dims3()?;
    let wide = |t: &Tensor| t.to_dtype(DType::F64);
    let a = wide(&modes.log_a)?.exp()?.neg()?;
    let step = a.broadcast_mul(&wide(&modes.log_dt)?.exp()?.unsqueeze(1)?)?;
    let b_bar = ((step.exp()? - 1.0)? / &a)?;
    let weight = (wide(&modes.c)? * b_bar)?;
    let k = Tensor::arange(0u32, steps as u32, u.device())?
        .to_dtype(DType::F64)?
        .reshape((1, 1, steps))?;
    let powers = step.unsqueeze(2)?.broadcast_mul(&k)?.exp()?;
    let kernel = weight
        .unsqueeze(2)?
        .broadcast_mul(&powers)?
        .sum(1)?
        .to_dtype(u.dtype())?;
    let toeplitz = kernel
        .index_select(&lags.lag, 1)?
        .reshape((d, steps, steps))?
        .broadcast_mul(&lags.causal)?;
    // [d, L, L] · [d, L, B] → [d, L, B], back to [B, L, d].
    let by_channel = u.permute((2, 1, 0))?.contiguous()?;
    let convolved = toeplitz.matmul(&by_channel)?.permute((2, 1, 0))?;
    Ok((convolved + u.broadcast_mul(&modes.skip)?)?)
}

impl S4dBlock {
    fn new(node: &LayerNode, vb: &VarBuilder, state: usize) -> Result<Self, ModelError> {
        let d = node.input.channels();
        let steps = node.input.len() / d.max(1);
        Ok(Self {
            norm: vb.get(d, "norm.weight")?,
            modes: S4dModes {
                log_dt: vb.get(d, "log_dt")?,
                log_a: vb.get((d, state), "log_a")?,
                c: vb.get((d, state), "c")?,
                skip: vb.get(d, "skip")?,
            },
            out: candle_nn::linear(d, d, vb.pp("out"))?,
            lags: Lags::new(steps, vb.dtype(), vb.device())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let z = s4d_convolve(&rms_norm(x, &self.norm)?, &self.modes, &self.lags)?;
        Ok((x + self.out.forward(&crate::fused::silu(&z)?)?)?)
    }
}

/// A residual Mamba block ([`Layer::MambaBlock`]); its scan is the fused op
/// [`crate::fused::selective_scan`].
#[derive(Debug, Clone)]
struct MambaBlock {
    dims: tns_model::mamba::MambaDims,
    norm: Tensor,
    input: Tensor,
    /// Taps `[E, conv]` and bias `[E]`.
    conv: Tensor,
    conv_bias: Tensor,
    x_proj: Tensor,
    dt: Linear,
    a_log: Tensor,
    skip: Tensor,
    out: Tensor,
}

impl MambaBlock {
    fn new(node: &LayerNode, vb: &VarBuilder) -> Result<Self, ModelError> {
        let dims = node
            .mamba_dims()
            .ok_or_else(|| ModelError::Config(format!("layer {} is not Mamba", node.name)))?;
        let (d, e, n, r) = (dims.d_model, dims.inner, dims.state, dims.rank);
        Ok(Self {
            dims,
            norm: vb.get(d, "norm.weight")?,
            input: vb.get((2 * e, d), "in.weight")?,
            conv: vb.get((e, dims.conv), "conv.weight")?,
            conv_bias: vb.get(e, "conv.bias")?,
            x_proj: vb.get((r + 2 * n, e), "x.weight")?,
            dt: candle_nn::linear(r, e, vb.pp("dt"))?,
            a_log: vb.get((e, n), "a_log")?,
            skip: vb.get(e, "skip")?,
            out: vb.get((d, e), "out.weight")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (e, n, r) = (self.dims.inner, self.dims.state, self.dims.rank);
        let project = |x: &Tensor, w: &Tensor| x.broadcast_matmul(&w.t()?);
        let xz = project(&rms_norm(x, &self.norm)?, &self.input)?;
        let (v, z) = (xz.narrow(2, 0, e)?, xz.narrow(2, e, e)?);
        // The causal depthwise convolution: tap j reads row t − (k − 1 − j).
        let v = crate::fused::silu(&crate::fused::causal_depthwise_conv(
            &v,
            &self.conv,
            &self.conv_bias,
        )?)?;
        let dbc = project(&v, &self.x_proj)?;
        let delta = crate::fused::softplus(&self.dt.forward(&dbc.narrow(2, 0, r)?.contiguous()?)?)?;
        let (b, c) = (dbc.narrow(2, r, n)?, dbc.narrow(2, r + n, n)?);
        let a = self.a_log.exp()?.neg()?;
        let o = crate::fused::selective_scan(&delta, &v, &a, &b, &c, &self.skip)?;
        Ok((x + project(&crate::fused::silu_gate(&o, &z)?, &self.out)?)?)
    }
}

/// An N-HiTS layer ([`Layer::Nhits`]): its blocks and the shapes they pool.
#[derive(Debug, Clone)]
struct Nhits {
    dims: tns_model::nhits::NhitsDims,
    blocks: Vec<NhitsBlock>,
}

#[derive(Debug, Clone)]
struct NhitsBlock {
    pool: usize,
    mlp: [Linear; 2],
    backcast: Option<Linear>,
    forecast: Linear,
    /// The interpolation `[knots, H]` ([`tns_model::nhits::interpolation_matrix`]).
    interpolation: Tensor,
}

/// Max-pools `[B, L, C]` over time in groups of `pool` rows anchored at the last row
/// ([`tns_model::nhits::pool_groups`]) → `[B, ⌈L/pool⌉, C]`. The partial first group is
/// reduced on its own rather than padded, so that no row is counted twice in the gradient.
fn max_pool_rows(x: &Tensor, pool: usize) -> Result<Tensor, ModelError> {
    if pool == 1 {
        return Ok(x.clone());
    }
    let (b, steps, channels) = x.dims3()?;
    let partial = steps % pool;
    let mut groups = Vec::with_capacity(2);
    if partial > 0 {
        groups.push(x.narrow(1, 0, partial)?.max_keepdim(1)?);
    }
    if steps > partial {
        groups.push(
            x.narrow(1, partial, steps - partial)?
                .reshape((b, (steps - partial) / pool, pool, channels))?
                .max(2)?,
        );
    }
    Ok(Tensor::cat(&groups, 1)?)
}

impl Nhits {
    fn new(node: &LayerNode, vb: &VarBuilder) -> Result<Self, ModelError> {
        let dims = node
            .nhits_dims()
            .ok_or_else(|| ModelError::Config(format!("layer {} is not N-HiTS", node.name)))?;
        let blocks = node
            .nhits_blocks()
            .into_iter()
            .map(|b| {
                // The blocks' names already carry the layer's prefix.
                let vb = vb.root().pp(&b.prefix);
                let h = dims.hidden;
                let weights: Vec<f32> =
                    tns_model::nhits::interpolation_matrix(dims.horizon, b.knots)
                        .into_iter()
                        .map(|w| w as f32)
                        .collect();
                Ok(NhitsBlock {
                    pool: b.pool,
                    mlp: [
                        candle_nn::linear(b.inputs, h, vb.pp("mlp.0"))?,
                        candle_nn::linear(h, h, vb.pp("mlp.1"))?,
                    ],
                    backcast: b
                        .backcast
                        .then(|| candle_nn::linear(h, node.input.len(), vb.pp("backcast")))
                        .transpose()?,
                    forecast: candle_nn::linear(h, b.knots * dims.targets, vb.pp("forecast"))?,
                    interpolation: Tensor::from_vec(weights, (b.knots, dims.horizon), vb.device())?,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Self { dims, blocks })
    }

    /// `[B, L, C]` and the future block `[B, H·F]` → `[B, H·T]`.
    fn forward(&self, x: &Tensor, future: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let d = self.dims;
        let b = x.dim(0)?;
        let future = match (future, d.future) {
            (_, 0) => None,
            (Some(f), width) => Some(f.reshape((b, d.horizon, width))?),
            (None, _) => {
                return Err(ModelError::Config(
                    "the network takes future inputs but none were given".into(),
                ));
            }
        };
        let mut residual = x.clone();
        let mut forecast: Option<Tensor> = None;
        for block in &self.blocks {
            let mut parts = vec![max_pool_rows(&residual, block.pool)?.flatten_from(1)?];
            if let Some(f) = &future {
                parts.push(max_pool_rows(f, block.pool)?.flatten_from(1)?);
            }
            let mut h = Tensor::cat(&parts, 1)?;
            for layer in &block.mlp {
                h = layer.forward(&h)?.relu()?;
            }
            // Knots [B, knots·T] as [B, T, knots] · M [knots, H] → [B, H, T], flat.
            let knots = block.forecast.forward(&h)?;
            let knots = knots.reshape((b, knots.dim(1)? / d.targets, d.targets))?;
            let part = knots
                .transpose(1, 2)?
                .contiguous()?
                .broadcast_matmul(&block.interpolation)?
                .transpose(1, 2)?
                .flatten_from(1)?;
            forecast = Some(match forecast {
                Some(sum) => (sum + part)?,
                None => part,
            });
            if let Some(backcast) = &block.backcast {
                let back = backcast.forward(&h)?.reshape(residual.dims())?;
                residual = (residual - back)?;
            }
        }
        forecast.ok_or_else(|| ModelError::Config("an N-HiTS layer without blocks".into()))
    }
}

/// A causal dilated convolution on `[B, L, C]`, as a sum of `K` shifted products (each
/// differentiated by Candle's matmul and narrow, whose gradients are well tested).
#[derive(Debug, Clone)]
struct CausalConv {
    /// `W_k [C_in, C_out]` per tap `k` (row `t` reads row `t − (K − 1 − k)·dilation`).
    taps: Vec<Tensor>,
    bias: Tensor,
    dilation: usize,
}

impl CausalConv {
    /// Reads `{prefix}.weight [C_out, C_in, K]` and `{prefix}.bias`.
    fn new(
        vb: &VarBuilder,
        prefix: &str,
        (c_out, c_in, kernel): (usize, usize, usize),
        dilation: usize,
    ) -> Result<Self, ModelError> {
        let weight = vb.get((c_out, c_in, kernel), &format!("{prefix}.weight"))?;
        let taps = (0..kernel)
            .map(|k| weight.narrow(2, k, 1)?.squeeze(2)?.t())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            taps,
            bias: vb.get(c_out, &format!("{prefix}.bias"))?,
            dilation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let steps = x.dim(1)?;
        let reach = (self.taps.len() - 1) * self.dilation;
        let padded = x.pad_with_zeros(1, reach, 0)?;
        let mut y = self.bias.clone();
        for (k, w) in self.taps.iter().enumerate() {
            let shifted = padded.narrow(1, k * self.dilation, steps)?;
            y = shifted.broadcast_matmul(w)?.broadcast_add(&y)?;
        }
        Ok(y)
    }
}

impl CandleLayer {
    /// Builds the layer's modules from the variables under its name.
    fn lower(node: &LayerNode, vb: &VarBuilder) -> Result<Self, ModelError> {
        let vb = vb.pp(&node.name);
        Ok(match node.layer {
            Layer::Flatten => Self::Flatten,
            Layer::Dense { outputs } => {
                Self::Dense(candle_nn::linear(node.input.len(), outputs, vb)?)
            }
            Layer::Activation(a) => Self::Activation(a),
            Layer::Gru { hidden } => {
                let (inputs, gates) = (node.input.channels(), 3 * hidden);
                Self::Gru {
                    w_ih: vb.get((gates, inputs), "weight_ih_l0")?,
                    w_hh: vb.get((gates, hidden), "weight_hh_l0")?,
                    b_ih: vb.get(gates, "bias_ih_l0")?,
                    b_hh: vb.get(gates, "bias_hh_l0")?,
                }
            }
            Layer::ConcatFuture { .. } => Self::ConcatFuture,
            Layer::Lstm { hidden, sequence } => {
                let (inputs, gates) = (node.input.channels(), 4 * hidden);
                Self::Lstm {
                    w_ih: vb.get((gates, inputs), "weight_ih_l0")?,
                    w_hh: vb.get((gates, hidden), "weight_hh_l0")?,
                    b_ih: vb.get(gates, "bias_ih_l0")?,
                    b_hh: vb.get(gates, "bias_hh_l0")?,
                    sequence,
                }
            }
            Layer::TcnBlock {
                channels,
                kernel,
                dilation,
            } => {
                let c = node.input.channels();
                Self::TcnBlock {
                    conv1: CausalConv::new(&vb, "conv1", (channels, c, kernel), dilation)?,
                    conv2: CausalConv::new(&vb, "conv2", (channels, channels, kernel), dilation)?,
                    down: (c != channels)
                        .then(|| CausalConv::new(&vb, "down", (channels, c, 1), 1))
                        .transpose()?,
                }
            }
            Layer::LastStep => Self::LastStep,
            Layer::Decompose { kernel } => {
                let steps = node.input.len() / node.input.channels().max(1);
                let weights: Vec<f32> = tns_model::moving_average_matrix(steps, kernel)
                    .into_iter()
                    .map(|w| w as f32)
                    .collect();
                Self::Decompose(Tensor::from_vec(weights, (steps, steps), vb.device())?)
            }
            Layer::Nhits { .. } => Self::Nhits(Box::new(Nhits::new(node, &vb)?)),
            Layer::PatchEmbed {
                patch,
                stride,
                d_model,
                independent,
            } => Self::PatchEmbed {
                patch,
                stride,
                independent,
                linear: candle_nn::linear(node.token_inputs(), d_model, vb)?,
            },
            Layer::TransformerBlock {
                heads,
                kv_heads,
                ffn,
                causal,
                sequences,
            } => Self::TransformerBlock(Box::new(TransformerBlock::new(
                node,
                &vb,
                heads,
                kv_heads,
                (ffn, causal, sequences),
            )?)),
            Layer::RmsNorm => Self::RmsNorm(vb.get(node.input.channels(), "weight")?),
            Layer::S4dBlock { state } => Self::S4dBlock(Box::new(S4dBlock::new(node, &vb, state)?)),
            Layer::MambaBlock { .. } => Self::MambaBlock(Box::new(MambaBlock::new(node, &vb)?)),
        })
    }

    /// `[B, …]` → `[B, …]`: sequences are `[B, steps, channels]`, vectors `[B, n]`;
    /// `future` is the normalized future block `[B, horizon · future]`.
    fn forward(&self, x: &Tensor, future: Option<&Tensor>) -> Result<Tensor, ModelError> {
        Ok(match self {
            Self::ConcatFuture => match future {
                Some(f) => Tensor::cat(&[x, f], 1)?,
                None => {
                    return Err(ModelError::Config(
                        "the network takes future inputs but none were given".into(),
                    ));
                }
            },
            Self::Flatten => x.flatten_from(1)?,
            Self::Dense(linear) => linear.forward(x)?,
            Self::Activation(Activation::Relu) => x.relu()?,
            Self::Lstm {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                sequence,
            } => {
                let states = if *sequence { States::All } else { States::Last };
                crate::fused::sequence::<Lstm>(x, w_ih, w_hh, b_ih, b_hh, states)?
            }
            Self::TcnBlock { conv1, conv2, down } => {
                let inner = conv2.forward(&conv1.forward(x)?.relu()?)?.relu()?;
                let residual = match down {
                    Some(d) => d.forward(x)?,
                    None => x.clone(),
                };
                (inner + residual)?.relu()?
            }
            Self::LastStep => {
                let steps = x.dim(1)?;
                x.narrow(1, steps - 1, 1)?.squeeze(1)?
            }
            Self::Decompose(average_t) => {
                // The trend per channel as [B, C, L] · W; then trend and remainder, flat.
                let trend = x
                    .transpose(1, 2)?
                    .contiguous()?
                    .broadcast_matmul(average_t)?
                    .transpose(1, 2)?;
                let remainder = (x - &trend)?;
                Tensor::cat(&[trend.flatten_from(1)?, remainder.flatten_from(1)?], 1)?
            }
            Self::Nhits(nhits) => nhits.forward(x, future)?,
            Self::PatchEmbed {
                patch,
                stride,
                independent,
                linear,
            } => {
                // Channel independence: every channel a sequence of its own, [B · C, L, 1].
                let (batch, columns) = (x.dim(0)?, x.dim(2)?);
                let x = &if *independent {
                    let steps = x.dim(1)?;
                    x.transpose(1, 2)?
                        .contiguous()?
                        .reshape((batch * columns, steps, 1))?
                } else {
                    x.clone()
                };
                let (b, steps, c) = x.dims3()?;
                let tokens = if *stride == *patch {
                    x.reshape((b, steps / patch, patch * c))?
                } else {
                    // Overlapping tokens: each a slice of `patch` rows, side by side.
                    let parts = (0..(steps - patch) / stride + 1)
                        .map(|t| x.narrow(1, t * stride, *patch)?.reshape((b, 1, patch * c)))
                        .collect::<Result<Vec<_>, _>>()?;
                    Tensor::cat(&parts, 1)?
                };
                let embedded = linear.forward(&tokens)?;
                if *independent {
                    // [B · C, P, d] → [B, C · P, d]: channel by channel.
                    let (_, p, d) = embedded.dims3()?;
                    embedded.reshape((batch, columns * p, d))?
                } else {
                    embedded
                }
            }
            Self::TransformerBlock(block) => block.forward(x)?,
            Self::RmsNorm(gain) => rms_norm(x, gain)?,
            Self::S4dBlock(block) => block.forward(x)?,
            Self::MambaBlock(block) => block.forward(x)?,
            Self::Gru {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            } => {
                // The whole sequence in one op (see `fused`); the head reads the last state.
                crate::fused::sequence::<Gru>(x, w_ih, w_hh, b_ih, b_hh, States::Last)?
            }
        })
    }
}

/// A network built from a config: maps normalized windows `[B, L, F]` to normalized
/// residuals `[B, H·T]`.
#[derive(Debug, Clone)]
pub struct Network {
    layers: Vec<CandleLayer>,
    vars: Vec<(String, Var)>,
    lookback: usize,
    features: usize,
    /// Values of the future block after the window in each input.
    future: usize,
    /// With quantile heads: horizon steps, targets and the levels.
    heads: Option<(usize, usize, QuantileHeads)>,
}

/// A forward pass's outputs taken apart: the point outputs `[B, H·T]` and, with quantile
/// heads, the lower and the upper quantile outputs (same shape) with their levels.
#[derive(Debug)]
pub struct Heads {
    /// The point outputs.
    pub point: Tensor,
    /// `[(lower, level), (upper, level)]`, for networks with quantile heads.
    pub quantiles: Option<[(Tensor, f64); 2]>,
}

impl Network {
    /// Seeded initialization (PyTorch's defaults: each tensor `U(±bound)` with the bound the
    /// description gives), drawn in layout order from ChaCha8 seeded with `config.seed`.
    pub fn init(config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let tensors = config
            .layers()?
            .iter()
            .flat_map(LayerNode::params)
            .map(|p| {
                let n: usize = p.shape.iter().product();
                let data = match p.init {
                    Init::Uniform(bound) => {
                        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                    }
                    Init::One => vec![1.0; n],
                    Init::LogUniform(low, high) => (0..n)
                        .map(|_| rng.random_range(low.ln()..high.ln()))
                        .collect(),
                    Init::SoftplusInverseLogUniform(low, high) => (0..n)
                        .map(|_| {
                            let step = f64::from(rng.random_range(low.ln()..high.ln())).exp();
                            tns_model::mamba::softplus_inverse(step) as f32
                        })
                        .collect(),
                    Init::S4dReal => {
                        let states = p.shape.last().copied().unwrap_or(1).max(1);
                        (0..n).map(|i| ((i % states) as f32 + 1.0).ln()).collect()
                    }
                };
                NamedTensor {
                    name: p.name,
                    shape: p.shape,
                    data,
                }
            })
            .collect::<Vec<_>>();
        Self::from_tensors(config, &tensors, device)
    }

    /// Builds the network from stored tensors, checking every name and shape.
    pub fn from_tensors(
        config: &ModelConfig,
        tensors: &[NamedTensor],
        device: &Device,
    ) -> Result<Self, ModelError> {
        let nodes = config.layers()?;
        if nodes.is_empty() {
            return Err(ModelError::Config(format!(
                "kind {} has no network",
                config.kind.name()
            )));
        }
        config.check_tensors(tensors)?;
        let layout = config.tensor_layout()?;
        if let Some(extra) = tensors
            .iter()
            .find(|t| !layout.iter().any(|(n, _)| *n == t.name))
        {
            return Err(ModelError::Config(format!(
                "unexpected tensor {:?} in the model file",
                extra.name
            )));
        }
        let varmap = VarMap::new();
        let mut vars = Vec::new();
        {
            let mut map = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("variable map lock poisoned".into()))?;
            for (name, shape) in &layout {
                let t = tensors
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| tns_model::ConfigError::MissingTensor(name.clone()))?;
                let var =
                    Var::from_tensor(&Tensor::from_vec(t.data.clone(), shape.as_slice(), device)?)?;
                map.insert(name.clone(), var.clone());
                vars.push((name.clone(), var));
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let layers = nodes
            .iter()
            .map(|n| CandleLayer::lower(n, &vb))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            layers,
            vars,
            lookback: config.network_rows(),
            features: config.input_width(),
            future: config.future_len(),
            heads: config
                .quantile_heads
                .map(|q| (config.horizon, config.targets.len(), q)),
        })
    }

    /// With quantile heads: the targets per step and the lower and upper levels.
    pub fn quantile_levels(&self) -> Option<(usize, [f64; 2])> {
        self.heads
            .map(|(_, targets, q)| (targets, [q.lower, q.upper]))
    }

    /// Takes a forward pass's output `[B, H·(1 or 3)·T]` apart into its heads (laid out
    /// `[B, H, (point, lower, upper), T]` with quantile heads).
    pub fn heads(&self, out: &Tensor) -> Result<Heads, ModelError> {
        let Some((horizon, targets, levels)) = self.heads else {
            return Ok(Heads {
                point: out.clone(),
                quantiles: None,
            });
        };
        let b = out.dim(0)?;
        let by_head = out.reshape((b, horizon, 3, targets))?;
        let head = |k: usize| -> Result<Tensor, ModelError> {
            Ok(by_head.narrow(2, k, 1)?.reshape((b, horizon * targets))?)
        };
        Ok(Heads {
            point: head(0)?,
            quantiles: Some([(head(1)?, levels.lower), (head(2)?, levels.upper)]),
        })
    }

    /// Values per model input: the window `L × F`, then the future block.
    pub fn input_len(&self) -> usize {
        self.lookback * self.features + self.future
    }

    /// Normalized model inputs `[B, L·F + future]` (or windows `[B, L, F]` for a network
    /// without future inputs) → `[B, H·T]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let past = self.lookback * self.features;
        let shape_error = || {
            ModelError::Config(format!(
                "network expects inputs [B, {}] (window [{}, {}] then {} future values), got {:?}",
                self.input_len(),
                self.lookback,
                self.features,
                self.future,
                x.dims()
            ))
        };
        let (window, future) = match *x.dims() {
            [_, l, f] if self.future == 0 && l == self.lookback && f == self.features => {
                (x.clone(), None)
            }
            [b, n] if n == self.input_len() => (
                x.narrow(1, 0, past)?
                    .reshape((b, self.lookback, self.features))?,
                (self.future > 0)
                    .then(|| x.narrow(1, past, self.future))
                    .transpose()?,
            ),
            _ => return Err(shape_error()),
        };
        let mut h = window;
        for layer in &self.layers {
            h = layer.forward(&h, future.as_ref())?;
        }
        Ok(h)
    }

    /// The trainable variables with their names, in layout order.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Total trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The current weights as f32 tensors for the model file.
    pub fn to_tensors(&self) -> Result<Vec<NamedTensor>, ModelError> {
        self.vars
            .iter()
            .map(|(name, var)| {
                Ok(NamedTensor {
                    name: name.clone(),
                    shape: var.dims().to_vec(),
                    data: var
                        .as_tensor()
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1()?,
                })
            })
            .collect()
    }

    /// Runs the network on `n` normalized model inputs (`[n, input_len]` flat, f32) in
    /// chunks, on the network's device, and returns `[n, out]` flat.
    pub fn forward_flat(
        &self,
        inputs: &[f32],
        n: usize,
        device: &Device,
    ) -> Result<Vec<f32>, ModelError> {
        const CHUNK: usize = 4096;
        let per = self.input_len();
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let m = CHUNK.min(n - start);
            let x = Tensor::from_slice(&inputs[start * per..(start + m) * per], (m, per), device)?;
            out.extend(self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
            start += m;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_model::ModelKind;

    #[test]
    fn a_tcn_output_sees_the_first_row_of_a_window_as_long_as_its_field() {
        // tcn:4,2,3: receptive field 1 + 2·1·(1 + 2 + 4) = 15 rows.
        let columns = ["a", "b"];
        let mut config = ModelConfig::new("t", ModelKind::SystemA, &columns, &columns, 15, 1, 1);
        config.network = Some("tcn:4,2,3".parse().unwrap());
        let net = Network::init(&config, &Device::Cpu).unwrap();
        let rows: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.2).collect();
        let run = |x: &[f32]| {
            let x = Tensor::from_slice(x, (1, 15, 2), &Device::Cpu).unwrap();
            net.forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let base = run(&rows);
        let mut first = rows.clone();
        first[0] += 1.0;
        assert_ne!(run(&first), base, "the first row does not reach the output");
        // A causal convolution never reads ahead: the same window with its last row changed
        // changes the output too (it is the row the head reads).
        let mut last = rows.clone();
        last[29] += 1.0;
        assert_ne!(run(&last), base);
        // One row more than the field is refused.
        config.lookback = 16;
        assert!(Network::init(&config, &Device::Cpu).is_err());
    }

    #[test]
    fn a_channel_independent_transformer_keeps_its_channels_apart() {
        // transformer:8,2,1,1,2,flatten,independent over [8, 3]: 4 tokens per channel, 12
        // tokens of width 8 in all. With the head's columns of channels 1 and 2 zeroed, the
        // forecast reads channel 0 only, and no other channel's values may reach it.
        let columns = ["a", "b", "c"];
        let mut config = ModelConfig::new("t", ModelKind::SystemA, &columns, &["a"], 8, 1, 1);
        config.network = Some("transformer:8,2,1,1,2,flatten,independent".parse().unwrap());
        let mut tensors = Network::init(&config, &Device::Cpu)
            .unwrap()
            .to_tensors()
            .unwrap();
        let head = tensors
            .iter_mut()
            .find(|t| t.name.ends_with("head.weight"))
            .unwrap();
        let (tokens_per_channel, width) = (4, 8);
        let inputs = head.shape[1];
        assert_eq!(inputs, 3 * tokens_per_channel * width);
        for (i, w) in head.data.iter_mut().enumerate() {
            if i % inputs >= tokens_per_channel * width {
                *w = 0.0;
            }
        }
        let net = Network::from_tensors(&config, &tensors, &Device::Cpu).unwrap();
        let rows: Vec<f32> = (0..24).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.3).collect();
        let run = |x: &[f32]| net.forward_flat(x, 1, &Device::Cpu).unwrap();
        let base = run(&rows);
        let shifted = |channel: usize| {
            let mut x = rows.clone();
            for row in x.chunks_exact_mut(3) {
                row[channel] += 1.5;
            }
            run(&x)
        };
        assert_eq!(shifted(1), base, "channel 1 reached channel 0's tokens");
        assert_eq!(shifted(2), base, "channel 2 reached channel 0's tokens");
        assert_ne!(shifted(0), base, "channel 0 does not reach the forecast");
    }

    /// The S4D reference recurrence over one sequence `u` `[steps, d]`.
    fn s4d_recurrence(modes: &[Vec<f64>], u: &[f64]) -> Vec<f64> {
        tns_model::s4d::recurrence(&modes[0], &modes[1], &modes[2], &modes[3], u)
    }

    /// The modes (`log_dt`, `log_a`, `c`, `skip`), the sequences and the dimensions
    /// `(batch, steps, d, state)` of a small S4D case.
    type S4dCase = ([Vec<f64>; 4], Vec<f64>, (usize, usize, usize, usize));

    fn s4d_case() -> S4dCase {
        let (b, steps, d, state) = (2, 40, 3, 4);
        let modes = [
            (0..d).map(|i| (0.01 * (i + 1) as f64).ln()).collect(),
            (0..d * state)
                .map(|i| ((i % state) as f64 + 1.0).ln() + 0.05 * i as f64)
                .collect(),
            (0..d * state)
                .map(|i| ((i * 7 % 5) as f64 - 2.0) / 2.0)
                .collect(),
            vec![0.3, -0.7, 1.1],
        ];
        let u = (0..b * steps * d)
            .map(|i| ((i * 11 % 13) as f64 - 6.0) / 5.0)
            .collect();
        (modes, u, (b, steps, d, state))
    }

    fn s4d_tensors(modes: &[Vec<f64>; 4], d: usize, state: usize) -> [Var; 4] {
        let cpu = &Device::Cpu;
        [
            Var::from_slice(&modes[0], d, cpu).unwrap(),
            Var::from_slice(&modes[1], (d, state), cpu).unwrap(),
            Var::from_slice(&modes[2], (d, state), cpu).unwrap(),
            Var::from_slice(&modes[3], d, cpu).unwrap(),
        ]
    }

    #[test]
    fn the_s4d_training_convolution_matches_the_recurrence() {
        let (modes, u, (b, steps, d, state)) = s4d_case();
        let [log_dt, log_a, c, skip] = s4d_tensors(&modes, d, state);
        let modes_t = S4dModes {
            log_dt: log_dt.as_tensor().clone(),
            log_a: log_a.as_tensor().clone(),
            c: c.as_tensor().clone(),
            skip: skip.as_tensor().clone(),
        };
        let lags = Lags::new(steps, DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::from_slice(&u, (b, steps, d), &Device::Cpu).unwrap();
        let got = s4d_convolve(&x, &modes_t, &lags)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for seq in 0..b {
            let span = seq * steps * d..(seq + 1) * steps * d;
            let want = s4d_recurrence(&modes, &u[span.clone()]);
            for (g, w) in got[span].iter().zip(&want) {
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn the_s4d_training_gradients_match_finite_differences() {
        // d loss / d parameter through Candle's autodiff (exp, the Toeplitz gather, the
        // batched product) against central differences of the plain recurrence, in f64.
        let (modes, u, (b, steps, d, state)) = s4d_case();
        let vars = s4d_tensors(&modes, d, state);
        let modes_t = S4dModes {
            log_dt: vars[0].as_tensor().clone(),
            log_a: vars[1].as_tensor().clone(),
            c: vars[2].as_tensor().clone(),
            skip: vars[3].as_tensor().clone(),
        };
        let lags = Lags::new(steps, DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::from_slice(&u, (b, steps, d), &Device::Cpu).unwrap();
        // A loss that weighs every output differently.
        let weights: Vec<f64> = (0..u.len())
            .map(|i| ((i * 5 % 7) as f64 - 3.0) / 7.0)
            .collect();
        let w = Tensor::from_slice(&weights, (b, steps, d), &Device::Cpu).unwrap();
        let loss = (s4d_convolve(&x, &modes_t, &lags).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let loss_of = |m: &[Vec<f64>]| -> f64 {
            (0..b)
                .map(|seq| {
                    let span = seq * steps * d..(seq + 1) * steps * d;
                    s4d_recurrence(m, &u[span.clone()])
                        .iter()
                        .zip(&weights[span])
                        .map(|(z, w)| z * w)
                        .sum::<f64>()
                })
                .sum()
        };
        crate::gradcheck::assert_gradients_match(&grads, &vars, &modes, loss_of);
    }
}

//! Networks as stacks of layers.
//!
//! A [`NetworkConfig`] is what a user picks (`--network mlp:64,64`) and what a model file
//! stores. It expands, once, into a list of [`LayerNode`]s: each a [`Layer`] with its input
//! and output [`Shape`] and the name prefix of its tensors. Parameter shapes, counts, MACs
//! and initialization bounds are derived here from the layers; the backends (Candle, the
//! engine, ONNX, INT8) each lower every [`Layer`] variant once, with exhaustive matches, so
//! that a new variant without a lowering does not compile.

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::MAX_WIDTH;

/// The learned part of a model, as stored in the model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NetworkConfig {
    /// One linear map from the flattened window to the outputs.
    Linear,
    /// ReLU multilayer perceptron on the flattened window.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
    },
    /// Single-layer GRU (PyTorch gate convention, two biases) + linear head on the last state.
    Gru {
        /// Hidden size.
        hidden: usize,
    },
    /// Stacked LSTM (PyTorch gate convention `i, f, g, o`, two biases) + linear head on the
    /// last layer's last state.
    Lstm {
        /// Hidden size of every layer.
        hidden: usize,
        /// Layers (each reads the previous one's states).
        layers: usize,
    },
    /// Temporal convolutional network (Bai et al., 2018): `levels` residual blocks of two
    /// causal convolutions (kernel `kernel`, dilations 1, 2, 4, …), then a linear head on the
    /// last row.
    Tcn {
        /// Channels of every block.
        channels: usize,
        /// Kernel width.
        kernel: usize,
        /// Residual blocks.
        levels: usize,
    },
    /// DLinear (Zeng et al., 2023): the window split into a moving-average trend and the
    /// remainder, one linear map over both. (NLinear, a linear map of the window minus its
    /// last row, is `linear`: TNS already feeds targets relative to the last row and
    /// forecasts the change from it.)
    #[serde(rename = "dlinear")]
    DLinear {
        /// Moving-average window (odd).
        kernel: usize,
    },
    /// N-HiTS (Challu et al., 2023): `stacks × blocks` MLP blocks on the max-pooled window
    /// and future block, each subtracting its backcast from the window the next one reads
    /// and adding its forecast knots, interpolated over the horizon (see [`crate::nhits`]).
    #[serde(rename = "nhits")]
    NHits {
        /// Stacks (pooling rates, coarsest first).
        stacks: usize,
        /// Blocks per stack.
        blocks: usize,
        /// Width of each block's two hidden layers.
        hidden: usize,
        /// Pooling ratio between consecutive stacks (the last stack pools 1 row).
        pool: usize,
    },
    /// A small pre-norm transformer encoder (PatchTST-style tokens, Llama-style blocks): the
    /// window cut into patches of `patch` rows every `stride` rows (1: one token per row),
    /// each embedded by a linear map; `layers` blocks of grouped-query attention
    /// (bidirectional, or causal: a token attends to itself and earlier ones) with rotary
    /// position embeddings and a SwiGLU feed-forward, each behind an RMSNorm; a final RMSNorm
    /// and a linear head on the last token, or on every token flattened (PatchTST's head).
    /// With channel independence (PatchTST's default) each input channel is patched on its
    /// own and its tokens attend only to each other, through the same weights for every
    /// channel; the flattened head then reads every channel's tokens.
    Transformer {
        /// Token width.
        d_model: usize,
        /// Query heads.
        heads: usize,
        /// Key/value heads (divides `heads`).
        kv_heads: usize,
        /// Blocks.
        layers: usize,
        /// Rows per token.
        patch: usize,
        /// Rows between the first rows of consecutive tokens (default: `patch`, tokens that
        /// do not overlap).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
        /// Causal attention.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        causal: bool,
        /// The head reads every token (flattened) instead of the last.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flatten: bool,
        /// Channel independence: one token sequence per input channel (needs `flatten`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        independent: bool,
    },
    /// A diagonal state-space model (S4D-Real, Gu et al., 2022): each row embedded by a
    /// linear map to `d_model` channels; `layers` residual blocks, each an RMSNorm, one
    /// linear time-invariant state-space model of `state` real diagonal modes per channel
    /// (zero-order-hold discretization; see [`crate::s4d`]), SiLU and a linear map back into
    /// the residual stream; a final RMSNorm and a linear head on the last row.
    S4d {
        /// Channels.
        d_model: usize,
        /// Diagonal modes per channel.
        state: usize,
        /// Blocks.
        layers: usize,
    },
    /// A selective state-space model (Mamba, Gu & Dao, 2023): each row embedded by a linear
    /// map to `d_model` channels; `layers` residual Mamba blocks (see [`Layer::MambaBlock`]);
    /// a final RMSNorm and a linear head on the last row.
    Mamba {
        /// Channels of the residual stream.
        d_model: usize,
        /// Diagonal modes per inner channel.
        state: usize,
        /// Inner channels per residual channel.
        expand: usize,
        /// Width of the causal depthwise convolution.
        conv: usize,
        /// Blocks.
        layers: usize,
    },
}

/// The forms `--network` accepts, for error messages and help texts.
pub const NETWORK_SYNTAX: &str = "linear, mlp:W1[,W2,…] (hidden widths), gru:H (hidden size), lstm:H[,LAYERS] (hidden size, stacked layers), tcn:CHANNELS,KERNEL,LEVELS (causal convolutions), dlinear:K (odd moving-average window), nhits:STACKS,BLOCKS,HIDDEN,POOL (pooled MLP blocks), transformer:D_MODEL,HEADS,KV_HEADS,LAYERS[,PATCH[,STRIDE]][,causal][,flatten][,independent] (attention blocks; independent: one token sequence per channel, with flatten), s4d:D_MODEL,STATE,LAYERS (diagonal state-space blocks), mamba:D_MODEL,STATE,EXPAND,CONV,LAYERS (selective state-space blocks)";

impl NetworkConfig {
    /// The widths a user chose (for limits and zero checks).
    fn widths(&self) -> &[usize] {
        match self {
            Self::Linear => &[],
            Self::Mlp { hidden } => hidden,
            Self::Gru { hidden } => std::slice::from_ref(hidden),
            Self::DLinear { kernel } => std::slice::from_ref(kernel),
            Self::Lstm { hidden, .. } => std::slice::from_ref(hidden),
            Self::Tcn { channels, .. } => std::slice::from_ref(channels),
            Self::NHits { hidden, .. } => std::slice::from_ref(hidden),
            Self::Transformer { d_model, .. } => std::slice::from_ref(d_model),
            Self::S4d { d_model, .. } | Self::Mamba { d_model, .. } => {
                std::slice::from_ref(d_model)
            }
        }
    }

    /// Rows of the window one output of a TCN sees: `1 + 2 (K − 1)(2^levels − 1)`.
    pub fn receptive_field(&self) -> Option<usize> {
        match self {
            Self::Tcn { kernel, levels, .. } => Some(
                1 + 2 * kernel.saturating_sub(1) * (1usize << (*levels).min(30)).saturating_sub(1),
            ),
            _ => None,
        }
    }

    /// Checks the user's numbers: every width at least 1 and at most [`MAX_WIDTH`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.widths().contains(&0) {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        if let Self::DLinear { kernel } = self
            && kernel % 2 == 0
        {
            return Err(ConfigError::EvenKernel {
                network: self.to_string(),
                kernel: *kernel,
            });
        }
        if let Some(&width) = self.widths().iter().find(|w| **w > MAX_WIDTH) {
            return Err(ConfigError::Width { width });
        }
        let layers = match self {
            Self::Lstm { layers, .. } => *layers,
            Self::NHits { stacks, blocks, .. } => stacks.saturating_mul(*blocks),
            Self::Transformer { layers, .. }
            | Self::S4d { layers, .. }
            | Self::Mamba { layers, .. } => *layers,
            _ => self.widths().len(),
        };
        if layers > crate::config::MAX_LAYERS {
            return Err(ConfigError::Limit {
                what: "layers",
                value: layers,
                max: crate::config::MAX_LAYERS,
            });
        }
        if let Self::Tcn { kernel, levels, .. } = self
            && (*kernel == 0 || *levels == 0 || *levels > 16)
        {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        if let Self::NHits { stacks, pool, .. } = self
            && *stacks > 0
            && *pool > 0
        {
            // The first stack pools pool^(stacks − 1) rows.
            let ratio = u32::try_from(stacks - 1)
                .ok()
                .and_then(|e| pool.checked_pow(e));
            if ratio.is_none_or(|r| r > crate::config::MAX_ROWS) {
                return Err(ConfigError::Limit {
                    what: "rows pooled by the first N-HiTS stack",
                    value: ratio.unwrap_or(usize::MAX),
                    max: crate::config::MAX_ROWS,
                });
            }
        }
        if matches!(self, Self::NHits { pool: 0, .. }) {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        if let Self::Transformer {
            d_model,
            heads,
            kv_heads,
            patch,
            stride,
            flatten,
            independent,
            ..
        } = self
        {
            if *heads == 0 || *kv_heads == 0 || *patch == 0 || stride == &Some(0) {
                return Err(ConfigError::ZeroWidth {
                    network: self.to_string(),
                });
            }
            // The last token of the last channel would hide every other channel.
            if *independent && !*flatten {
                return Err(ConfigError::IndependentHead {
                    network: self.to_string(),
                });
            }
            // Rotary embeddings turn pairs of a head's values: its width must be even.
            if !heads.is_multiple_of(*kv_heads)
                || !d_model.is_multiple_of(*heads)
                || !(d_model / heads).is_multiple_of(2)
            {
                return Err(ConfigError::Heads {
                    network: self.to_string(),
                });
            }
        }
        if let Self::S4d { state, .. } = self
            && (*state == 0 || *state > MAX_WIDTH)
        {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        if let Self::Mamba {
            d_model,
            state,
            expand,
            conv,
            ..
        } = self
            && ([*state, *expand, *conv].contains(&0)
                || d_model.saturating_mul(*expand) > MAX_WIDTH
                || *state > MAX_WIDTH
                || *conv > MAX_WIDTH)
        {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        if layers == 0
            && matches!(
                self,
                Self::Lstm { .. }
                    | Self::NHits { .. }
                    | Self::Transformer { .. }
                    | Self::S4d { .. }
                    | Self::Mamba { .. }
            )
        {
            return Err(ConfigError::ZeroWidth {
                network: self.to_string(),
            });
        }
        Ok(())
    }

    /// The layer stack from a network input of shape `input` (the past window) and
    /// `future` values of known-future inputs (`horizon` rows) to `outputs` values
    /// (`[horizon, targets]`). The future block joins the vector the window is summarized
    /// into: right after flattening (linear, MLP), or the GRU's last state (before its
    /// head); N-HiTS reads it in every block. Tensor names are those of format version 1
    /// (`linear.*`, `mlp.{i}.*`, `gru.*` + `head.*`).
    pub fn layers(
        &self,
        input: Shape,
        future: usize,
        horizon: usize,
        outputs: usize,
    ) -> Result<Vec<LayerNode>, ConfigError> {
        self.validate()?;
        let mut stack = StackBuilder::new(input);
        let concat_future = |stack: &mut StackBuilder| {
            if future > 0 {
                stack.push("future", Layer::ConcatFuture { values: future })?;
            }
            Ok::<_, ConfigError>(())
        };
        match self {
            Self::Linear => {
                stack.push("flatten", Layer::Flatten)?;
                concat_future(&mut stack)?;
                stack.push("linear", Layer::Dense { outputs })?;
            }
            Self::Mlp { hidden } => {
                stack.push("flatten", Layer::Flatten)?;
                concat_future(&mut stack)?;
                for (i, &width) in hidden.iter().enumerate() {
                    stack.push(&format!("mlp.{i}"), Layer::Dense { outputs: width })?;
                    stack.push(
                        &format!("mlp.{i}.relu"),
                        Layer::Activation(Activation::Relu),
                    )?;
                }
                stack.push(&format!("mlp.{}", hidden.len()), Layer::Dense { outputs })?;
            }
            Self::Gru { hidden } => {
                stack.push("gru", Layer::Gru { hidden: *hidden })?;
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
            Self::Lstm { hidden, layers } => {
                for k in 0..*layers {
                    let layer = Layer::Lstm {
                        hidden: *hidden,
                        sequence: k + 1 < *layers,
                    };
                    stack.push(&format!("lstm.{k}"), layer)?;
                }
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
            Self::Tcn {
                channels,
                kernel,
                levels,
            } => {
                let steps = input.len() / input.channels().max(1);
                let field = self.receptive_field().unwrap_or(0);
                if field < steps {
                    return Err(ConfigError::ReceptiveField {
                        network: self.to_string(),
                        field,
                        lookback: steps,
                    });
                }
                for level in 0..*levels {
                    let block = Layer::TcnBlock {
                        channels: *channels,
                        kernel: *kernel,
                        dilation: 1 << level,
                    };
                    stack.push(&format!("tcn.{level}"), block)?;
                }
                stack.push("last", Layer::LastStep)?;
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
            Self::DLinear { kernel } => {
                stack.push("decompose", Layer::Decompose { kernel: *kernel })?;
                concat_future(&mut stack)?;
                stack.push("dlinear", Layer::Dense { outputs })?;
            }
            &Self::NHits {
                stacks,
                blocks,
                hidden,
                pool,
            } => {
                let horizon = horizon.max(1);
                let layer = Layer::Nhits {
                    stacks,
                    blocks,
                    hidden,
                    pool,
                    horizon,
                    targets: outputs / horizon,
                    future: future / horizon,
                };
                stack.push("nhits", layer)?;
            }
            &Self::Transformer {
                d_model,
                heads,
                kv_heads,
                layers,
                patch,
                stride,
                causal,
                flatten,
                independent,
            } => {
                let steps = input.len() / input.channels().max(1);
                let stride = stride.unwrap_or(patch);
                if !patches_tile(steps, patch, stride) {
                    return Err(ConfigError::Patch {
                        network: self.to_string(),
                        lookback: steps,
                    });
                }
                let embed = Layer::PatchEmbed {
                    patch,
                    stride,
                    d_model,
                    independent,
                };
                stack.push("embed", embed)?;
                let sequences = if independent { input.channels() } else { 1 };
                for i in 0..layers {
                    let block = Layer::TransformerBlock {
                        heads,
                        kv_heads,
                        ffn: 2 * d_model,
                        causal,
                        sequences,
                    };
                    stack.push(&format!("block.{i}"), block)?;
                }
                stack.push("norm", Layer::RmsNorm)?;
                if flatten {
                    stack.push("flatten", Layer::Flatten)?;
                } else {
                    stack.push("last", Layer::LastStep)?;
                }
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
            &Self::S4d {
                d_model,
                state,
                layers,
            } => {
                stack.push("embed", Layer::row_embed(d_model))?;
                for i in 0..layers {
                    stack.push(&format!("s4d.{i}"), Layer::S4dBlock { state })?;
                }
                stack.push("norm", Layer::RmsNorm)?;
                stack.push("last", Layer::LastStep)?;
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
            &Self::Mamba {
                d_model,
                state,
                expand,
                conv,
                layers,
            } => {
                stack.push("embed", Layer::row_embed(d_model))?;
                for i in 0..layers {
                    let block = Layer::MambaBlock {
                        state,
                        expand,
                        conv,
                    };
                    stack.push(&format!("mamba.{i}"), block)?;
                }
                stack.push("norm", Layer::RmsNorm)?;
                stack.push("last", Layer::LastStep)?;
                concat_future(&mut stack)?;
                stack.push("head", Layer::Dense { outputs })?;
            }
        }
        stack.finish(outputs)
    }
}

impl std::fmt::Display for NetworkConfig {
    /// The `--network` syntax (`mlp:64,64`), which [`str::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match self {
            Self::Linear => f.write_str("linear"),
            Self::Mlp { hidden } => write!(f, "mlp:{}", list(hidden)),
            Self::Gru { hidden } => write!(f, "gru:{hidden}"),
            Self::DLinear { kernel } => write!(f, "dlinear:{kernel}"),
            Self::Lstm { hidden, layers: 1 } => write!(f, "lstm:{hidden}"),
            Self::Lstm { hidden, layers } => write!(f, "lstm:{hidden},{layers}"),
            Self::Tcn {
                channels,
                kernel,
                levels,
            } => write!(f, "tcn:{channels},{kernel},{levels}"),
            Self::NHits {
                stacks,
                blocks,
                hidden,
                pool,
            } => write!(f, "nhits:{stacks},{blocks},{hidden},{pool}"),
            Self::Transformer {
                d_model,
                heads,
                kv_heads,
                layers,
                patch,
                stride,
                causal,
                flatten,
                independent,
            } => {
                write!(f, "transformer:{d_model},{heads},{kv_heads},{layers}")?;
                match stride.filter(|s| s != patch) {
                    Some(stride) => write!(f, ",{patch},{stride}")?,
                    None if *patch != 1 => write!(f, ",{patch}")?,
                    None => {}
                }
                if *causal {
                    write!(f, ",causal")?;
                }
                if *flatten {
                    write!(f, ",flatten")?;
                }
                if *independent {
                    write!(f, ",independent")?;
                }
                Ok(())
            }
            Self::S4d {
                d_model,
                state,
                layers,
            } => write!(f, "s4d:{d_model},{state},{layers}"),
            Self::Mamba {
                d_model,
                state,
                expand,
                conv,
                layers,
            } => write!(f, "mamba:{d_model},{state},{expand},{conv},{layers}"),
        }
    }
}

impl std::str::FromStr for NetworkConfig {
    type Err = ConfigError;

    /// Parses `linear`, `mlp:64,64`, `gru:32`, `lstm:32`, `lstm:32,2`, `dlinear:25`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::NetworkSpec(s.to_string());
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        // Words (the transformer's `causal`, `flatten` and `independent`) may follow the numbers.
        let mut words = Vec::new();
        let mut numbers: Vec<usize> = Vec::new();
        for a in args
            .split(',')
            .map(str::trim)
            .filter(|a| !args.is_empty() || !a.is_empty())
        {
            match a.parse() {
                Ok(n) if words.is_empty() => numbers.push(n),
                Err(_)
                    if ["causal", "flatten", "independent"].contains(&a) && !words.contains(&a) =>
                {
                    words.push(a)
                }
                _ => return Err(bad()),
            }
        }
        if !words.is_empty() && name.trim() != "transformer" {
            return Err(bad());
        }
        let network = match (name.trim(), numbers.as_slice()) {
            ("linear", []) => Self::Linear,
            ("mlp", [_, ..]) => Self::Mlp { hidden: numbers },
            ("gru", [hidden]) => Self::Gru { hidden: *hidden },
            ("dlinear", [kernel]) => Self::DLinear { kernel: *kernel },
            ("lstm", [hidden]) => Self::Lstm {
                hidden: *hidden,
                layers: 1,
            },
            ("lstm", [hidden, layers]) => Self::Lstm {
                hidden: *hidden,
                layers: *layers,
            },
            ("tcn", [channels, kernel, levels]) => Self::Tcn {
                channels: *channels,
                kernel: *kernel,
                levels: *levels,
            },
            ("transformer", [d_model, heads, kv_heads, layers, rest @ ..]) if rest.len() <= 2 => {
                Self::Transformer {
                    d_model: *d_model,
                    heads: *heads,
                    kv_heads: *kv_heads,
                    layers: *layers,
                    patch: rest.first().copied().unwrap_or(1),
                    stride: rest.get(1).copied(),
                    causal: words.contains(&"causal"),
                    flatten: words.contains(&"flatten"),
                    independent: words.contains(&"independent"),
                }
            }
            ("s4d", [d_model, state, layers]) => Self::S4d {
                d_model: *d_model,
                state: *state,
                layers: *layers,
            },
            ("mamba", [d_model, state, expand, conv, layers]) => Self::Mamba {
                d_model: *d_model,
                state: *state,
                expand: *expand,
                conv: *conv,
                layers: *layers,
            },
            ("nhits", [stacks, blocks, hidden, pool]) => Self::NHits {
                stacks: *stacks,
                blocks: *blocks,
                hidden: *hidden,
                pool: *pool,
            },
            _ => return Err(bad()),
        };
        network.validate()?;
        Ok(network)
    }
}

/// What flows between two layers, per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `steps` rows of `channels` values, row-major.
    Sequence {
        /// Time steps.
        steps: usize,
        /// Values per step.
        channels: usize,
    },
    /// A flat vector.
    Vector(usize),
}

impl Shape {
    /// Values per sample.
    pub fn len(self) -> usize {
        match self {
            Self::Sequence { steps, channels } => steps * channels,
            Self::Vector(n) => n,
        }
    }

    /// Values per step: the channels of a sequence, the length of a vector.
    pub fn channels(self) -> usize {
        match self {
            Self::Sequence { channels, .. } => channels,
            Self::Vector(n) => n,
        }
    }

    /// Whether the shape holds no values.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sequence { steps, channels } => write!(f, "[{steps}, {channels}]"),
            Self::Vector(n) => write!(f, "[{n}]"),
        }
    }
}

/// Element-wise activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
}

/// One layer: what it computes, independent of any backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount)]
pub enum Layer {
    /// A sequence `[steps, channels]` read as one vector `[steps · channels]` (no data moves).
    Flatten,
    /// `y = W x + b` on a vector: tensors `{name}.weight` `[outputs, inputs]` and
    /// `{name}.bias` `[outputs]`.
    Dense {
        /// Output width.
        outputs: usize,
    },
    /// An element-wise activation; shape unchanged.
    Activation(Activation),
    /// A GRU over a sequence (PyTorch convention: gates stacked `r, z, n`, two biases,
    /// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`), started from zero; outputs the last
    /// hidden state. Tensors `{name}.weight_ih_l0` `[3H, C]`, `{name}.weight_hh_l0`
    /// `[3H, H]`, `{name}.bias_ih_l0` and `{name}.bias_hh_l0` `[3H]`.
    Gru {
        /// Hidden size `H`.
        hidden: usize,
    },
    /// Appends the model's normalized future block (`[horizon, future]`, flattened) to a
    /// vector: `[n]` → `[n + values]`. Reads the second part of the model input.
    ConcatFuture {
        /// Values appended (`horizon × future width`).
        values: usize,
    },
    /// An LSTM over a sequence (PyTorch convention: gates stacked `i, f, g, o`, two biases,
    /// `c ← f ⊙ c + i ⊙ g`, `h = o ⊙ tanh c`), started from zero. Outputs every step's hidden
    /// state `[steps, H]` when `sequence` (a layer below another), else the last one `[H]`.
    /// Tensors `{name}.weight_ih_l0` `[4H, C]`, `{name}.weight_hh_l0` `[4H, H]`,
    /// `{name}.bias_ih_l0` and `{name}.bias_hh_l0` `[4H]`.
    Lstm {
        /// Hidden size `H`.
        hidden: usize,
        /// Whether every step's state is the output.
        sequence: bool,
    },
    /// A TCN residual block over a sequence `[L, C]` → `[L, channels]`: two causal
    /// convolutions (row `t` of the output reads rows `t − (K − 1 − k)·dilation`,
    /// `k = 0..K`, zeros before the first), each followed by ReLU, plus the input (through a
    /// 1×1 convolution when `C ≠ channels`), then ReLU of the sum, as in Bai et al. Plain
    /// convolutions (no weight normalization, no dropout).
    /// Tensors `{name}.conv1.weight` `[channels, C, K]`, `{name}.conv1.bias`,
    /// `{name}.conv2.weight` `[channels, channels, K]`, `{name}.conv2.bias` `[channels]`, and
    /// `{name}.down.weight` `[channels, C, 1]`, `{name}.down.bias` when `C ≠ channels`.
    TcnBlock {
        /// Output channels.
        channels: usize,
        /// Kernel width `K`.
        kernel: usize,
        /// Dilation.
        dilation: usize,
    },
    /// The last row of a sequence: `[L, C]` → `[C]`.
    LastStep,
    /// Splits a sequence `[L, C]` into its moving-average trend and the remainder, flattened
    /// one after the other: `[2·L·C]`. The trend of row `i` is the mean of rows
    /// `i − p ..= i + p` (`p = (kernel − 1) / 2`), rows before the first and after the last
    /// reading the first and last row (DLinear's padding). No tensors.
    Decompose {
        /// Moving-average window (odd).
        kernel: usize,
    },
    /// N-HiTS over a sequence `[L, C]` and the future block `[H, F]` (read from the second
    /// part of the model input, like `ConcatFuture`) → `[H · T]`: `stacks × blocks` blocks
    /// (see [`crate::nhits`] and [`LayerNode::nhits_blocks`]). Block `k` max-pools the
    /// residual window and the future block by its stack's kernel, then
    /// `h = relu(W₁ relu(W₀ x + b₀) + b₁)`, backcast `W_b h + b_b` (`[L, C]`, subtracted
    /// from the residual), knots `W_f h + b_f` (`[knots, T]`, interpolated linearly over
    /// the horizon and added to the output). Tensors per block `{name}.{k}.mlp.0.*`,
    /// `{name}.{k}.mlp.1.*`, `{name}.{k}.backcast.*` (not the last block) and
    /// `{name}.{k}.forecast.*`.
    Nhits {
        /// Stacks.
        stacks: usize,
        /// Blocks per stack.
        blocks: usize,
        /// MLP width.
        hidden: usize,
        /// Pooling ratio between stacks.
        pool: usize,
        /// Horizon `H`.
        horizon: usize,
        /// Targets `T`.
        targets: usize,
        /// Future values per predicted step `F`.
        future: usize,
    },
    /// Cuts a sequence `[L, C]` into `P = (L − patch) / stride + 1` tokens of `patch`
    /// consecutive rows, token `p` starting at row `p · stride`, and embeds each, flattened
    /// (`[patch · C]`), by `W x + b` → `[P, d_model]`. Tensors `{name}.weight`
    /// `[d_model, patch · C]`, `{name}.bias` `[d_model]`. When `independent`, each channel
    /// is cut on its own and every token holds `patch` values of one channel, embedded by
    /// the same `W` `[d_model, patch]`: `[C · P, d_model]`, channel by channel.
    PatchEmbed {
        /// Rows per token.
        patch: usize,
        /// Rows between the first rows of consecutive tokens (`≤ patch`).
        stride: usize,
        /// Token width.
        d_model: usize,
        /// One token sequence per channel.
        independent: bool,
    },
    /// A pre-norm transformer block over tokens `[P, d]` → `[P, d]` (no biases):
    /// `h = x + W_o · attention(rope(W_q n₁), rope(W_k n₁), W_v n₁)` with `n₁ = rmsnorm₁(x)`,
    /// then `y = h + W_down · (silu(W_gate n₂) ⊙ W_up n₂)` with `n₂ = rmsnorm₂(h)`. Attention
    /// is `softmax(q kᵀ / √d_head) v` per head (bidirectional, or causal: token `i` attends
    /// to tokens `j ≤ i` only), `heads / kv_heads` query
    /// heads sharing each key/value head (grouped-query attention); rotary embeddings turn
    /// each head's pairs `(i, i + d_head/2)` by `p · 10000^(−2i/d_head)` at token `p`.
    /// RMSNorm is `x / √(mean(x²) + 1e-5) ⊙ g`. Tensors `{name}.norm1.weight` `[d]`,
    /// `{name}.q.weight` `[d, d]`, `{name}.k.weight` and `{name}.v.weight`
    /// `[kv_heads · d_head, d]`, `{name}.o.weight` `[d, d]`, `{name}.norm2.weight` `[d]`,
    /// `{name}.gate.weight` and `{name}.up.weight` `[ffn, d]`, `{name}.down.weight`
    /// `[d, ffn]`. With `sequences` > 1 the tokens are that many independent sequences of
    /// equal length, one after the other: a token attends only within its own, and its
    /// rotary position counts from that sequence's start — the block applied to each alone.
    TransformerBlock {
        /// Query heads.
        heads: usize,
        /// Key/value heads.
        kv_heads: usize,
        /// Feed-forward width.
        ffn: usize,
        /// Causal attention.
        causal: bool,
        /// Independent token sequences (1, or the channels under channel independence).
        sequences: usize,
    },
    /// RMSNorm of every row of a sequence (`x / √(mean(x²) + 1e-5) ⊙ g`); tensor
    /// `{name}.weight` `[C]`.
    RmsNorm,
    /// A residual S4D block over a sequence `[L, d]` → `[L, d]`: `u = rmsnorm(x)`, then per
    /// channel `c` a linear state-space model of `state` real diagonal modes started from
    /// zero, `s_t = Ā s_{t−1} + B̄ u_t`, `z_t = C · s_t + D u_t` (zero-order hold:
    /// `A = −exp(log_a)`, `Δ = exp(log_dt)`, `Ā = exp(ΔA)`, `B̄ = (Ā − 1) / A`; `B` is 1,
    /// its scale absorbed by `C`), and `y = x + W silu(z) + b`. Tensors `{name}.norm.weight`
    /// `[d]`, `{name}.log_dt` `[d]`, `{name}.log_a` `[d, state]`, `{name}.c` `[d, state]`,
    /// `{name}.skip` (`D`) `[d]`, `{name}.out.weight` `[d, d]`, `{name}.out.bias` `[d]`.
    /// See [`crate::s4d`].
    S4dBlock {
        /// Diagonal modes per channel.
        state: usize,
    },
    /// A residual Mamba block over a sequence `[L, d]` → `[L, d]` (Gu & Dao, 2023), with
    /// `E = expand · d` inner channels and `R = ⌈d / 16⌉` step ranks
    /// ([`crate::mamba::MambaDims`]): `u = rmsnorm(x)`; `[v, z] = W_in u` (`[2E]` per row);
    /// `v ← silu(conv(v))`, a causal depthwise convolution of width `conv` with bias (zeros
    /// before the first row); `[δ, B, C] = W_x v` (`[R + 2N]`); `Δ = softplus(W_Δ δ + b_Δ)`
    /// (`[E]`); per inner channel `e` the selective scan started from zero,
    /// `h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t v_t`, `o_t = C_t · h_t + D v_t` with
    /// `A = −exp(a_log)` (`[E, N]`); then `y = x + W_out (o ⊙ silu(z))`. Tensors
    /// `{name}.norm.weight` `[d]`, `{name}.in.weight` `[2E, d]`, `{name}.conv.weight`
    /// `[E, conv]` (tap `k` reads row `t − (conv − 1 − k)`), `{name}.conv.bias` `[E]`,
    /// `{name}.x.weight` `[R + 2N, E]`, `{name}.dt.weight` `[E, R]`, `{name}.dt.bias` `[E]`,
    /// `{name}.a_log` `[E, N]`, `{name}.skip` `[E]`, `{name}.out.weight` `[d, E]`.
    MambaBlock {
        /// Diagonal modes per inner channel `N`.
        state: usize,
        /// Inner channels per residual channel.
        expand: usize,
        /// Width of the causal convolution.
        conv: usize,
    },
}

/// Whether tokens of `patch` rows every `stride` rows tile a sequence of `steps` rows: the
/// last token ends on the last row and no row is skipped.
pub fn patches_tile(steps: usize, patch: usize, stride: usize) -> bool {
    patch > 0
        && stride > 0
        && stride <= patch
        && steps >= patch
        && (steps - patch).is_multiple_of(stride)
}

impl Layer {
    /// The embedding of one row per token (S4D, Mamba).
    pub fn row_embed(d_model: usize) -> Self {
        Self::PatchEmbed {
            patch: 1,
            stride: 1,
            d_model,
            independent: false,
        }
    }
}

/// The ε of every RMSNorm.
pub const RMS_NORM_EPS: f64 = 1e-5;

/// The base of the rotary embeddings' frequencies.
pub const ROPE_THETA: f64 = 10_000.0;

/// The rotary embedding angles of `tokens` positions for heads of width `head_dim`:
/// `[tokens, head_dim / 2]`, `angle[p][i] = p · θ^(−2i/head_dim)`. Every backend turns the
/// pair `(x[i], x[i + head_dim/2])` of a head by `angle[p][i]`.
pub fn rope_angles(tokens: usize, head_dim: usize) -> Vec<f64> {
    let half = head_dim / 2;
    (0..tokens)
        .flat_map(|p| {
            (0..half).map(move |i| p as f64 * ROPE_THETA.powf(-2.0 * i as f64 / head_dim as f64))
        })
        .collect()
}

/// The moving-average weights of [`Layer::Decompose`] as a matrix `W [L, L]`, source row
/// by trend row: `trend[i] = Σ_j W[j, i] · x[j]` per channel (the rows padded beyond the
/// window's ends fold onto its first and last). Each column sums to 1. Laid out so that a
/// backend computes the trend as `[…, C, L] · W`.
pub fn moving_average_matrix(steps: usize, kernel: usize) -> Vec<f64> {
    let p = (kernel / 2) as isize;
    let mut w = vec![0.0; steps * steps];
    let last = steps as isize - 1;
    for i in 0..steps {
        for j in i as isize - p..=i as isize + p {
            w[j.clamp(0, last) as usize * steps + i] += 1.0 / kernel as f64;
        }
    }
    w
}

impl Layer {
    /// The layer type's name, as the conformance suite and `tns inspect` print it.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Flatten => "flatten",
            Self::Dense { .. } => "dense",
            Self::Activation(Activation::Relu) => "relu",
            Self::Gru { .. } => "gru",
            Self::ConcatFuture { .. } => "concat-future",
            Self::Decompose { .. } => "decompose",
            Self::Lstm { .. } => "lstm",
            Self::TcnBlock { .. } => "tcn-block",
            Self::LastStep => "last-step",
            Self::Nhits { .. } => "nhits",
            Self::PatchEmbed { .. } => "patch-embed",
            Self::TransformerBlock { .. } => "transformer-block",
            Self::RmsNorm => "rms-norm",
            Self::S4dBlock { .. } => "s4d-block",
            Self::MambaBlock { .. } => "mamba-block",
        }
    }

    /// Every layer type, one representative each (the conformance suite checks that its
    /// examples cover them all).
    pub const TYPES: [Layer; 15] = [
        Self::Flatten,
        Self::Dense { outputs: 1 },
        Self::Activation(Activation::Relu),
        Self::Gru { hidden: 1 },
        Self::ConcatFuture { values: 1 },
        Self::Decompose { kernel: 1 },
        Self::Lstm {
            hidden: 1,
            sequence: false,
        },
        Self::TcnBlock {
            channels: 1,
            kernel: 1,
            dilation: 1,
        },
        Self::LastStep,
        Self::Nhits {
            stacks: 1,
            blocks: 1,
            hidden: 1,
            pool: 1,
            horizon: 1,
            targets: 1,
            future: 0,
        },
        Self::PatchEmbed {
            patch: 1,
            stride: 1,
            d_model: 1,
            independent: false,
        },
        Self::TransformerBlock {
            heads: 1,
            kv_heads: 1,
            ffn: 1,
            causal: false,
            sequences: 1,
        },
        Self::RmsNorm,
        Self::S4dBlock { state: 1 },
        Self::MambaBlock {
            state: 1,
            expand: 1,
            conv: 1,
        },
    ];

    /// The output shape for `input`, or why the layer cannot take it.
    pub fn output_shape(self, input: Shape) -> Option<Shape> {
        match (self, input) {
            (Self::Flatten, Shape::Sequence { .. }) => Some(Shape::Vector(input.len())),
            (Self::Dense { outputs }, Shape::Vector(_)) => Some(Shape::Vector(outputs)),
            (Self::Activation(_), shape) => Some(shape),
            (Self::Gru { hidden }, Shape::Sequence { .. }) => Some(Shape::Vector(hidden)),
            (Self::ConcatFuture { values }, Shape::Vector(n)) => Some(Shape::Vector(n + values)),
            (Self::Decompose { .. }, Shape::Sequence { .. }) => {
                Some(Shape::Vector(2 * input.len()))
            }
            (Self::TcnBlock { channels, .. }, Shape::Sequence { steps, .. }) => {
                Some(Shape::Sequence { steps, channels })
            }
            (Self::LastStep, Shape::Sequence { channels, .. }) => Some(Shape::Vector(channels)),
            (
                Self::Nhits {
                    horizon, targets, ..
                },
                Shape::Sequence { .. },
            ) => Some(Shape::Vector(horizon * targets)),
            (
                Self::PatchEmbed {
                    patch,
                    stride,
                    d_model,
                    independent,
                },
                Shape::Sequence { steps, channels },
            ) if patches_tile(steps, patch, stride) => Some(Shape::Sequence {
                steps: ((steps - patch) / stride + 1) * if independent { channels } else { 1 },
                channels: d_model,
            }),
            (Self::TransformerBlock { sequences, .. }, Shape::Sequence { steps, .. })
                if sequences > 0 && steps.is_multiple_of(sequences) =>
            {
                Some(input)
            }
            (
                Self::RmsNorm | Self::S4dBlock { .. } | Self::MambaBlock { .. },
                Shape::Sequence { .. },
            ) => Some(input),
            (Self::Lstm { hidden, sequence }, Shape::Sequence { steps, .. }) => Some(if sequence {
                Shape::Sequence {
                    steps,
                    channels: hidden,
                }
            } else {
                Shape::Vector(hidden)
            }),
            _ => None,
        }
    }
}

/// One trainable tensor of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Full tensor name (`mlp.0.weight`).
    pub name: String,
    /// Shape (weights `[out, in]`).
    pub shape: Vec<usize>,
    /// How training initializes it.
    pub init: Init,
    /// Whether this is a weight matrix (INT8 quantization applies to these).
    pub matrix: bool,
}

/// How a tensor starts before training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `U(−bound, bound)` (PyTorch's defaults: `1/√fan_in` for dense layers, `1/√H` for
    /// every GRU tensor).
    Uniform(f32),
    /// Every value 1 (a norm's gain).
    One,
    /// `U(ln low, ln high)`: the logarithm of a log-uniform draw (an S4D layer's step
    /// sizes, as the paper draws them).
    LogUniform(f32, f32),
    /// `ln(n + 1)` at state `n` of every row of `[rows, states]`: S4D-Real's `A = −(n + 1)`
    /// stored as `ln(−A)`.
    S4dReal,
    /// `softplus⁻¹(Δ)` for `Δ` log-uniform in `[low, high]` (Mamba's step bias, so that
    /// `softplus(bias)` starts at such a step).
    SoftplusInverseLogUniform(f32, f32),
}

/// A layer placed in a network: its tensors' name prefix and its shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNode {
    /// Name prefix of the layer's tensors (and of its ONNX nodes).
    pub name: String,
    /// What it computes.
    pub layer: Layer,
    /// Shape it reads.
    pub input: Shape,
    /// Shape it writes.
    pub output: Shape,
}

impl LayerNode {
    /// Values one token of a [`Layer::PatchEmbed`] reads: `patch` rows of every channel, or
    /// of one channel under channel independence (0 for other layers).
    pub fn token_inputs(&self) -> usize {
        match self.layer {
            Layer::PatchEmbed {
                patch,
                independent: true,
                ..
            } => patch,
            Layer::PatchEmbed { patch, .. } => patch * self.input.channels(),
            _ => 0,
        }
    }

    /// A Mamba block's dimensions (`None` for other layers).
    pub fn mamba_dims(&self) -> Option<crate::mamba::MambaDims> {
        match self.layer {
            Layer::MambaBlock {
                state,
                expand,
                conv,
            } => Some(crate::mamba::MambaDims::of(
                self.input.channels(),
                state,
                expand,
                conv,
            )),
            _ => None,
        }
    }

    /// The layer's tensors in initialization order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let param = |suffix: &str, shape: Vec<usize>, fan_in: usize, matrix: bool| ParamSpec {
            name: format!("{}.{suffix}", self.name),
            shape,
            init: Init::Uniform(1.0 / (fan_in.max(1) as f32).sqrt()),
            matrix,
        };
        match (self.layer, self.input) {
            (
                Layer::Flatten
                | Layer::Activation(_)
                | Layer::ConcatFuture { .. }
                | Layer::Decompose { .. }
                | Layer::LastStep,
                _,
            ) => Vec::new(),
            (
                Layer::TcnBlock {
                    channels, kernel, ..
                },
                input,
            ) => {
                // PyTorch's Conv1d bounds: 1/√(in_channels · kernel). Not INT8 (`matrix:
                // false`): the engine's integer kernels are dense products.
                let c = input.channels();
                let mut p = vec![
                    param("conv1.weight", vec![channels, c, kernel], c * kernel, false),
                    param("conv1.bias", vec![channels], c * kernel, false),
                    param(
                        "conv2.weight",
                        vec![channels, channels, kernel],
                        channels * kernel,
                        false,
                    ),
                    param("conv2.bias", vec![channels], channels * kernel, false),
                ];
                if c != channels {
                    p.push(param("down.weight", vec![channels, c, 1], c, false));
                    p.push(param("down.bias", vec![channels], c, false));
                }
                p
            }
            (Layer::Nhits { .. }, input) => self
                .nhits_blocks()
                .iter()
                .flat_map(|b| {
                    let dense = |part: &str, outputs: usize, inputs: usize| {
                        let weight = format!("{}.{part}.weight", b.prefix);
                        let bias = format!("{}.{part}.bias", b.prefix);
                        let bound = 1.0 / (inputs.max(1) as f32).sqrt();
                        [
                            ParamSpec {
                                name: weight,
                                shape: vec![outputs, inputs],
                                init: Init::Uniform(bound),
                                matrix: true,
                            },
                            ParamSpec {
                                name: bias,
                                shape: vec![outputs],
                                init: Init::Uniform(bound),
                                matrix: false,
                            },
                        ]
                    };
                    let (hidden, targets) =
                        self.nhits_dims().map_or((0, 0), |d| (d.hidden, d.targets));
                    let mut p = Vec::new();
                    p.extend(dense("mlp.0", hidden, b.inputs));
                    p.extend(dense("mlp.1", hidden, hidden));
                    if b.backcast {
                        p.extend(dense("backcast", input.len(), hidden));
                    }
                    p.extend(dense("forecast", b.knots * targets, hidden));
                    p
                })
                .collect(),
            (Layer::PatchEmbed { d_model, .. }, _) => {
                let inputs = self.token_inputs();
                vec![
                    param("weight", vec![d_model, inputs], inputs, true),
                    param("bias", vec![d_model], inputs, false),
                ]
            }
            (Layer::RmsNorm, input) => vec![ParamSpec {
                name: format!("{}.weight", self.name),
                shape: vec![input.channels()],
                init: Init::One,
                matrix: false,
            }],
            (
                Layer::TransformerBlock {
                    heads,
                    kv_heads,
                    ffn,
                    ..
                },
                input,
            ) => {
                let d = input.channels();
                let kv = kv_heads * (d / heads.max(1));
                let norm = |name: &str| ParamSpec {
                    name: format!("{}.{name}.weight", self.name),
                    shape: vec![d],
                    init: Init::One,
                    matrix: false,
                };
                vec![
                    norm("norm1"),
                    param("q.weight", vec![d, d], d, true),
                    param("k.weight", vec![kv, d], d, true),
                    param("v.weight", vec![kv, d], d, true),
                    param("o.weight", vec![d, d], d, true),
                    norm("norm2"),
                    param("gate.weight", vec![ffn, d], d, true),
                    param("up.weight", vec![ffn, d], d, true),
                    param("down.weight", vec![d, ffn], ffn, true),
                ]
            }
            (Layer::S4dBlock { state }, input) => {
                let d = input.channels();
                let tensor = |part: &str, shape: Vec<usize>, init: Init| ParamSpec {
                    name: format!("{}.{part}", self.name),
                    shape,
                    init,
                    matrix: false,
                };
                vec![
                    tensor("norm.weight", vec![d], Init::One),
                    tensor(
                        "log_dt",
                        vec![d],
                        Init::LogUniform(crate::s4d::DT_MIN, crate::s4d::DT_MAX),
                    ),
                    tensor("log_a", vec![d, state], Init::S4dReal),
                    // S4D draws C from N(0, 1); U(±√3) has the same variance.
                    tensor("c", vec![d, state], Init::Uniform(3f32.sqrt())),
                    tensor("skip", vec![d], Init::Uniform(1.0)),
                    param("out.weight", vec![d, d], d, true),
                    param("out.bias", vec![d], d, false),
                ]
            }
            (Layer::MambaBlock { .. }, input) => {
                let m = self.mamba_dims().unwrap_or(crate::mamba::MambaDims::of(
                    input.channels(),
                    1,
                    1,
                    1,
                ));
                let (d, e, n, r, k) = (m.d_model, m.inner, m.state, m.rank, m.conv);
                let tensor = |part: &str, shape: Vec<usize>, init: Init, matrix: bool| ParamSpec {
                    name: format!("{}.{part}", self.name),
                    shape,
                    init,
                    matrix,
                };
                let bound = |fan_in: usize| Init::Uniform(1.0 / (fan_in.max(1) as f32).sqrt());
                vec![
                    tensor("norm.weight", vec![d], Init::One, false),
                    tensor("in.weight", vec![2 * e, d], bound(d), true),
                    // PyTorch's depthwise Conv1d bound: 1/√(1 · width).
                    tensor("conv.weight", vec![e, k], bound(k), false),
                    tensor("conv.bias", vec![e], bound(k), false),
                    tensor("x.weight", vec![r + 2 * n, e], bound(e), true),
                    tensor("dt.weight", vec![e, r], bound(r), true),
                    tensor(
                        "dt.bias",
                        vec![e],
                        Init::SoftplusInverseLogUniform(crate::s4d::DT_MIN, crate::s4d::DT_MAX),
                        false,
                    ),
                    tensor("a_log", vec![e, n], Init::S4dReal, false),
                    tensor("skip", vec![e], Init::One, false),
                    tensor("out.weight", vec![d, e], bound(e), true),
                ]
            }
            (Layer::Dense { outputs }, input) => {
                let inputs = input.len();
                vec![
                    param("weight", vec![outputs, inputs], inputs, true),
                    param("bias", vec![outputs], inputs, false),
                ]
            }
            (Layer::Gru { hidden: h }, input) => {
                let channels = input.channels();
                vec![
                    param("weight_ih_l0", vec![3 * h, channels], h, true),
                    param("weight_hh_l0", vec![3 * h, h], h, true),
                    param("bias_ih_l0", vec![3 * h], h, false),
                    param("bias_hh_l0", vec![3 * h], h, false),
                ]
            }
            (Layer::Lstm { hidden: h, .. }, input) => {
                let channels = input.channels();
                vec![
                    param("weight_ih_l0", vec![4 * h, channels], h, true),
                    param("weight_hh_l0", vec![4 * h, h], h, true),
                    param("bias_ih_l0", vec![4 * h], h, false),
                    param("bias_hh_l0", vec![4 * h], h, false),
                ]
            }
        }
    }

    /// Trainable scalars of the layer.
    pub fn parameter_count(&self) -> usize {
        self.params()
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Multiply–accumulate operations of one forward pass of one sample.
    pub fn macs(&self) -> usize {
        match (self.layer, self.input) {
            (Layer::Flatten | Layer::Activation(_) | Layer::ConcatFuture { .. }, _) => 0,
            (Layer::Dense { outputs }, input) => outputs * input.len(),
            (Layer::Gru { hidden: h }, Shape::Sequence { steps, channels }) => {
                steps * 3 * h * (channels + h)
            }
            (Layer::Lstm { hidden: h, .. }, Shape::Sequence { steps, channels }) => {
                steps * 4 * h * (channels + h)
            }
            (Layer::Gru { .. } | Layer::Lstm { .. }, Shape::Vector(_)) => 0,
            (Layer::Decompose { kernel }, input) => kernel * input.len(),
            (Layer::LastStep, _) => 0,
            (
                Layer::TcnBlock {
                    channels, kernel, ..
                },
                Shape::Sequence { steps, channels: c },
            ) => {
                let down = if c != channels { channels * c } else { 0 };
                steps * (channels * c * kernel + channels * channels * kernel + down)
            }
            (Layer::TcnBlock { .. }, Shape::Vector(_)) => 0,
            (
                Layer::Nhits {
                    hidden,
                    horizon,
                    targets,
                    ..
                },
                input,
            ) => self
                .nhits_blocks()
                .iter()
                .map(|b| {
                    let backcast = if b.backcast { input.len() } else { 0 };
                    hidden * (b.inputs + hidden + backcast + b.knots * targets)
                        + 2 * horizon * targets
                })
                .sum(),
            (Layer::PatchEmbed { d_model, .. }, _) => {
                d_model * self.token_inputs() * (self.output.len() / d_model.max(1))
            }
            (Layer::RmsNorm, input) => input.len(),
            (
                Layer::TransformerBlock {
                    heads,
                    kv_heads,
                    ffn,
                    sequences,
                    ..
                },
                Shape::Sequence { steps, channels: d },
            ) => {
                let kv = kv_heads * (d / heads.max(1));
                // Projections and feed-forward per token, then scores and mixing per pair
                // of tokens in one sequence.
                steps * (2 * d * d + 2 * kv * d + 3 * ffn * d)
                    + 2 * steps * (steps / sequences.max(1)) * d
            }
            (Layer::TransformerBlock { .. }, Shape::Vector(_)) => 0,
            // Per step and channel: the norm, each mode's update and read-out, the skip;
            // then the output map.
            (Layer::S4dBlock { state }, input) => {
                let (d, steps) = (input.channels(), input.len() / input.channels().max(1));
                steps * d * (2 + 2 * state + d)
            }
            (Layer::MambaBlock { .. }, input) => {
                let steps = input.len() / input.channels().max(1);
                self.mamba_dims().map_or(0, |m| {
                    let (d, e, n, r) = (m.d_model, m.inner, m.state, m.rank);
                    // Per row: norm, input map, convolution, the Δ/B/C map, Δ's map, the
                    // scan's update and read-out, the gate, the output map.
                    steps
                        * (d + 2 * e * d
                            + e * m.conv
                            + (r + 2 * n) * e
                            + e * r
                            + 3 * e * n
                            + e
                            + d * e)
                })
            }
        }
    }
}

/// Places layers one after the other, checking that each accepts its input.
struct StackBuilder {
    nodes: Vec<LayerNode>,
    shape: Shape,
}

impl StackBuilder {
    fn new(input: Shape) -> Self {
        Self {
            nodes: Vec::new(),
            shape: input,
        }
    }

    fn push(&mut self, name: &str, layer: Layer) -> Result<(), ConfigError> {
        let output = layer
            .output_shape(self.shape)
            .ok_or_else(|| ConfigError::LayerInput {
                layer: name.to_string(),
                kind: layer.type_name(),
                input: self.shape.to_string(),
            })?;
        self.nodes.push(LayerNode {
            name: name.to_string(),
            layer,
            input: self.shape,
            output,
        });
        self.shape = output;
        Ok(())
    }

    fn finish(self, outputs: usize) -> Result<Vec<LayerNode>, ConfigError> {
        if self.shape != Shape::Vector(outputs) {
            return Err(ConfigError::NetworkOutput {
                found: self.shape.to_string(),
                expected: outputs,
            });
        }
        Ok(self.nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_syntax_round_trips() {
        for s in [
            "linear",
            "mlp:64,64",
            "mlp:8",
            "gru:32",
            "dlinear:25",
            "lstm:8",
            "lstm:8,3",
        ] {
            let n: NetworkConfig = s.parse().unwrap();
            assert_eq!(n.to_string(), s);
        }
        for bad in [
            "",
            "gru",
            "gru:",
            "gru:4,4",
            "mlp",
            "mlp:0",
            "lstm",
            "lstm:4,0",
            "lstm:4,2,1",
            "tcn:4,3",
            "tcn:4,0,2",
            "linear:3",
            "gru:x",
            "dlinear",
            "dlinear:4",
            "dlinear:0",
            "dlinear:3,3",
        ] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad:?} parsed");
        }
        let err = "conv:3".parse::<NetworkConfig>().unwrap_err().to_string();
        assert!(err.contains(NETWORK_SYNTAX), "{err}");
    }

    #[test]
    fn the_moving_average_is_dlinears_padded_mean_and_sums_back() {
        // L = 4, kernel 3: rows padded as x0, x0..x3, x3.
        let a = moving_average_matrix(4, 3);
        let third = 1.0 / 3.0;
        assert_eq!(
            a,
            [
                2.0 * third,
                third,
                0.0,
                0.0, //
                third,
                third,
                third,
                0.0, //
                0.0,
                third,
                third,
                third, //
                0.0,
                0.0,
                third,
                2.0 * third
            ]
        );
        // Kernel 1 is the identity: no trend beyond the row itself.
        assert_eq!(moving_average_matrix(2, 1), [1.0, 0.0, 0.0, 1.0]);
        // A kernel wider than the window still averages kernel rows (padding folds in).
        let wide = moving_average_matrix(2, 5);
        assert!((wide[0] - 0.6).abs() < 1e-15 && (wide[1] - 0.4).abs() < 1e-15);
        // An asymmetric case: L = 3, kernel 5 — the trend of row 0 reads x0 three times.
        let b = moving_average_matrix(3, 5);
        assert!((b[0] - 0.6).abs() < 1e-15 && (b[3] - 0.2).abs() < 1e-15);
        assert!((0..3).all(|i| ((0..3).map(|j| b[j * 3 + i]).sum::<f64>() - 1.0).abs() < 1e-15));
        // Trend plus remainder gives the input back exactly on values whose sums are exact.
        let x = [1.0, 4.0, -2.0, 8.0];
        for i in 0..4 {
            let trend: f64 = (0..4).map(|j| a[j * 4 + i] * x[j]).sum();
            assert_eq!(trend + (x[i] - trend), x[i]);
        }
        let dlinear: NetworkConfig = "dlinear:3".parse().unwrap();
        let layers = dlinear
            .layers(
                Shape::Sequence {
                    steps: 5,
                    channels: 2,
                },
                0,
                1,
                2,
            )
            .unwrap();
        assert_eq!(layers[0].output, Shape::Vector(20));
        // Parameters: one dense map from trend and remainder (2·L·C) to the outputs.
        let params: usize = layers.iter().map(LayerNode::parameter_count).sum();
        assert_eq!(params, 2 * 20 + 2);
        assert!(
            "dlinear:4"
                .parse::<NetworkConfig>()
                .unwrap_err()
                .to_string()
                .contains("odd")
        );
    }

    #[test]
    fn stacked_lstms_pass_sequences_and_count_their_parameters() {
        let input = Shape::Sequence {
            steps: 6,
            channels: 3,
        };
        let layers = "lstm:5,2"
            .parse::<NetworkConfig>()
            .unwrap()
            .layers(input, 0, 1, 2)
            .unwrap();
        let outputs: Vec<_> = layers.iter().map(|l| l.output).collect();
        assert_eq!(
            outputs,
            [
                Shape::Sequence {
                    steps: 6,
                    channels: 5
                },
                Shape::Vector(5),
                Shape::Vector(2)
            ]
        );
        // 4H(C + H) + 8H per layer (PyTorch's count), then the head.
        let per_layer = |c: usize| 4 * 5 * (c + 5) + 8 * 5;
        let total: usize = layers.iter().map(LayerNode::parameter_count).sum();
        assert_eq!(total, per_layer(3) + per_layer(5) + 5 * 2 + 2);
    }

    #[test]
    fn a_tcn_must_see_the_whole_window() {
        let tcn: NetworkConfig = "tcn:8,3,3".parse().unwrap();
        // 1 + 2·2·(1 + 2 + 4) = 29 rows.
        assert_eq!(tcn.receptive_field(), Some(29));
        let at = |steps| tcn.layers(Shape::Sequence { steps, channels: 2 }, 0, 1, 1);
        assert!(at(29).is_ok());
        let err = at(30).unwrap_err().to_string();
        assert!(
            err.contains("receptive field is 29") && err.contains("30"),
            "{err}"
        );
        let layers = at(10).unwrap();
        let dilations: Vec<_> = layers
            .iter()
            .filter_map(|l| match l.layer {
                Layer::TcnBlock { dilation, .. } => Some(dilation),
                _ => None,
            })
            .collect();
        assert_eq!(dilations, [1, 2, 4]);
        // The first block changes 2 channels to 8 (a 1×1 projection), the others keep 8.
        let params = |i: usize| layers[i].parameter_count();
        assert_eq!(params(0), 8 * 2 * 3 + 8 + 8 * 8 * 3 + 8 + 8 * 2 + 8);
        assert_eq!(params(1), 8 * 8 * 3 + 8 + 8 * 8 * 3 + 8);
        assert!("tcn:8,0,2".parse::<NetworkConfig>().is_err());
    }

    /// The layer types of `network` over windows `[48, 5]` → `outputs` values at `horizon`
    /// steps, and its parameter count.
    fn types_and_count(
        network: &str,
        horizon: usize,
        outputs: usize,
    ) -> (Vec<&'static str>, usize) {
        let net: NetworkConfig = network.parse().unwrap();
        assert_eq!(net.to_string(), network);
        let input = Shape::Sequence {
            steps: 48,
            channels: 5,
        };
        let layers = net.layers(input, 0, horizon, outputs).unwrap();
        (
            layers.iter().map(|l| l.layer.type_name()).collect(),
            layers.iter().map(LayerNode::parameter_count).sum(),
        )
    }

    #[test]
    fn an_s4d_network_counts_its_parameters() {
        let (types, count) = types_and_count("s4d:16,8,2", 24, 24);
        assert_eq!(
            types,
            [
                "patch-embed",
                "s4d-block",
                "s4d-block",
                "rms-norm",
                "last-step",
                "dense"
            ]
        );
        // Embedding 16·5 + 16; per block: norm 16, log_dt 16, log_a and C 2·16·8, skip 16,
        // output map 16·16 + 16; final norm 16; head 24·16 + 24.
        let block = 16 + 16 + 2 * 16 * 8 + 16 + 16 * 16 + 16;
        assert_eq!(count, (16 * 5 + 16) + 2 * block + 16 + (24 * 16 + 24));
        for bad in ["s4d:16,0,2", "s4d:0,8,2", "s4d:16,8,0", "s4d:16,8"] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_mamba_network_counts_its_parameters() {
        let (types, count) = types_and_count("mamba:32,16,2,4,2", 1, 1);
        assert_eq!(
            types,
            [
                "patch-embed",
                "mamba-block",
                "mamba-block",
                "rms-norm",
                "last-step",
                "dense"
            ]
        );
        // d = 32, E = 64, N = 16, R = 2, conv 4 (Mamba's reference block, without biases on
        // the input and output maps).
        let (d, e, n, r, k) = (32, 64, 16, 2, 4);
        let block = d + 2 * e * d + e * k + e + (r + 2 * n) * e + e * r + e + e * n + e + d * e;
        assert_eq!(count, (d * 5 + d) + 2 * block + d + (d + 1));
        for bad in [
            "mamba:32,0,2,4,2",
            "mamba:32,16,0,4,2",
            "mamba:32,16,2,0,2",
            "mamba:32,16,2,4,0",
            "mamba:32,16,2,4",
        ] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn channel_independence_shares_one_embedding_across_channels() {
        let input = Shape::Sequence {
            steps: 12,
            channels: 3,
        };
        let net: NetworkConfig = "transformer:16,4,2,2,4,2,flatten,independent"
            .parse()
            .unwrap();
        assert_eq!(
            net.to_string(),
            "transformer:16,4,2,2,4,2,flatten,independent"
        );
        let layers = net.layers(input, 0, 1, 2).unwrap();
        // Per channel (12 − 4) / 2 + 1 = 5 tokens of 4 values, three channels one after
        // the other; the embedding reads 4 values, not 4 × 3.
        assert_eq!(
            layers[0].output,
            Shape::Sequence {
                steps: 15,
                channels: 16
            }
        );
        assert_eq!(layers[0].parameter_count(), 16 * 4 + 16);
        assert_eq!(layers[0].macs(), 15 * 16 * 4);
        assert!(matches!(
            layers[1].layer,
            Layer::TransformerBlock { sequences: 3, .. }
        ));
        // Attention pairs only tokens of one channel: 5 × 5 per channel, not 15 × 15.
        let block = 2 * 16 * 16 + 2 * 8 * 16 + 3 * 32 * 16;
        assert_eq!(layers[1].macs(), 15 * block + 2 * 15 * 5 * 16);
        // The head reads every channel's tokens.
        assert_eq!(layers.last().unwrap().parameter_count(), 15 * 16 * 2 + 2);
        // The last token alone would be the last channel's: refused, with the fix.
        let err = "transformer:16,4,2,2,4,independent"
            .parse::<NetworkConfig>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("add `,flatten`"), "{err}");
    }

    #[test]
    fn a_transformer_counts_its_parameters_and_checks_its_heads() {
        let input = Shape::Sequence {
            steps: 12,
            channels: 3,
        };
        let net: NetworkConfig = "transformer:16,4,2,2,3".parse().unwrap();
        assert_eq!(net.to_string(), "transformer:16,4,2,2,3");
        let layers = net.layers(input, 0, 1, 2).unwrap();
        let kinds: Vec<_> = layers.iter().map(|l| l.layer.type_name()).collect();
        assert_eq!(
            kinds,
            [
                "patch-embed",
                "transformer-block",
                "transformer-block",
                "rms-norm",
                "last-step",
                "dense"
            ]
        );
        // 4 tokens of 3 rows × 3 channels.
        assert_eq!(
            layers[0].output,
            Shape::Sequence {
                steps: 4,
                channels: 16
            }
        );
        // Per block: two gains, W_q and W_o (d²), W_k and W_v (kv_heads · d_head × d = 8 × 16),
        // the feed-forward (3 × 2d × d).
        let block = 2 * 16 + 2 * 16 * 16 + 2 * 8 * 16 + 3 * 32 * 16;
        let total: usize = layers.iter().map(LayerNode::parameter_count).sum();
        assert_eq!(total, (9 * 16 + 16) + 2 * block + 16 + (16 * 2 + 2));
        assert_eq!(
            "transformer:8,2,1,1"
                .parse::<NetworkConfig>()
                .unwrap()
                .to_string(),
            "transformer:8,2,1,1"
        );
        // Heads that do not split the width, odd head widths, kv heads that do not divide
        // the heads, a patch that does not divide the lookback.
        for bad in [
            "transformer:10,4,2,1",
            "transformer:6,2,1,1",
            "transformer:8,4,3,1",
            "transformer:8,2,1,0",
        ] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad} parsed");
        }
        let err = "transformer:8,2,1,1,5"
            .parse::<NetworkConfig>()
            .unwrap()
            .layers(input, 0, 1, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("patches must tile"), "{err}");
        // Overlapping patches (stride 2 over patches of 4 rows: (12 − 4) / 2 + 1 = 5 tokens),
        // causal attention and a head on every token flattened.
        let strided: NetworkConfig = "transformer:16,2,1,1,4,2,causal,flatten".parse().unwrap();
        assert_eq!(
            strided.to_string(),
            "transformer:16,2,1,1,4,2,causal,flatten"
        );
        let layers = strided.layers(input, 0, 1, 2).unwrap();
        assert_eq!(
            layers[0].output,
            Shape::Sequence {
                steps: 5,
                channels: 16
            }
        );
        assert_eq!(layers[0].macs(), 5 * 16 * 4 * 3);
        assert!(matches!(
            layers[1].layer,
            Layer::TransformerBlock { causal: true, .. }
        ));
        let head = layers.last().unwrap();
        assert_eq!(head.parameter_count(), 5 * 16 * 2 + 2);
        assert_eq!(
            "transformer:8,2,1,1,3,3"
                .parse::<NetworkConfig>()
                .unwrap()
                .to_string(),
            "transformer:8,2,1,1,3"
        );
        for bad in [
            "transformer:8,2,1,1,causal,4",
            "transformer:8,2,1,1,causal,causal",
            "transformer:8,2,1,1,sideways",
            "mlp:8,causal",
            "transformer:8,2,1,1,2,0",
        ] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad} parsed");
        }
        // A stride beyond the patch, or one that leaves rows over, does not tile.
        for untiled in ["transformer:8,2,1,1,2,3", "transformer:8,2,1,1,5,2"] {
            let network: NetworkConfig = untiled.parse().unwrap();
            assert!(network.layers(input, 0, 1, 2).is_err(), "{untiled}");
        }
    }

    #[test]
    fn every_layer_type_is_listed() {
        use strum::EnumCount;
        // A new variant must join `Layer::TYPES`, which the example-coverage test and the
        // conformance suite iterate.
        assert_eq!(Layer::TYPES.len(), Layer::COUNT);
        let names: std::collections::BTreeSet<_> =
            Layer::TYPES.iter().map(|l| l.type_name()).collect();
        assert_eq!(names.len(), Layer::COUNT, "TYPES lists a type twice");
    }

    #[test]
    fn shapes_flow_through_the_stack() {
        let input = Shape::Sequence {
            steps: 5,
            channels: 3,
        };
        let layers = NetworkConfig::Mlp { hidden: vec![7] }
            .layers(input, 0, 1, 2)
            .unwrap();
        let shapes: Vec<_> = layers.iter().map(|l| l.output).collect();
        assert_eq!(
            shapes,
            [
                Shape::Vector(15),
                Shape::Vector(7),
                Shape::Vector(7),
                Shape::Vector(2)
            ]
        );
        assert!(
            Layer::Gru { hidden: 3 }
                .output_shape(Shape::Vector(4))
                .is_none()
        );
        assert!(Layer::Dense { outputs: 3 }.output_shape(input).is_none());
    }
}

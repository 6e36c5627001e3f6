use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::rnn::{GRU, GRUConfig, RNN};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tns_format::{ModelConfig, NamedTensor, NetworkConfig};

use crate::ModelError;

#[derive(Debug, Clone)]
enum Layers {
    Linear(Linear),
    Mlp(Vec<Linear>),
    Gru { gru: GRU, head: Linear },
}

/// A network built from a config: maps normalized windows `[B, L, F]` to normalized
/// residuals `[B, H·T]`.
#[derive(Debug, Clone)]
pub struct Network {
    layers: Layers,
    vars: Vec<(String, Var)>,
    lookback: usize,
    features: usize,
}

impl Network {
    /// Seeded initialization (PyTorch's defaults): GRU tensors `U(±1/√hidden)`, dense layers
    /// `U(±1/√fan_in)`, drawn in layout order from ChaCha8 seeded with `config.seed`.
    pub fn init(config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let tensors = config
            .tensor_layout()
            .into_iter()
            .map(|(name, shape)| {
                let fan_in = match (&config.network, name.starts_with("gru.")) {
                    (Some(NetworkConfig::Gru { hidden }), true) => *hidden,
                    _ if shape.len() == 2 => shape[1],
                    // A bias shares its weight's fan-in: the matching weight's second dimension.
                    _ => config
                        .tensor_layout()
                        .into_iter()
                        .find(|(n, _)| *n == name.replace(".bias", ".weight"))
                        .map_or(1, |(_, s)| s[1]),
                };
                let bound = 1.0 / (fan_in as f32).sqrt();
                let n: usize = shape.iter().product();
                let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                NamedTensor { name, shape, data }
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
        let layout = config.tensor_layout();
        if layout.is_empty() {
            return Err(ModelError::Config(format!(
                "kind {} has no network",
                config.kind.name()
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
                let t = tensors.iter().find(|t| &t.name == name).ok_or_else(|| {
                    ModelError::Config(format!("tensor {name:?} is missing from the model file"))
                })?;
                if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
                    return Err(ModelError::Config(format!(
                        "tensor {name:?} has shape {:?}, the config needs {shape:?}",
                        t.shape
                    )));
                }
                let var =
                    Var::from_tensor(&Tensor::from_vec(t.data.clone(), shape.as_slice(), device)?)?;
                map.insert(name.clone(), var.clone());
                vars.push((name.clone(), var));
            }
        }
        if let Some(extra) = tensors
            .iter()
            .find(|t| !layout.iter().any(|(n, _)| *n == t.name))
        {
            return Err(ModelError::Config(format!(
                "unexpected tensor {:?} in the model file",
                extra.name
            )));
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let (l, f, out) = (config.lookback, config.input_width(), config.output_width());
        let layers = match &config.network {
            Some(NetworkConfig::Linear) => {
                Layers::Linear(candle_nn::linear(l * f, out, vb.pp("linear"))?)
            }
            Some(NetworkConfig::Mlp { hidden }) => {
                let mut widths = vec![l * f];
                widths.extend(hidden);
                widths.push(out);
                Layers::Mlp(
                    widths
                        .windows(2)
                        .enumerate()
                        .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("mlp.{i}"))))
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(NetworkConfig::Gru { hidden }) => Layers::Gru {
                gru: candle_nn::rnn::gru(f, *hidden, GRUConfig::default(), vb.pp("gru"))?,
                head: candle_nn::linear(*hidden, out, vb.pp("head"))?,
            },
            None => unreachable!("layout is empty without a network"),
        };
        Ok(Self {
            layers,
            vars,
            lookback: l,
            features: f,
        })
    }

    /// `[B, L, F]` → `[B, H·T]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, l, f) = x.dims3()?;
        if l != self.lookback || f != self.features {
            return Err(ModelError::Config(format!(
                "network expects windows [{}, {}], got [{l}, {f}]",
                self.lookback, self.features
            )));
        }
        Ok(match &self.layers {
            Layers::Linear(lin) => lin.forward(&x.reshape((b, l * f))?)?,
            Layers::Mlp(layers) => {
                let mut h = x.reshape((b, l * f))?;
                for (i, layer) in layers.iter().enumerate() {
                    h = layer.forward(&h)?;
                    if i + 1 < layers.len() {
                        h = h.relu()?;
                    }
                }
                h
            }
            Layers::Gru { gru, head } => {
                let mut state = gru.zero_state(b)?;
                for t in 0..l {
                    let xt = x.narrow(1, t, 1)?.squeeze(1)?;
                    state = gru.step(&xt, &state)?;
                }
                head.forward(state.h())?
            }
        })
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

    /// Runs the network on `n` normalized windows (`[n, L, F]` flat, f32) in chunks, on the
    /// network's device, and returns `[n, out]` flat.
    pub fn forward_flat(
        &self,
        inputs: &[f32],
        n: usize,
        device: &Device,
    ) -> Result<Vec<f32>, ModelError> {
        const CHUNK: usize = 4096;
        let per = self.lookback * self.features;
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let m = CHUNK.min(n - start);
            let x = Tensor::from_slice(
                &inputs[start * per..(start + m) * per],
                (m, self.lookback, self.features),
                device,
            )?;
            out.extend(self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
            start += m;
        }
        Ok(out)
    }
}

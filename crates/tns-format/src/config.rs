use serde::{Deserialize, Serialize};
use tns_certify::GateConfig;
use tns_kalman::Axis;

/// The model kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Repeat the last observed target values.
    Persistence,
    /// The Kalman prior mean alone.
    Kalman,
    /// Last value + one linear map of the window (NLinear style).
    Linear,
    /// Last value + a multilayer perceptron of the window.
    Mlp,
    /// Last value + GRU over the window + linear head (residual GRU).
    SystemA,
    /// Kalman prior + network correction, gated by the chi-square test.
    SystemB,
}

impl ModelKind {
    /// Every kind, in report order.
    pub const ALL: [ModelKind; 6] = [
        Self::Persistence,
        Self::Kalman,
        Self::Linear,
        Self::Mlp,
        Self::SystemA,
        Self::SystemB,
    ];

    /// The kebab-case name (`system-b`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Persistence => "persistence",
            Self::Kalman => "kalman",
            Self::Linear => "linear",
            Self::Mlp => "mlp",
            Self::SystemA => "system-a",
            Self::SystemB => "system-b",
        }
    }

    /// The network this kind uses when none is given.
    pub fn default_network(self) -> Option<NetworkConfig> {
        match self {
            Self::Persistence | Self::Kalman => None,
            Self::Linear => Some(NetworkConfig::Linear),
            Self::Mlp => Some(NetworkConfig::Mlp {
                hidden: vec![64, 64],
            }),
            Self::SystemA | Self::SystemB => Some(NetworkConfig::Gru { hidden: 32 }),
        }
    }

    /// What the network's output is added to.
    pub fn base(self) -> Base {
        match self {
            Self::Kalman | Self::SystemB => Base::KalmanPrior,
            _ => Base::LastValue,
        }
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown model kind {s:?}; use one of persistence, kalman, linear, mlp, system-a, system-b"))
    }
}

/// Largest lookback or horizon a model file may declare.
pub const MAX_ROWS: usize = 1 << 16;
/// Largest lead (rows between the last input and the first predicted row).
pub const MAX_LEAD: usize = 1 << 24;
/// Largest number of feature or target columns.
pub const MAX_COLUMNS: usize = 1 << 12;
/// Largest hidden or MLP layer width.
pub const MAX_WIDTH: usize = 1 << 14;
/// Largest parameter count (2²⁸ f32 = 1 GiB).
pub const MAX_PARAMETERS: usize = 1 << 28;

/// The forecast a model starts from; a network (if any) predicts `y − base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// The last observed value of each target, repeated over the horizon.
    LastValue,
    /// The Kalman prior mean.
    KalmanPrior,
}

/// The learned part of a model.
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
}

/// How a window is normalized before the network sees it, fitted on the training split.
///
/// Columns marked `relative` (the positions/levels the Kalman axes observe) are expressed
/// relative to the window's last row, `(x_t − x_last) / std`, so a network does not depend
/// on where in space or at which price level the window lies; the others are z-scored,
/// `(x_t − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputNormalization {
    /// Column means (unused for relative columns).
    pub mean: Vec<f64>,
    /// Column scales.
    pub std: Vec<f64>,
    /// Which columns are taken relative to the last row.
    pub relative: Vec<bool>,
}

/// Serializable description of a model; everything downstream is driven by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model name (appears in certificates and reports).
    pub name: String,
    /// Model kind.
    pub kind: ModelKind,
    /// Feature column names, in window order.
    pub features: Vec<String>,
    /// Target column names (each also a feature).
    pub targets: Vec<String>,
    /// Rows per input window.
    pub lookback: usize,
    /// Predicted steps.
    pub horizon: usize,
    /// Steps from the last input row to the first predicted row.
    pub lead: usize,
    /// The network, for learned kinds.
    pub network: Option<NetworkConfig>,
    /// The gate, for System B.
    pub gate: Option<GateConfig>,
    /// Kalman axes (position/velocity columns): required by Kalman-based kinds; for the
    /// others they only mark which inputs are positions (taken relative to the last row).
    pub kalman_axes: Option<Vec<Axis>>,
    /// Seed for initialization and shuffling.
    pub seed: u64,
}

impl ModelConfig {
    /// A config with the kind's default network and gate; for Kalman kinds every target
    /// becomes a local-linear-trend axis unless [`ModelConfig::kalman_axes`] is set after.
    pub fn new(
        name: &str,
        kind: ModelKind,
        features: &[&str],
        targets: &[&str],
        lookback: usize,
        horizon: usize,
        lead: usize,
    ) -> Self {
        let features: Vec<String> = features.iter().map(|s| s.to_string()).collect();
        let kalman_axes = (kind.base() == Base::KalmanPrior).then(|| {
            targets
                .iter()
                .filter_map(|t| features.iter().position(|f| f == t))
                .map(|position| Axis {
                    position,
                    velocity: None,
                })
                .collect()
        });
        Self {
            name: name.to_string(),
            kind,
            features,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            lookback,
            horizon,
            lead,
            network: kind.default_network(),
            gate: (kind == ModelKind::SystemB).then(GateConfig::default),
            kalman_axes,
            seed: 0,
        }
    }

    /// Index of each target in the feature list.
    pub fn target_indices(&self) -> Result<Vec<usize>, String> {
        self.targets
            .iter()
            .map(|t| {
                self.features.iter().position(|f| f == t).ok_or_else(|| {
                    format!("target {t:?} is not among the features {:?}", self.features)
                })
            })
            .collect()
    }

    /// Network input width per step.
    pub fn input_width(&self) -> usize {
        self.features.len()
    }

    /// Network output width, `horizon × targets`.
    pub fn output_width(&self) -> usize {
        self.horizon * self.targets.len()
    }

    /// Names and shapes of the network's tensors, in initialization order. Weights are
    /// `[out, in]` (PyTorch layout); GRU gates are stacked `r, z, n`.
    pub fn tensor_layout(&self) -> Vec<(String, Vec<usize>)> {
        let (l, f, out) = (self.lookback, self.input_width(), self.output_width());
        let dense = |name: &str, inp: usize, outp: usize| {
            [
                (format!("{name}.weight"), vec![outp, inp]),
                (format!("{name}.bias"), vec![outp]),
            ]
        };
        match &self.network {
            None => Vec::new(),
            Some(NetworkConfig::Linear) => dense("linear", l * f, out).to_vec(),
            Some(NetworkConfig::Mlp { hidden }) => {
                let mut widths = vec![l * f];
                widths.extend(hidden);
                widths.push(out);
                widths
                    .windows(2)
                    .enumerate()
                    .flat_map(|(i, w)| dense(&format!("mlp.{i}"), w[0], w[1]))
                    .collect()
            }
            Some(NetworkConfig::Gru { hidden: h }) => {
                let mut v = vec![
                    ("gru.weight_ih_l0".to_string(), vec![3 * h, f]),
                    ("gru.weight_hh_l0".to_string(), vec![3 * h, *h]),
                    ("gru.bias_ih_l0".to_string(), vec![3 * h]),
                    ("gru.bias_hh_l0".to_string(), vec![3 * h]),
                ];
                v.extend(dense("head", *h, out));
                v
            }
        }
    }

    /// Trainable parameters, computed from the config.
    pub fn parameter_count(&self) -> usize {
        self.tensor_layout()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Checks internal consistency (sizes, targets among features, gate only on System B).
    pub fn validate(&self) -> Result<(), String> {
        if self.lookback == 0 || self.horizon == 0 || self.lead == 0 {
            return Err("lookback, horizon and lead must be at least 1".into());
        }
        // Bounds far above any small temporal model, so that a hostile or corrupted manifest
        // cannot make a loader allocate without limit or overflow a size computation.
        for (what, value, max) in [
            ("lookback", self.lookback, MAX_ROWS),
            ("horizon", self.horizon, MAX_ROWS),
            ("lead", self.lead, MAX_LEAD),
            ("features", self.features.len(), MAX_COLUMNS),
            ("targets", self.targets.len(), MAX_COLUMNS),
        ] {
            if value > max {
                return Err(format!("{what} = {value} exceeds the limit of {max}"));
            }
        }
        let widths: &[usize] = match &self.network {
            Some(NetworkConfig::Gru { hidden }) => std::slice::from_ref(hidden),
            Some(NetworkConfig::Mlp { hidden }) => hidden,
            _ => &[],
        };
        if let Some(w) = widths.iter().find(|w| **w > MAX_WIDTH) {
            return Err(format!("layer width {w} exceeds the limit of {MAX_WIDTH}"));
        }
        if self.parameter_count() > MAX_PARAMETERS {
            return Err(format!(
                "{} parameters exceed the limit of {MAX_PARAMETERS}",
                self.parameter_count()
            ));
        }
        if self.features.is_empty() || self.targets.is_empty() {
            return Err("a model needs at least one feature and one target".into());
        }
        self.target_indices()?;
        let learned = !matches!(self.kind, ModelKind::Persistence | ModelKind::Kalman);
        if learned != self.network.is_some() {
            return Err(format!(
                "kind {} {} a network",
                self.kind.name(),
                if learned { "needs" } else { "takes no" }
            ));
        }
        if self.kind.base() == Base::KalmanPrior && self.kalman_axes.is_none() {
            return Err(format!(
                "kind {} needs Kalman axes (position/velocity columns)",
                self.kind.name()
            ));
        }
        if (self.kind == ModelKind::SystemB) != self.gate.is_some() {
            return Err("a gate is required for system-b and allowed only there".into());
        }
        match &self.network {
            Some(NetworkConfig::Gru { hidden: 0 }) => {
                Err("GRU hidden size must be at least 1".into())
            }
            Some(NetworkConfig::Mlp { hidden }) if hidden.contains(&0) => {
                Err("MLP layer widths must be at least 1".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_are_exact() {
        let f = ["x", "y", "vx", "vy"];
        let mut c = ModelConfig::new("m", ModelKind::SystemA, &f, &f, 10, 1, 1);
        // GRU(4→32): 3·32·(4+32) + 2·3·32 = 3,648; Linear(32→4): 132.
        assert_eq!(c.parameter_count(), 3_780);
        c.network = Some(NetworkConfig::Linear);
        assert_eq!(c.parameter_count(), 40 * 4 + 4);
        c.network = Some(NetworkConfig::Mlp {
            hidden: vec![64, 64],
        });
        assert_eq!(
            c.parameter_count(),
            40 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4
        );
        let p = ModelConfig::new("p", ModelKind::Persistence, &f, &f, 10, 1, 1);
        assert_eq!(p.parameter_count(), 0);
        let b = ModelConfig::new("b", ModelKind::SystemB, &f, &f[..2], 256, 1, 1000);
        assert_eq!(b.parameter_count(), 3 * 32 * 36 + 6 * 32 + 32 * 2 + 2);
        assert!(b.validate().is_ok());
    }

    #[test]
    fn inconsistent_configs_are_rejected() {
        let f = ["x"];
        let mut c = ModelConfig::new("m", ModelKind::SystemB, &f, &f, 10, 1, 1);
        c.gate = None;
        assert!(c.validate().is_err());
        let mut c = ModelConfig::new("m", ModelKind::SystemA, &f, &["z"], 10, 1, 1);
        assert!(c.validate().unwrap_err().contains("\"z\""));
        c.targets = vec!["x".into()];
        c.network = None;
        assert!(c.validate().is_err());
    }
}

//! The serializable model description: kind (a preset), columns, window shape, base,
//! network, gate and Kalman axes. Everything downstream is derived from it.

use serde::{Deserialize, Serialize};
use tns_calendar::Calendar;
use tns_certify::GateConfig;
use tns_kalman::{Axis, StructuralSpec};

use crate::network::{LayerNode, NetworkConfig, Shape};
use crate::{ConfigError, NamedTensor};

/// The model presets: a base, a default network and a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Repeat the last observed target values.
    Persistence,
    /// Repeat the target values one season earlier (`--season`, e.g. 24 on hourly data).
    SeasonalNaive,
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
    pub const ALL: [ModelKind; 7] = [
        Self::Persistence,
        Self::SeasonalNaive,
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
            Self::SeasonalNaive => "seasonal-naive",
            Self::Kalman => "kalman",
            Self::Linear => "linear",
            Self::Mlp => "mlp",
            Self::SystemA => "system-a",
            Self::SystemB => "system-b",
        }
    }

    /// The network this kind uses when none is given (`None`: the kind takes no network).
    pub fn default_network(self) -> Option<NetworkConfig> {
        match self {
            Self::Persistence | Self::SeasonalNaive | Self::Kalman => None,
            Self::Linear => Some(NetworkConfig::Linear),
            Self::Mlp => Some(NetworkConfig::Mlp {
                hidden: vec![64, 64],
            }),
            Self::SystemA | Self::SystemB => Some(NetworkConfig::Gru { hidden: 32 }),
        }
    }

    /// Whether the kind has a learned network (and so accepts `--network`).
    pub fn is_learned(self) -> bool {
        self.default_network().is_some()
    }

    /// What the network's output is added to.
    pub fn base(self) -> Base {
        match self {
            Self::Kalman | Self::SystemB => Base::KalmanPrior,
            Self::SeasonalNaive => Base::SeasonalNaive,
            _ => Base::LastValue,
        }
    }

    /// Whether the kind gates the network's correction (System B).
    pub fn is_gated(self) -> bool {
        self == Self::SystemB
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ConfigError::UnknownKind(s.to_string()))
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
/// Largest number of layers in a network.
pub const MAX_LAYERS: usize = 64;
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
    /// The value one season ([`ModelConfig::season`] rows) before each predicted row, taken
    /// from the window.
    SeasonalNaive,
}

/// Inputs whose values over the forecast horizon are known when a forecast is made: a
/// model's input is then the past window `[lookback, features]` followed by the future
/// block `[horizon, future]`, one row per predicted step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FutureInputs {
    /// Columns read at the predicted rows (day-ahead load or weather forecasts, holiday
    /// flags): each also a feature, never a target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Calendar features of the predicted rows' times, after the columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
}

impl FutureInputs {
    /// Values per predicted step: the columns, then two per calendar feature.
    pub fn width(&self) -> usize {
        self.columns.len() + self.calendar.as_ref().map_or(0, Calendar::width)
    }

    /// Names of the future block's columns (`system_load`, …, `hour_sin`, `hour_cos`).
    pub fn names(&self) -> Vec<String> {
        let calendar = self.calendar.iter().flat_map(Calendar::columns);
        self.columns.iter().cloned().chain(calendar).collect()
    }
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
    /// Means of the future block's columns (z-scored; empty without future inputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub future_mean: Vec<f64>,
    /// Scales of the future block's columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub future_std: Vec<f64>,
}

/// Serializable description of a model; everything downstream is driven by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model name (appears in certificates and reports).
    pub name: String,
    /// Model kind: the preset that fixes the base and whether there is a gate.
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
    /// Season length in rows, for the seasonal-naive base (at most the lookback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<usize>,
    /// Known-future inputs (covariates and calendar), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<FutureInputs>,
    /// For Kalman-based kinds: a structural prior (level or trend + seasonal components, one
    /// model per target) instead of the kinematic axes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structural: Option<StructuralSpec>,
    /// Rows of the window the network reads (the last ones), when fewer than the lookback: the
    /// base forecast (a Kalman prior's context) reads all `lookback` rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_lookback: Option<usize>,
    /// Every input column normalized by fixed training statistics, none relative to the
    /// window's last row: a row's network input then does not change when later rows arrive,
    /// so a state-space network's state can be carried along a stream
    /// (`Session::carried` in the engine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absolute_inputs: bool,
    /// Quantile heads: the network also predicts a lower and an upper quantile of every
    /// output (trained with the pinball loss), which conformalized quantile regression
    /// widens or narrows into the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile_heads: Option<QuantileHeads>,
}

/// The quantile levels of a network's quantile heads (conformalized quantile regression,
/// Romano, Patterson & Candès 2019): with them the network's output per predicted step is
/// `[point, lower quantile, upper quantile] × targets`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileHeads {
    /// Level of the lower quantile, in (0, 0.5).
    pub lower: f64,
    /// Level of the upper quantile, in (0.5, 1).
    pub upper: f64,
}

/// Where output `position` (of `[horizon, targets]`, flat) of head `head` (0: the point,
/// 1: the lower quantile, 2: the upper) sits in a network output with `per` outputs per
/// value, laid out `[horizon, per, targets]`: the one definition of that layout for code
/// that reads a network's output value by value.
///
/// ```
/// // Horizon 2, 3 targets, quantile heads: step 1's target 2, upper quantile.
/// assert_eq!(tns_model::head_index(5, 3, 3, 2), 9 + 6 + 2);
/// // Without heads the output is `[horizon, targets]` itself.
/// assert_eq!(tns_model::head_index(5, 3, 1, 0), 5);
/// ```
pub fn head_index(position: usize, targets: usize, per: usize, head: usize) -> usize {
    (position / targets) * per * targets + head * targets + position % targets
}

impl QuantileHeads {
    /// The central `1 − alpha` band: levels `alpha / 2` and `1 − alpha / 2`.
    pub fn central(alpha: f64) -> Self {
        Self {
            lower: alpha / 2.0,
            upper: 1.0 - alpha / 2.0,
        }
    }
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
            gate: kind.is_gated().then(GateConfig::default),
            kalman_axes,
            seed: 0,
            season: (kind.base() == Base::SeasonalNaive).then_some(lookback),
            future: None,
            structural: None,
            network_lookback: None,
            absolute_inputs: false,
            quantile_heads: None,
        }
    }

    /// Index of each target in the feature list.
    pub fn target_indices(&self) -> Result<Vec<usize>, ConfigError> {
        self.targets
            .iter()
            .map(|t| {
                self.features.iter().position(|f| f == t).ok_or_else(|| {
                    ConfigError::UnknownTarget {
                        target: t.clone(),
                        features: self.features.clone(),
                    }
                })
            })
            .collect()
    }

    /// Network input width per step.
    pub fn input_width(&self) -> usize {
        self.features.len()
    }

    /// Values per predicted step of the future block (0 without future inputs).
    pub fn future_width(&self) -> usize {
        self.future.as_ref().map_or(0, FutureInputs::width)
    }

    /// Values of the past window, `lookback × features`.
    pub fn past_len(&self) -> usize {
        self.lookback * self.features.len()
    }

    /// Values of the future block, `horizon × future_width`.
    pub fn future_len(&self) -> usize {
        self.horizon * self.future_width()
    }

    /// Values of one model input: the past window, then the future block.
    pub fn input_len(&self) -> usize {
        self.past_len() + self.future_len()
    }

    /// Index in the features of each future column.
    pub fn future_column_indices(&self) -> Result<Vec<usize>, ConfigError> {
        let columns = self.future.as_ref().map_or(&[][..], |f| &f.columns);
        columns
            .iter()
            .map(|c| {
                self.features
                    .iter()
                    .position(|f| f == c)
                    .ok_or_else(|| ConfigError::FutureColumn {
                        column: c.clone(),
                        problem: "is not among the features",
                    })
            })
            .collect()
    }

    /// Where the structural prior's regressors are: each must be a feature (its past) and a
    /// known-future covariate (its values over the horizon).
    pub fn structural_regressors(&self) -> Result<tns_kalman::RegressorColumns, ConfigError> {
        let names = self.structural.as_ref().map_or(&[][..], |s| &s.regressors);
        let covariates = self.future.as_ref().map_or(&[][..], |f| &f.columns);
        let mut columns = tns_kalman::RegressorColumns {
            width: self.future_width(),
            ..Default::default()
        };
        for name in names {
            let missing = |problem| ConfigError::FutureColumn {
                column: name.clone(),
                problem,
            };
            columns.past.push(
                self.features
                    .iter()
                    .position(|f| f == name)
                    .ok_or_else(|| missing("is a prior regressor but not a feature"))?,
            );
            columns
                .future
                .push(covariates.iter().position(|c| c == name).ok_or_else(|| {
                    missing("is a prior regressor but not a known-future input (--future)")
                })?);
        }
        Ok(columns)
    }

    /// Network output width, `horizon × targets`.
    pub fn output_width(&self) -> usize {
        self.horizon * self.targets.len()
    }

    /// Network outputs per predicted step and target: 1, or 3 with quantile heads (the
    /// point, then the lower and the upper quantile).
    pub fn outputs_per_value(&self) -> usize {
        if self.quantile_heads.is_some() { 3 } else { 1 }
    }

    /// The network's output width: `horizon × outputs per value × targets`, laid out
    /// `[horizon, outputs per value, targets]`.
    pub fn network_output_width(&self) -> usize {
        self.output_width() * self.outputs_per_value()
    }

    /// Rows of the window the network reads: the last [`ModelConfig::network_lookback`]
    /// rows, or all of them.
    pub fn network_rows(&self) -> usize {
        self.network_lookback.unwrap_or(self.lookback)
    }

    /// What the network sees: the normalized window's last rows, a sequence
    /// `[network rows, features]` (the future block joins later, through `concat-future`).
    pub fn network_input(&self) -> Shape {
        Shape::Sequence {
            steps: self.network_rows(),
            channels: self.input_width(),
        }
    }

    /// Values of the network's input: its rows of the window, then the future block.
    pub fn network_input_len(&self) -> usize {
        self.network_rows() * self.features.len() + self.future_len()
    }

    /// The network as a stack of layers with their shapes and tensor names (empty for
    /// kinds without a network). Every backend lowers exactly this list.
    pub fn layers(&self) -> Result<Vec<LayerNode>, ConfigError> {
        match &self.network {
            None => Ok(Vec::new()),
            Some(n) => n.layers(
                self.network_input(),
                self.future_len(),
                self.horizon,
                self.network_output_width(),
            ),
        }
    }

    /// Names and shapes of the network's tensors, in initialization order. Weights are
    /// `[out, in]` (PyTorch layout); GRU gates are stacked `r, z, n`.
    pub fn tensor_layout(&self) -> Result<Vec<(String, Vec<usize>)>, ConfigError> {
        Ok(self
            .layers()?
            .iter()
            .flat_map(LayerNode::params)
            .map(|p| (p.name, p.shape))
            .collect())
    }

    /// Trainable parameters, computed from the description.
    pub fn parameter_count(&self) -> usize {
        self.layers()
            .map(|layers| layers.iter().map(LayerNode::parameter_count).sum())
            .unwrap_or(0)
    }

    /// Multiply–accumulate operations of one network forward pass.
    pub fn macs(&self) -> usize {
        self.layers()
            .map(|layers| layers.iter().map(LayerNode::macs).sum())
            .unwrap_or(0)
    }

    /// The weight matrices that INT8 quantization applies to, by name.
    pub fn matrix_weights(&self) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .layers()?
            .iter()
            .flat_map(LayerNode::params)
            .filter(|p| p.matrix)
            .map(|p| p.name)
            .collect())
    }

    /// Checks that `tensors` hold every tensor of the layout with its shape and length.
    /// Tensors outside the layout are the caller's business (INT8 scales, for one).
    pub fn check_tensors(&self, tensors: &[NamedTensor]) -> Result<(), ConfigError> {
        for (name, shape) in self.tensor_layout()? {
            let t = tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| ConfigError::MissingTensor(name.clone()))?;
            if t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
                return Err(ConfigError::TensorShape {
                    name,
                    found: t.shape.clone(),
                    expected: shape,
                });
            }
        }
        Ok(())
    }

    /// Checks internal consistency (sizes, targets among features, network and gate allowed
    /// by the kind, axes inside the window, layer shapes).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lookback == 0 || self.horizon == 0 || self.lead == 0 {
            return Err(ConfigError::ZeroSize);
        }
        if let Some(QuantileHeads { lower, upper }) = self.quantile_heads
            && !(self.network.is_some() && lower > 0.0 && lower < 0.5 && upper > 0.5 && upper < 1.0)
        {
            return Err(ConfigError::QuantileHeads { lower, upper });
        }
        if let Some(rows) = self.network_lookback
            && (rows == 0 || rows > self.lookback)
        {
            return Err(ConfigError::NetworkLookback {
                rows,
                lookback: self.lookback,
            });
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
                return Err(ConfigError::Limit { what, value, max });
            }
        }
        if self.features.is_empty() || self.targets.is_empty() {
            return Err(ConfigError::NoColumns);
        }
        for list in [&self.features, &self.targets] {
            if let Some(name) = list
                .iter()
                .enumerate()
                .find_map(|(i, n)| list[..i].contains(n).then_some(n))
            {
                return Err(ConfigError::DuplicateColumn(name.clone()));
            }
        }
        self.target_indices()?;
        if let Some(future) = &self.future {
            if future.width() == 0 {
                return Err(ConfigError::EmptyFuture);
            }
            if let Some(calendar) = &future.calendar {
                calendar.validate().map_err(ConfigError::Calendar)?;
            }
            if future.columns.len() > MAX_COLUMNS {
                return Err(ConfigError::Limit {
                    what: "future columns",
                    value: future.columns.len(),
                    max: MAX_COLUMNS,
                });
            }
            self.future_column_indices()?;
            let mut seen = std::collections::HashSet::new();
            for c in &future.columns {
                if self.targets.contains(c) {
                    return Err(ConfigError::FutureColumn {
                        column: c.clone(),
                        problem: "is a target: its future values are what the model predicts",
                    });
                }
                if !seen.insert(c) {
                    return Err(ConfigError::FutureColumn {
                        column: c.clone(),
                        problem: "is listed twice",
                    });
                }
            }
        }
        if let Some(axis) = self.kalman_axes.iter().flatten().find(|a| {
            a.position >= self.features.len()
                || a.velocity.is_some_and(|v| v >= self.features.len())
        }) {
            return Err(ConfigError::AxisColumn {
                position: axis.position,
                velocity: axis.velocity,
                features: self.features.len(),
            });
        }
        if self.kind.is_learned() != self.network.is_some() {
            return Err(ConfigError::NetworkPresence {
                kind: self.kind,
                needs: self.kind.is_learned(),
            });
        }
        if self.kind.base() == Base::KalmanPrior
            && self.kalman_axes.is_none()
            && self.structural.is_none()
        {
            return Err(ConfigError::MissingAxes(self.kind));
        }
        if let Some(spec) = &self.structural {
            if self.kind.base() != Base::KalmanPrior {
                return Err(ConfigError::StructuralPresence(self.kind));
            }
            spec.validate().map_err(ConfigError::Structural)?;
            self.structural_regressors()?;
        }
        if self.kind.is_gated() != self.gate.is_some() {
            return Err(ConfigError::GatePresence);
        }
        match (self.kind.base(), self.season) {
            (Base::SeasonalNaive, Some(season)) if season >= 1 && season <= self.lookback => {}
            (Base::SeasonalNaive, season) => {
                return Err(ConfigError::Season {
                    season,
                    lookback: self.lookback,
                });
            }
            (_, Some(_)) => return Err(ConfigError::SeasonPresence(self.kind)),
            (_, None) => {}
        }
        if self.network.is_some() {
            // Expanding the network checks its widths first.
            let layers = self.layers()?;
            if layers.len() > MAX_LAYERS {
                return Err(ConfigError::Limit {
                    what: "layers",
                    value: layers.len(),
                    max: MAX_LAYERS,
                });
            }
            let count: usize = layers.iter().map(LayerNode::parameter_count).sum();
            if count > MAX_PARAMETERS {
                return Err(ConfigError::Parameters(count));
            }
        }
        Ok(())
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
        assert_eq!(c.macs(), 10 * (96 * 4 + 96 * 32) + 32 * 4);
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
    fn tensor_names_match_format_version_1() {
        // Files written before the layer description used these names; they must not move.
        let f = ["x", "y"];
        let mut c = ModelConfig::new("m", ModelKind::SystemA, &f, &f, 3, 1, 1);
        let names = |c: &ModelConfig| -> Vec<String> {
            c.tensor_layout()
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(
            names(&c),
            [
                "gru.weight_ih_l0",
                "gru.weight_hh_l0",
                "gru.bias_ih_l0",
                "gru.bias_hh_l0",
                "head.weight",
                "head.bias"
            ]
        );
        c.network = Some(NetworkConfig::Mlp { hidden: vec![5] });
        assert_eq!(
            names(&c),
            ["mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias"]
        );
        c.network = Some(NetworkConfig::Linear);
        assert_eq!(names(&c), ["linear.weight", "linear.bias"]);
    }

    #[test]
    fn inconsistent_configs_are_rejected() {
        let f = ["x"];
        let mut c = ModelConfig::new("m", ModelKind::SystemB, &f, &f, 10, 1, 1);
        c.gate = None;
        assert_eq!(c.validate(), Err(ConfigError::GatePresence));
        let mut c = ModelConfig::new("m", ModelKind::SystemA, &f, &["z"], 10, 1, 1);
        assert!(c.validate().unwrap_err().to_string().contains("\"z\""));
        c.targets = vec!["x".into()];
        c.network = None;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NetworkPresence { .. })
        ));
        let mut c = ModelConfig::new("m", ModelKind::SystemB, &f, &f, 10, 1, 1);
        c.kalman_axes = Some(vec![Axis {
            position: 99,
            velocity: None,
        }]);
        assert!(matches!(c.validate(), Err(ConfigError::AxisColumn { .. })));
        c.kalman_axes = Some(vec![Axis {
            position: 0,
            velocity: None,
        }]);
        c.network = Some(NetworkConfig::Mlp { hidden: vec![0] });
        assert!(matches!(c.validate(), Err(ConfigError::ZeroWidth { .. })));
        c.network = Some(NetworkConfig::Gru {
            hidden: MAX_WIDTH + 1,
        });
        assert!(matches!(c.validate(), Err(ConfigError::Width { .. })));
    }

    #[test]
    fn any_network_fits_any_learned_kind() {
        let f = ["x", "y"];
        for kind in ModelKind::ALL.into_iter().filter(|k| k.is_learned()) {
            for network in crate::examples::networks() {
                let mut c = ModelConfig::new("m", kind, &f, &f, 6, 2, 1);
                c.network = Some(network.clone());
                c.validate()
                    .unwrap_or_else(|e| panic!("{kind} over {network}: {e}"));
                assert!(c.parameter_count() > 0);
            }
        }
    }
}

//! The TNS model description, and the runtime pipeline around its network.
//!
//! A model is one [`ModelConfig`]: the inputs (lookback × features, targets, horizon,
//! lead, and known-future inputs: covariates and calendar features over the horizon), a [`Base`] forecast (last value or Kalman prior), a network ([`NetworkConfig`],
//! expanded into a stack of [`Layer`]s with their shapes and tensor names), a gate (System
//! B) and a conformal interval. From it this crate derives, once, the tensor layout,
//! the parameter count, the MACs and validation. [`Pipeline`] runs everything around the
//! network — input checks, normalization, the base forecast, the gate and the certificate —
//! for every backend: training calibrates with it, the engine serves with it, the ONNX
//! exporter reads its linear maps off it.
//!
//! This crate does not depend on the training library (Candle) nor on the file format.
//!
//! ```
//! use tns_model::{ModelConfig, ModelKind, NetworkConfig};
//! let mut cfg = ModelConfig::new("b", ModelKind::SystemB, &["x", "y", "vx", "vy"], &["x", "y", "vx", "vy"], 10, 1, 1);
//! assert_eq!(cfg.network, Some(NetworkConfig::Gru { hidden: 32 }));
//! assert_eq!(cfg.parameter_count(), 3_780);
//! cfg.network = Some("mlp:64,64".parse().unwrap());
//! let layers = cfg.layers().unwrap();
//! assert_eq!(layers.iter().map(|l| l.layer.type_name()).collect::<Vec<_>>(),
//!            ["flatten", "dense", "relu", "dense", "relu", "dense"]);
//! ```

mod config;
pub mod examples;
pub mod mamba;
mod network;
pub mod nhits;
mod pipeline;
pub mod s4d;

pub use config::{
    Base, FutureInputs, InputNormalization, MAX_COLUMNS, MAX_LAYERS, MAX_LEAD, MAX_PARAMETERS,
    MAX_ROWS, MAX_WIDTH, ModelConfig, ModelKind, QuantileHeads, head_index,
};
pub use network::{
    Activation, Init, Layer, LayerNode, NETWORK_SYNTAX, NetworkConfig, ParamSpec, RMS_NORM_EPS,
    ROPE_THETA, Shape, moving_average_matrix, rope_angles,
};
pub use pipeline::{
    Forecast, INPUT_LIMIT, InputError, Pipeline, PipelineError, PipelineParts, Prior, accepts_input,
};

use serde::{Deserialize, Serialize};
use tns_kalman::{AxisParams, KalmanSpec, StructuralParams};

/// One f32 tensor of a model, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Name, e.g. `gru.weight_ih_l0`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The fitted Kalman prior: layout and noise parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KalmanParameters {
    /// Axes and `dt`.
    pub spec: KalmanSpec,
    /// Fitted noise parameters per axis.
    pub params: Vec<AxisParams>,
    /// The fitted variances of each target's structural model, when the description asks
    /// for a structural prior ([`ModelConfig::structural`]); the axes are then unused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub structural: Vec<StructuralParams>,
}

/// Why a model description is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Unknown `--model` name.
    #[error(
        "unknown model kind {0:?}; use one of persistence, seasonal-naive, kalman, linear, mlp, system-a, system-b"
    )]
    UnknownKind(String),
    /// Unparsable `--network`.
    #[error("cannot read network {0:?}; use one of: {NETWORK_SYNTAX}")]
    NetworkSpec(String),
    /// Lookback, horizon or lead of zero.
    #[error("lookback, horizon and lead must be at least 1")]
    ZeroSize,
    /// A size above its limit.
    #[error("{what} = {value} exceeds the limit of {max}")]
    Limit {
        /// What is too large.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        max: usize,
    },
    /// A layer wider than [`MAX_WIDTH`].
    #[error("layer width {width} exceeds the limit of {MAX_WIDTH}")]
    Width {
        /// The width asked for.
        width: usize,
    },
    /// A TCN whose receptive field is shorter than the window it reads.
    #[error(
        "network {network}: its receptive field is {field} rows but the window has {lookback}; add levels or widen the kernel"
    )]
    ReceptiveField {
        /// The network, in `--network` syntax.
        network: String,
        /// Rows one output sees.
        field: usize,
        /// Rows of the window.
        lookback: usize,
    },
    /// Attention heads that do not split the width.
    #[error(
        "network {network}: kv_heads must divide heads, heads must divide d_model, and each head's width (d_model / heads) must be even for rotary embeddings"
    )]
    Heads {
        /// The network, in `--network` syntax.
        network: String,
    },
    /// Channel independence with a head on the last token only.
    #[error(
        "network {network}: channel independence needs the flattened head (add `,flatten`): the last token alone would be the last channel's"
    )]
    IndependentHead {
        /// The network, in `--network` syntax.
        network: String,
    },
    /// Patches that do not tile the lookback: the stride must divide the lookback less the
    /// patch length, and be at most the patch length.
    #[error(
        "network {network}: patches must tile the lookback ({lookback} rows): the stride must be at most the patch length and divide the lookback less the patch length"
    )]
    Patch {
        /// The network, in `--network` syntax.
        network: String,
        /// Rows of the window.
        lookback: usize,
    },
    /// A moving-average window of even length (it would have no centre row).
    #[error(
        "network {network}: the moving-average kernel must be odd (25 is DLinear's usual choice), got {kernel}"
    )]
    EvenKernel {
        /// The network, in `--network` syntax.
        network: String,
        /// The kernel given.
        kernel: usize,
    },
    /// A layer of width zero.
    #[error("network {network}: every layer width must be at least 1")]
    ZeroWidth {
        /// The network, in `--network` syntax.
        network: String,
    },
    /// Too many parameters.
    #[error("{0} parameters exceed the limit of {MAX_PARAMETERS}")]
    Parameters(usize),
    /// No feature or no target.
    #[error("a model needs at least one feature and one target")]
    NoColumns,
    /// A column listed twice among the features or the targets.
    #[error("column {0:?} is listed twice; list each feature and target once")]
    DuplicateColumn(String),
    /// A target that is not a feature.
    #[error("target {target:?} is not among the features {features:?}")]
    UnknownTarget {
        /// The target.
        target: String,
        /// The features.
        features: Vec<String>,
    },
    /// A Kalman axis names a column outside the window.
    #[error(
        "Kalman axis (position column {position}, velocity column {velocity:?}) is outside the {features} feature columns"
    )]
    AxisColumn {
        /// Position column index.
        position: usize,
        /// Velocity column index.
        velocity: Option<usize>,
        /// Number of features.
        features: usize,
    },
    /// A network on a kind without one, or none on a learned kind.
    #[error("kind {kind} {} a network", if *needs { "needs" } else { "takes no" })]
    NetworkPresence {
        /// The kind.
        kind: ModelKind,
        /// Whether it needs one.
        needs: bool,
    },
    /// Network rows outside `1..=lookback`.
    #[error(
        "the network reads {rows} rows but the window has {lookback}; it must read 1 to {lookback}"
    )]
    NetworkLookback {
        /// Rows the network reads.
        rows: usize,
        /// Rows of the window.
        lookback: usize,
    },
    /// Quantile heads that cannot be used.
    #[error(
        "quantile heads at levels {lower} and {upper}: they need a model with a network and levels 0 < lower < 0.5 < upper < 1"
    )]
    QuantileHeads {
        /// The lower level.
        lower: f64,
        /// The upper level.
        upper: f64,
    },
    /// A structural prior on a kind without a Kalman prior.
    #[error(
        "kind {0} has no Kalman prior, so it takes no structural components (use kalman or system-b)"
    )]
    StructuralPresence(ModelKind),
    /// Invalid structural components.
    #[error("structural prior: {0}")]
    Structural(#[source] tns_kalman::KalmanError),
    /// A Kalman-based kind without axes.
    #[error("kind {0} needs Kalman axes (position/velocity columns)")]
    MissingAxes(ModelKind),
    /// A seasonal base without a usable season.
    #[error(
        "seasonal-naive needs a season of at least 1 row and at most the lookback ({lookback}); got {season:?}"
    )]
    Season {
        /// The season given.
        season: Option<usize>,
        /// The lookback.
        lookback: usize,
    },
    /// A season on a kind whose base is not seasonal.
    #[error("kind {0} takes no season")]
    SeasonPresence(ModelKind),
    /// A gate on a kind other than System B, or none on System B.
    #[error("a gate is required for system-b and allowed only there")]
    GatePresence,
    /// A layer placed on an input it cannot take.
    #[error("layer {layer:?} ({kind}) cannot take an input of shape {input}")]
    LayerInput {
        /// The layer's name.
        layer: String,
        /// Its type.
        kind: &'static str,
        /// The shape it was given.
        input: String,
    },
    /// A network whose last layer does not produce the forecast's width.
    #[error("the network ends in shape {found}, the forecast needs [{expected}]")]
    NetworkOutput {
        /// What it produces.
        found: String,
        /// `horizon × targets`.
        expected: usize,
    },
    /// A future column that cannot be one.
    #[error("future column {column:?} {problem}")]
    FutureColumn {
        /// The column.
        column: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Future inputs with neither columns nor calendar features.
    #[error("future inputs need at least one column or calendar feature")]
    EmptyFuture,
    /// The calendar settings are invalid.
    #[error("calendar: {0}")]
    Calendar(#[source] tns_calendar::CalendarError),
    /// A tensor the description needs is missing.
    #[error("tensor {0:?} is missing from the model file")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {name:?} has shape {found:?}, the description needs {expected:?}")]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The shape the description derives.
        expected: Vec<usize>,
    },
}

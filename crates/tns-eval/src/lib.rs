//! Evaluation on the inference engine: error metrics per horizon step, gate pass rate,
//! conformal coverage, a paired block bootstrap of MSE differences, the comparison of several
//! models on the same test windows ([`compare`]), INT8 quantization with its accuracy report
//! ([`quantize_with_report`]), and SVG plots.
//!
//! ```
//! use tns_eval::paired_bootstrap;
//! // Model A is worse than the reference by exactly 1 on every window.
//! let a = vec![2.0; 500];
//! let r = vec![1.0; 500];
//! let ci = paired_bootstrap(&a, &r, 10, 200, 1);
//! assert_eq!((ci.mean, ci.low, ci.high), (1.0, 1.0, 1.0));
//! ```

mod adaptive;
mod compare;
mod gate;
mod metrics;
mod plot;
mod quantize;
mod scores;

use std::path::PathBuf;

pub use adaptive::{AdaptiveScores, IntervalRow, adaptive_radii, adaptive_scores, interval_table};
pub use compare::{PREDICTION_COLUMNS, Report, common_origins, compare, write_csv};
pub use gate::{GateEffect, gate_effect, gate_table};
pub use quantize::{Int8Report, SpeedComparison, quantize_with_report, summary};
pub use scores::{
    Interval, Radii, Score, ScoreContext, Scores, Slice, daily_season, mase_scale, score,
    scores_table,
};

pub use metrics::{
    DiffInterval, ModelReport, StepMetrics, evaluate, markdown_table, paired_bootstrap,
    window_errors,
};
pub use plot::{
    LossCurve, PlotError, SeriesToPlot, plot_forecasts, plot_latency_histograms, plot_lines,
    plot_loss_curves,
};

/// The engine's forecasts of every window, errors naming the model.
pub(crate) fn forecasts(
    engine: &tns_engine::Engine,
    windows: &tns_data::WindowSet,
) -> Result<Vec<tns_model::Forecast>, EvalError> {
    let predictions =
        engine
            .predict_all(&windows.inputs())
            .map_err(|source| EvalError::Predict {
                model: engine.manifest().config.name.clone(),
                source,
            })?;
    Ok(predictions.into_iter().map(|p| p.forecast).collect())
}

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// No model to compare.
    #[error("no model to evaluate")]
    NoModels,
    /// The models' windows do not line up.
    #[error("{0}")]
    Windows(String),
    /// A model could not predict the windows.
    #[error("predicting with {model}: {source}")]
    Predict {
        /// The model's name.
        model: String,
        /// What the engine reported.
        source: tns_engine::EngineError,
    },
    /// A model could not be compiled for the engine.
    #[error(transparent)]
    Engine(#[from] tns_engine::EngineError),
    /// The model description is invalid.
    #[error(transparent)]
    Description(#[from] tns_model::ConfigError),
    /// Quantization is not possible for this model.
    #[error("cannot quantize: {0}")]
    Quantize(String),
    /// Recalibrating the conformal radii failed.
    #[error(transparent)]
    Conformal(#[from] tns_certify::ConformalError),
    /// A report could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

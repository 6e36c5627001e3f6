//! Evaluation: error metrics per horizon step, gate pass rate, conformal coverage, a
//! paired block bootstrap of MSE differences, the comparison table, and SVG plots.
//!
//! ```
//! use tns_eval::paired_bootstrap;
//! // Model A is worse than the reference by exactly 1 on every window.
//! let a = vec![2.0; 500];
//! let r = vec![1.0; 500];
//! let ci = paired_bootstrap(&a, &r, 10, 200, 1);
//! assert_eq!((ci.mean, ci.low, ci.high), (1.0, 1.0, 1.0));
//! ```

mod metrics;
mod plot;

pub use metrics::{
    DiffInterval, ModelReport, StepMetrics, evaluate, markdown_table, paired_bootstrap,
    window_errors,
};
pub use plot::{
    LossCurve, PlotError, SeriesToPlot, plot_forecasts, plot_latency_histograms, plot_loss_curves,
};

//! Training: turns a [`tns_model::ModelConfig`] and the data splits into a model file.
//!
//! [`prepare`] fits everything that is not a weight on the training split (the Kalman
//! parameters, the input normalization, the residual scales); [`Trainer`] runs
//! backpropagation through time on Candle with AdamW, warm-up + cosine learning rate,
//! gradient clipping, early stopping on validation, seeded shuffling, atomic per-epoch
//! checkpoints that a run can resume from bit for bit, a progress bar and a per-epoch
//! metrics log; [`fit_model`] ties it together and calibrates the conformal radii on the
//! calibration split with the inference engine, the code that will serve the model.

mod axes;
mod fit;
mod lr_find;
mod optim;
mod prepare;
mod trainer;

pub use axes::parse_axes;
pub use fit::{FitOptions, TrainedModel, fit_model};
pub use lr_find::{LrFinding, LrPoint, LrSweep, lr_find};
pub use optim::AdamW;
pub use prepare::{NetData, Prepared, prepare};
pub use trainer::{
    EpochMetrics, Loss, Schedule, TrainConfig, TrainMonitor, Trainer, learning_rate,
};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The network on Candle failed.
    #[error(transparent)]
    Model(#[from] tns_models::ModelError),
    /// A Candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The model file could not be written.
    #[error(transparent)]
    Format(#[from] tns_format::FormatError),
    /// The model description is invalid.
    #[error(transparent)]
    Description(#[from] tns_model::ConfigError),
    /// The fitted parts do not make a pipeline.
    #[error(transparent)]
    Pipeline(#[from] tns_model::PipelineError),
    /// A window cannot be predicted from.
    #[error(transparent)]
    Input(#[from] tns_model::InputError),
    /// The engine could not compile or run the trained model (calibration).
    #[error(transparent)]
    Engine(#[from] tns_engine::EngineError),
    /// The conformal calibration failed.
    #[error(transparent)]
    Conformal(#[from] tns_certify::ConformalError),
    /// A checkpoint could not be read or written.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The training settings or data do not fit the model.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The caller's [`TrainMonitor`] stopped the run (a keyboard interrupt in Python).
    #[error("training stopped: {0}")]
    Stopped(String),
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: the loss is not finite; lower the learning rate")]
    Diverged {
        /// The epoch.
        epoch: usize,
    },
}

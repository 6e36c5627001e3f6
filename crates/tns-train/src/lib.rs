//! Training: turns a [`tns_format::ModelConfig`] and the data splits into a model file.
//!
//! [`prepare`] fits everything that is not a weight on the training split (the Kalman
//! parameters, the input normalization, the residual scales); [`Trainer`] runs
//! backpropagation through time on Candle with AdamW, warm-up + cosine learning rate,
//! gradient clipping, early stopping on validation, seeded shuffling, atomic per-epoch
//! checkpoints that a run can resume from bit for bit, a progress bar and a per-epoch
//! metrics log; [`fit_model`] ties it together and calibrates the conformal radii on the
//! calibration split.

mod fit;
mod optim;
mod prepare;
mod trainer;

pub use fit::{FitOptions, TrainedModel, fit_model};
pub use optim::AdamW;
pub use prepare::{NetData, Prepared, prepare};
pub use trainer::{EpochMetrics, TrainConfig, Trainer, learning_rate};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] tns_models::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Format(#[from] tns_format::FormatError),
    #[error(transparent)]
    Input(#[from] tns_format::InputError),
    #[error(transparent)]
    Conformal(#[from] tns_certify::ConformalError),
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("training diverged at epoch {epoch}: the loss is not finite; lower the learning rate")]
    Diverged { epoch: usize },
}

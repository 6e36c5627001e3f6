//! The learned models on Candle: the networks (linear, MLP, GRU) built from a
//! [`tns_format::ModelConfig`], and [`Forecaster`], which wraps a network with the
//! manifest's pipeline (normalization, base forecast, gate, certificate) to predict from
//! raw windows.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tns_format::{ModelConfig, ModelKind};
//! use tns_models::Network;
//!
//! let cfg = ModelConfig::new("a", ModelKind::SystemA, &["x", "y", "vx", "vy"], &["x", "y", "vx", "vy"], 10, 1, 1);
//! let net = Network::init(&cfg, &Device::Cpu).unwrap();
//! assert_eq!(net.parameter_count(), 3_780);
//! let x = Tensor::zeros((2, 10, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
//! assert_eq!(net.forward(&x).unwrap().dims(), &[2, 4]);
//! ```

mod forecaster;
mod gate_loss;
mod network;

pub use forecaster::Forecaster;
pub use gate_loss::{gate_penalty, gate_statistics};
pub use network::Network;

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Format(#[from] tns_format::FormatError),
    #[error(transparent)]
    Input(#[from] tns_format::InputError),
    #[error("invalid model: {0}")]
    Config(String),
}

//! The networks on Candle, for training: every layer of the model description
//! ([`tns_model::Layer`]) lowered once to Candle modules, built from a
//! [`tns_model::ModelConfig`], the fused recurrent ops ([`fused`]: a whole GRU or LSTM
//! sequence as one op with a hand-written backward) and the gate-aware training penalty. Prediction after
//! training runs on the engine (`tns-engine`), not here.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tns_model::{ModelConfig, ModelKind};
//! use tns_models::Network;
//!
//! let cfg = ModelConfig::new("a", ModelKind::SystemA, &["x", "y", "vx", "vy"], &["x", "y", "vx", "vy"], 10, 1, 1);
//! let net = Network::init(&cfg, &Device::Cpu).unwrap();
//! assert_eq!(net.parameter_count(), 3_780);
//! let x = Tensor::zeros((2, 10, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
//! assert_eq!(net.forward(&x).unwrap().dims(), &[2, 4]);
//! ```

pub mod fused;
mod gate_loss;
#[cfg(test)]
mod gradcheck;
mod network;
mod quantile_loss;

pub use gate_loss::{gate_penalty, gate_statistics};
pub use network::{Heads, Network};
pub use quantile_loss::{pinball, pinball_loss};

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A Candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The model description is invalid or its tensors do not match it.
    #[error(transparent)]
    Description(#[from] tns_model::ConfigError),
    /// The network and its inputs do not fit together.
    #[error("invalid model: {0}")]
    Config(String),
}

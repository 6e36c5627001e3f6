//! The TNS model description and its single-file format.
//!
//! A model is described by a serializable [`ModelConfig`]; a trained model is one file:
//! safetensors tensors plus a JSON [`Manifest`] in the safetensors metadata (format
//! version, config, normalization, Kalman parameters, conformal radii, training summary and
//! the SHA-256 of the tensor bytes). Loading checks the format tag, the version and the
//! checksum, and rejects truncated, tampered or future-version files with an error that
//! says which. This crate does not depend on the training library, so serving and
//! embedding a model never pull in Candle.
//!
//! ```
//! use tns_format::{ModelConfig, ModelKind, NetworkConfig};
//! let cfg = ModelConfig::new("a", ModelKind::SystemA, &["x", "y", "vx", "vy"], &["x", "y", "vx", "vy"], 10, 1, 1);
//! assert_eq!(cfg.network, Some(NetworkConfig::Gru { hidden: 32 }));
//! assert_eq!(cfg.parameter_count(), 3_780);
//! ```

mod config;
mod file;
mod pipeline;
mod quantize;

pub use config::{Base, InputNormalization, ModelConfig, ModelKind, NetworkConfig};
pub use file::{
    FORMAT_TAG, FORMAT_VERSION, FormatError, KalmanManifest, Manifest, NamedTensor,
    TrainingSummary, load_model, read_model, save_model, tensor_checksum,
};
pub use pipeline::{Forecast, InputError, Pipeline};
pub use quantize::{
    INT8_MAX, QuantScheme, Quantization, SCALE_SUFFIX, quantize_int8, quantized_codes,
};

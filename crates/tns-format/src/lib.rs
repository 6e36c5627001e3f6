//! The TNS model file: reading and writing one model as a single, verified file.
//!
//! A model is described by a serializable [`tns_model::ModelConfig`]; a trained model is one file:
//! safetensors tensors plus a JSON [`Manifest`] in the safetensors metadata (format
//! version, config, normalization, Kalman parameters, conformal radii, training summary and
//! the SHA-256 of the tensor bytes). Loading checks the format tag, the version and the
//! checksum, and rejects truncated, tampered or future-version files with an error that
//! says which. This crate does not depend on the training library, so serving and
//! embedding a model never pull in Candle.
//!
//! The model description itself ([`tns_model::ModelConfig`]) and the runtime pipeline live
//! in `tns-model`; this crate only reads and writes files.

mod file;
mod quantize;

pub use file::{
    FORMAT_TAG, FORMAT_VERSION, FileChecksum, FormatError, MAX_MODEL_BYTES, Manifest,
    TrainingSummary, encode_model, load_model, model_checksum, read_model, save_model,
    tensor_checksum, with_manifest_json,
};
pub use quantize::{
    INT8_MAX, QuantScheme, Quantization, SCALE_SUFFIX, quantize_int8, quantized_codes,
};

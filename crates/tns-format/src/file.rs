use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tns_certify::ConformalCalibration;

use tns_model::{
    InputNormalization, KalmanParameters, ModelConfig, NamedTensor, Pipeline, PipelineError,
    PipelineParts,
};

use crate::quantize::{QuantScheme, Quantization, SCALE_SUFFIX, quantized_codes};

/// Value of the manifest's `format` field: tells a TNS model from any other safetensors file.
pub const FORMAT_TAG: &str = "tns-model";
/// Newest format version this build reads and writes. Files with a higher version are
/// rejected; lower versions load. Version 2 added INT8 weights; f32 models are still
/// written as version 1 so that older TNS builds keep reading them.
pub const FORMAT_VERSION: u32 = 2;
const MANIFEST_KEY: &str = "tns.manifest";
/// Metadata key of the whole-model checksum (see [`model_checksum`]). Older files lack it:
/// their whole-model checksum is recomputed on load and reported as such. Stored beside the
/// manifest rather than in it, so that older TNS builds still read newer files.
const MODEL_SHA256_KEY: &str = "tns.model_sha256";

/// What training did, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Epochs run (including those after the best one, before early stopping).
    pub epochs_run: usize,
    /// Epoch with the lowest validation loss (its weights are the ones stored).
    pub best_epoch: usize,
    /// Lowest validation loss (normalized MSE).
    pub best_val_loss: f64,
    /// Training windows.
    pub train_windows: usize,
    /// Validation windows.
    pub val_windows: usize,
    /// Wall-clock seconds of training.
    pub seconds: f64,
    /// Optimizer description.
    pub optimizer: String,
}

/// Everything about a model that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_TAG`].
    pub format: String,
    /// Format version of the file.
    pub format_version: u32,
    /// TNS version that wrote it.
    pub tns_version: String,
    /// The model config.
    pub config: ModelConfig,
    /// Input normalization (fitted on train).
    pub normalization: InputNormalization,
    /// Scale of the network output per `[horizon, target]`: `y = base + scale ⊙ net(x)`.
    pub residual_scale: Vec<f64>,
    /// The Kalman prior, for Kalman-based kinds.
    pub kalman: Option<KalmanParameters>,
    /// Conformal radii (fitted on the calibration split).
    pub conformal: Option<ConformalCalibration>,
    /// Training record, for learned kinds.
    pub training: Option<TrainingSummary>,
    /// SHA-256 of the tensors (see [`tensor_checksum`]).
    pub tensors_sha256: String,
    /// The whole-model checksum of the file this manifest was written to or read from
    /// (`None` for a model not saved yet); see [`Manifest::sha256`]. Not part of the JSON.
    #[serde(skip)]
    pub file_checksum: Option<FileChecksum>,
    /// INT8 weights (format version 2); absent for f32 models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// The data the model was trained on: time and series columns, series filter, split and
    /// forecast-origin spacing (absent in files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<tns_data::DataSpec>,
}

impl Manifest {
    /// The manifest of a model not written yet: its config and what its pipeline reads, this
    /// build's version, and nothing else — no format fields (written by [`encode_model`]),
    /// checksums, training record, quantization or data spec.
    pub fn unsaved(
        config: ModelConfig,
        normalization: InputNormalization,
        residual_scale: Vec<f64>,
        kalman: Option<KalmanParameters>,
        conformal: Option<ConformalCalibration>,
    ) -> Self {
        Self {
            format: String::new(),
            format_version: 0,
            tns_version: env!("CARGO_PKG_VERSION").into(),
            config,
            normalization,
            residual_scale,
            kalman,
            conformal,
            training: None,
            tensors_sha256: String::new(),
            file_checksum: None,
            quantization: None,
            data: None,
        }
    }

    /// The runtime pipeline (normalization, base, gate, interval) of this model.
    pub fn pipeline(&self) -> Result<Pipeline, PipelineError> {
        Pipeline::new(PipelineParts {
            config: &self.config,
            normalization: &self.normalization,
            residual_scale: &self.residual_scale,
            kalman: self.kalman.as_ref(),
            conformal: self.conformal.as_ref(),
            version: &self.tns_version,
            sha256: &self.sha256(),
        })
    }

    /// SHA-256 of the whole model, manifest and tensors (see [`model_checksum`]): what
    /// identifies the model everywhere (certificates, the server, `tns inspect`). That of
    /// its file while the manifest is as written or read; once changed in memory (a rename,
    /// a recalibration), that of the manifest as it would now be written.
    pub fn sha256(&self) -> String {
        let json = self.to_json();
        match &self.file_checksum {
            Some(file) if file.json == json => file.sha256.clone(),
            _ => model_checksum(&json, &self.tensors_sha256),
        }
    }

    /// Whether [`Manifest::sha256`] is the file's checksum recomputed on load, because the
    /// file (written before whole-model checksums) stores only the tensors' checksum.
    pub fn sha256_recomputed(&self) -> bool {
        self.file_checksum
            .as_ref()
            .is_some_and(|f| f.recomputed && f.json == self.to_json())
    }

    /// Relabels the model for display (reports that must tell apart models of the same
    /// name): the manifest of a file read or written keeps the file's checksum, which still
    /// identifies the model.
    pub fn relabel(&mut self, name: &str) {
        self.config.name = name.to_string();
        let json = self.to_json();
        if let Some(file) = &mut self.file_checksum {
            file.json = json;
        }
    }

    fn remember_file(&mut self, sha256: String, recomputed: bool) {
        self.file_checksum = Some(FileChecksum {
            sha256,
            json: self.to_json(),
            recomputed,
        });
    }

    fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The whole-model checksum of a file, with the manifest it was computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct FileChecksum {
    sha256: String,
    /// The manifest as serialized when the file was read or written: while the manifest
    /// still serializes to this, the file's checksum is the model's.
    json: String,
    recomputed: bool,
}

/// SHA-256 of a whole model: a domain tag, the manifest's JSON exactly as stored (its length
/// first), then the tensors' checksum ([`tensor_checksum`]). Any change to the description,
/// the fitted values, the calibration or the weights changes it.
pub fn model_checksum(manifest_json: &str, tensors_sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tns-model\0");
    h.update((manifest_json.len() as u64).to_le_bytes());
    h.update(manifest_json.as_bytes());
    h.update(tensors_sha256.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a model file could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read or written.
    #[error("cannot access model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder, a device, a FIFO).
    #[error("{path} is not a regular file; give the path of a .tns model file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than any model.
    #[error(
        "{path} is {bytes} bytes, over the {MAX_MODEL_BYTES}-byte limit of a model file; is it the right file?"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The bytes are not a complete safetensors file.
    #[error(
        "{path} is truncated or not a safetensors file ({detail}); re-export or re-train the model"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What safetensors reported.
        detail: String,
    },
    /// A safetensors file without a TNS manifest.
    #[error(
        "{path} is a safetensors file but not a TNS model (no {MANIFEST_KEY:?} manifest or wrong format tag)"
    )]
    NotTns {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer TNS.
    #[error(
        "{path} was written by a newer TNS (format version {found}, this build reads up to {FORMAT_VERSION}); upgrade TNS"
    )]
    FutureVersion {
        /// The file.
        path: PathBuf,
        /// Its format version.
        found: u32,
    },
    /// The manifest's model description is invalid.
    #[error("{path}: the model description is invalid: {source}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with the description.
        source: tns_model::ConfigError,
    },
    /// The manifest is not valid JSON of the expected structure.
    #[error("{path}: manifest is invalid: {detail}")]
    BadManifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The tensors, or the whole model, do not hash to the stored checksum.
    #[error(
        "{path}: checksum mismatch (the file says {expected}, its contents hash to {found}): the file was modified or corrupted"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The manifest's checksum.
        expected: String,
        /// The tensors' checksum.
        found: String,
    },
    /// A tensor with an unexpected dtype or shape.
    #[error("{path}: tensor {name:?} has an unexpected dtype or an invalid shape")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A quantized weight that is not codes × scales.
    #[error("{path}: quantized weight {name:?}: {detail}")]
    BadQuantization {
        /// The file.
        path: PathBuf,
        /// The weight.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

/// SHA-256 over the tensors in name order: each contributes its name, its shape (u64
/// little-endian per dimension) and its f32 little-endian bytes.
pub fn tensor_checksum(tensors: &[NamedTensor]) -> String {
    let mut sorted: Vec<&NamedTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for t in sorted {
        h.update((t.name.len() as u64).to_le_bytes());
        h.update(t.name.as_bytes());
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        for v in &t.data {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a model file atomically (temporary file + rename). The manifest's checksum,
/// format tag and version are set here from the tensors.
pub fn save_model(
    path: &Path,
    manifest: &Manifest,
    tensors: &[NamedTensor],
) -> Result<Manifest, FormatError> {
    let (manifest, bytes) = encode_model(path, manifest, tensors)?;
    tns_data::write_atomic(path, &bytes).map_err(|source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(manifest)
}

/// The bytes of a model file, as [`save_model`] writes them, and the manifest they hold;
/// `path` names the model in errors.
pub fn encode_model(
    path: &Path,
    manifest: &Manifest,
    tensors: &[NamedTensor],
) -> Result<(Manifest, Vec<u8>), FormatError> {
    let mut manifest = manifest.clone();
    manifest.format = FORMAT_TAG.into();
    manifest.format_version = if manifest.quantization.is_some() {
        2
    } else {
        1
    };
    manifest.tensors_sha256 = tensor_checksum(tensors);
    let encoded: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|t| encode_tensor(path, &manifest, t, tensors))
        .collect::<Result<_, _>>()?;
    let views = tensors
        .iter()
        .zip(&encoded)
        .map(|(t, (dtype, b))| {
            TensorView::new(*dtype, t.shape.clone(), b)
                .map(|v| (t.name.clone(), v))
                .map_err(|_| FormatError::BadTensor {
                    path: path.to_path_buf(),
                    name: t.name.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_string(&manifest).map_err(|e| FormatError::BadManifest {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let sha = model_checksum(&json, &manifest.tensors_sha256);
    manifest.remember_file(sha.clone(), false);
    let metadata = HashMap::from([
        (MANIFEST_KEY.to_string(), json),
        (MODEL_SHA256_KEY.to_string(), sha),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| FormatError::BadManifest {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok((manifest, bytes))
}

/// The on-disk dtype and bytes of one tensor: I8 codes for quantized weights, F16 for their
/// scales, f32 otherwise.
fn encode_tensor(
    path: &Path,
    manifest: &Manifest,
    t: &NamedTensor,
    all: &[NamedTensor],
) -> Result<(Dtype, Vec<u8>), FormatError> {
    let f32_bytes = || {
        (
            Dtype::F32,
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    };
    let Some(q) = &manifest.quantization else {
        return Ok(f32_bytes());
    };
    let bad = |detail: &str| FormatError::BadQuantization {
        path: path.to_path_buf(),
        name: t.name.clone(),
        detail: detail.into(),
    };
    match q.scheme {
        QuantScheme::Int8PerChannel => {}
    }
    if q.weights.contains(&t.name) {
        let scale_name = format!("{}{SCALE_SUFFIX}", t.name);
        let scales = all
            .iter()
            .find(|s| s.name == scale_name)
            .ok_or_else(|| bad("its scale tensor is missing"))?;
        let codes = quantized_codes(t, &scales.data)
            .ok_or_else(|| bad("values are not integer multiples (|q| ≤ 127) of the row scales"))?;
        return Ok((Dtype::I8, codes.iter().map(|&c| c as u8).collect()));
    }
    if let Some(weight) = t.name.strip_suffix(SCALE_SUFFIX)
        && q.weights.iter().any(|w| w == weight)
    {
        let halves: Vec<half::f16> = t.data.iter().map(|&s| half::f16::from_f32(s)).collect();
        if halves.iter().zip(&t.data).any(|(h, &s)| h.to_f32() != s) {
            return Err(bad("scales must be exactly representable in f16"));
        }
        return Ok((
            Dtype::F16,
            halves.iter().flat_map(|h| h.to_le_bytes()).collect(),
        ));
    }
    Ok(f32_bytes())
}

/// Largest model file read (1 GiB): far above any model TNS trains, and a bound on what a
/// wrong path (a device, a huge unrelated file) can make the loader allocate.
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// Reads and verifies a model file. Only regular files of at most [`MAX_MODEL_BYTES`] are
/// read: a device such as `/dev/zero` or a FIFO is refused before any read (a FIFO would
/// block, a device never end).
pub fn load_model(path: &Path) -> Result<(Manifest, Vec<NamedTensor>), FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(FormatError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_MODEL_BYTES {
        return Err(FormatError::TooLarge {
            path: path.to_path_buf(),
            bytes: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    read_model(path, &bytes)
}

/// The model file `model` with its manifest replaced by `manifest_json` (as given, not
/// checked) and no whole-model checksum: what the manifest fuzz target loads. `None` when
/// `model` is not a safetensors file.
#[doc(hidden)]
pub fn with_manifest_json(model: &[u8], manifest_json: &str) -> Option<Vec<u8>> {
    let st = SafeTensors::deserialize(model).ok()?;
    let metadata = HashMap::from([(MANIFEST_KEY.to_string(), manifest_json.to_string())]);
    safetensors::serialize(st.tensors(), Some(metadata)).ok()
}

/// Reads and verifies a model held in memory; `path` only names it in errors. This is what
/// [`load_model`] runs after reading the file, and what the fuzz target feeds.
pub fn read_model(path: &Path, bytes: &[u8]) -> Result<(Manifest, Vec<NamedTensor>), FormatError> {
    let p = || path.to_path_buf();
    // safetensors validates the header length against the file size and every tensor's
    // byte range against its dtype and shape before we touch the data.
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| FormatError::Truncated {
        path: p(),
        detail: e.to_string(),
    })?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MANIFEST_KEY))
        .ok_or_else(|| FormatError::NotTns { path: p() })?;
    let raw: serde_json::Value =
        serde_json::from_str(json).map_err(|e| FormatError::BadManifest {
            path: p(),
            detail: e.to_string(),
        })?;
    if raw.get("format").and_then(|v| v.as_str()) != Some(FORMAT_TAG) {
        return Err(FormatError::NotTns { path: p() });
    }
    let version = raw
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version > u64::from(FORMAT_VERSION) {
        return Err(FormatError::FutureVersion {
            path: p(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
        });
    }
    let mut manifest: Manifest =
        serde_json::from_value(raw).map_err(|e| FormatError::BadManifest {
            path: p(),
            detail: e.to_string(),
        })?;
    // Every fitted value against the description and its range (normalization per feature,
    // Kalman axes among the features and their noise, calibration, gate level, ...): a file
    // edited by hand must not load with values no training could produce.
    manifest.pipeline().map_err(|e| FormatError::BadManifest {
        path: p(),
        detail: e.to_string(),
    })?;
    let stored_sha = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MODEL_SHA256_KEY))
        .cloned();
    manifest
        .config
        .validate()
        .map_err(|source| FormatError::InvalidConfig { path: p(), source })?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| FormatError::Truncated {
        path: p(),
        detail: e.to_string(),
    })?;
    let quantized: &[String] = manifest
        .quantization
        .as_ref()
        .map_or(&[], |q| q.weights.as_slice());
    let is_scale = |name: &str| {
        name.strip_suffix(SCALE_SUFFIX)
            .is_some_and(|w| quantized.iter().any(|q| q == w))
    };
    let mut tensors = Vec::new();
    let mut codes = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 if !quantized.contains(&name) && !is_scale(&name) => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 if is_scale(&name) => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I8 if quantized.contains(&name) && shape.len() == 2 => {
                codes.push((
                    name,
                    shape,
                    bytes.iter().map(|&b| b as i8).collect::<Vec<_>>(),
                ));
                continue;
            }
            _ => return Err(FormatError::BadTensor { path: p(), name }),
        };
        tensors.push(NamedTensor { name, shape, data });
    }
    // Dequantize each weight with its scales: `q · s`, exactly what the quantizer produced.
    for (name, shape, q) in codes {
        let scale_name = format!("{name}{SCALE_SUFFIX}");
        let bad = |detail: String| FormatError::BadQuantization {
            path: p(),
            name: name.clone(),
            detail,
        };
        let scales = tensors
            .iter()
            .find(|t| t.name == scale_name)
            .ok_or_else(|| bad(format!("its scale tensor {scale_name:?} is missing")))?;
        if scales.shape != [shape[0]] || scales.data.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(bad(format!(
                "scales must be {} finite non-negative values",
                shape[0]
            )));
        }
        if q.contains(&i8::MIN) {
            return Err(bad("code -128 is outside the symmetric range".into()));
        }
        let cols = shape[1].max(1);
        let data = q
            .chunks_exact(cols)
            .zip(&scales.data)
            .flat_map(|(row, &s)| row.iter().map(move |&c| f32::from(c) * s))
            .collect();
        tensors.push(NamedTensor { name, shape, data });
    }
    if let Some(missing) = quantized
        .iter()
        .find(|w| !tensors.iter().any(|t| &&t.name == w))
    {
        return Err(FormatError::BadQuantization {
            path: p(),
            name: missing.clone(),
            detail: "listed in the manifest but not stored".into(),
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let found = tensor_checksum(&tensors);
    if found != manifest.tensors_sha256 {
        return Err(FormatError::Checksum {
            path: p(),
            expected: manifest.tensors_sha256.clone(),
            found,
        });
    }
    let whole = model_checksum(json, &found);
    if let Some(expected) = &stored_sha
        && *expected != whole
    {
        return Err(FormatError::Checksum {
            path: p(),
            expected: expected.clone(),
            found: whole,
        });
    }
    manifest.remember_file(whole, stored_sha.is_none());
    Ok((manifest, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_model::ModelKind;

    fn sample() -> (Manifest, Vec<NamedTensor>) {
        let f = ["x", "y"];
        let config = ModelConfig::new("t", ModelKind::Linear, &f, &f, 3, 1, 1);
        let manifest = Manifest {
            tns_version: "0.1.0".into(),
            ..Manifest::unsaved(
                config,
                InputNormalization {
                    mean: vec![0.0; 2],
                    std: vec![1.0; 2],
                    relative: vec![true; 2],
                    future_mean: Vec::new(),
                    future_std: Vec::new(),
                },
                vec![1.0, 2.0],
                None,
                Some(ConformalCalibration {
                    alpha: 0.1,
                    n_calibration: 100,
                    radii: vec![0.5, 0.7],
                    scale: tns_certify::ScoreScale::Absolute,
                    by_hour: None,
                    quantile_regression: false,
                }),
            )
        };
        let tensors = vec![
            NamedTensor {
                name: "head.weight".into(),
                shape: vec![2, 6],
                // Includes small negatives, which quantize to a code of -0.
                data: (0..12).map(|i| i as f32 * 0.5 - 0.001).collect(),
            },
            NamedTensor {
                name: "head.bias".into(),
                shape: vec![2],
                data: vec![0.25, -1.0],
            },
        ];
        (manifest, tensors)
    }

    #[test]
    fn round_trip_preserves_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tns");
        let (m, t) = sample();
        let written = save_model(&path, &m, &t).unwrap();
        let (loaded, tensors) = load_model(&path).unwrap();
        assert_eq!(loaded, written);
        // An f32 model stays readable by format-1 builds.
        assert_eq!(loaded.format_version, 1);
        let mut sorted = t.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(tensors, sorted);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn int8_models_round_trip_as_i8_codes_and_f16_scales() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.tns");
        let (mut m, t) = sample();
        let (quantization, q) = crate::quantize_int8(&t, &["head.weight".to_string()]).unwrap();
        m.quantization = Some(quantization);
        let written = save_model(&path, &m, &q).unwrap();
        assert_eq!(written.format_version, 2);
        let (loaded, tensors) = load_model(&path).unwrap();
        assert_eq!(loaded, written);
        let mut sorted = q.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(tensors, sorted);
        // The stored weight is one byte per value: [2, 6] → 12 bytes of codes.
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let info = meta.info("head.weight").unwrap();
        assert_eq!(info.dtype, Dtype::I8);
        assert_eq!(info.data_offsets.1 - info.data_offsets.0, 12);
        assert_eq!(meta.info("head.weight.scale").unwrap().dtype, Dtype::F16);
        // Every code byte is covered by the checksum.
        let start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut flipped = bytes.clone();
        flipped[start + info.data_offsets.0 + 3] ^= 0x01;
        assert!(matches!(
            read_model(&path, &flipped).unwrap_err(),
            FormatError::Checksum { .. }
        ));
        // -128 is not a symmetric code.
        let mut bad = bytes.clone();
        bad[start + info.data_offsets.0] = 0x80;
        assert!(matches!(
            read_model(&path, &bad).unwrap_err(),
            FormatError::BadQuantization { .. }
        ));
        // Weights that are not codes × scales cannot be saved as INT8.
        let mut off_grid = q.clone();
        off_grid
            .iter_mut()
            .find(|t| t.name == "head.weight")
            .unwrap()
            .data[1] += 1e-3;
        assert!(matches!(
            save_model(&path, &m, &off_grid).unwrap_err(),
            FormatError::BadQuantization { .. }
        ));
    }

    /// The file `bytes` with its manifest edited by `edit`, the whole-model checksum kept
    /// (an edit that hopes to go unnoticed) or dropped (a file as older releases wrote).
    fn rewritten(bytes: &[u8], edit: &dyn Fn(&mut serde_json::Value), keep_sha: bool) -> Vec<u8> {
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let mut metadata = meta.metadata().clone().unwrap();
        let mut manifest: serde_json::Value =
            serde_json::from_str(&metadata[MANIFEST_KEY]).unwrap();
        edit(&mut manifest);
        metadata.insert(MANIFEST_KEY.into(), manifest.to_string());
        if !keep_sha {
            metadata.remove(MODEL_SHA256_KEY);
        }
        let st = SafeTensors::deserialize(bytes).unwrap();
        safetensors::serialize(st.tensors(), Some(metadata)).unwrap()
    }

    #[test]
    fn the_checksum_covers_the_whole_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tns");
        let (m, t) = sample();
        let written = save_model(&path, &m, &t).unwrap();
        let good = std::fs::read(&path).unwrap();
        let (loaded, _) = read_model(&path, &good).unwrap();
        assert_eq!(loaded.sha256(), written.sha256());
        assert!(!loaded.sha256_recomputed());
        assert_ne!(loaded.sha256(), loaded.tensors_sha256);
        // The same tensors under another description, fitted values or calibration.
        type Edit = fn(&mut serde_json::Value);
        let changes: [(&str, Edit); 5] = [
            ("targets swapped", |m| {
                m["config"]["targets"] = serde_json::json!(["y", "x"])
            }),
            ("renamed", |m| m["config"]["name"] = "other".into()),
            ("residual scale", |m| m["residual_scale"][0] = 3.0.into()),
            ("normalization", |m| {
                m["normalization"]["mean"][1] = 0.5.into()
            }),
            ("conformal radius", |m| {
                m["conformal"]["radii"][0] = 9.0.into()
            }),
        ];
        let mut seen = std::collections::HashSet::from([loaded.sha256()]);
        for (what, edit) in changes {
            let err = read_model(&path, &rewritten(&good, &edit, true)).unwrap_err();
            assert!(matches!(err, FormatError::Checksum { .. }), "{what}: {err}");
            // Without a stored checksum (a file of an older release) the edited model loads,
            // under a checksum of its own, reported as recomputed.
            let (edited, _) = read_model(&path, &rewritten(&good, &edit, false)).unwrap();
            assert!(edited.sha256_recomputed(), "{what}");
            assert!(
                seen.insert(edited.sha256()),
                "{what}: same checksum as another model"
            );
        }
        // Values no training produces are refused whatever the checksum says.
        let absurd: [(&str, Edit); 4] = [
            ("conformal alpha 5", |m| {
                m["conformal"]["alpha"] = 5.0.into()
            }),
            ("negative radius", |m| {
                m["conformal"]["radii"][0] = (-1.0).into()
            }),
            ("too few calibration windows", |m| {
                m["conformal"]["n_calibration"] = 3.into()
            }),
            ("non-finite mean", |m| {
                m["normalization"]["mean"][0] = serde_json::Value::Null
            }),
        ];
        for (what, edit) in absurd {
            for keep in [true, false] {
                let err = read_model(&path, &rewritten(&good, &edit, keep)).unwrap_err();
                assert!(
                    matches!(err, FormatError::BadManifest { .. }),
                    "{what}: {err}"
                );
            }
        }
        // A manifest changed in memory is no longer the file's model.
        let mut renamed = loaded.clone();
        renamed.config.name = "renamed".into();
        assert_ne!(renamed.sha256(), loaded.sha256());
    }

    #[test]
    fn truncated_tampered_and_foreign_files_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tns");
        let (m, t) = sample();
        save_model(&path, &m, &t).unwrap();
        let good = std::fs::read(&path).unwrap();

        for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
            let err = read_model(&path, &good[..cut]).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
        // Flip a byte in the tensor data (the last bytes of the file).
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        let err = read_model(&path, &flipped).unwrap_err();
        assert!(matches!(err, FormatError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("modified or corrupted"));

        // A future version.
        let mut future = m.clone();
        future.config.name = "future".into();
        let written = save_model(&path, &future, &t).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let needle = format!("\\\"format_version\\\":{}", written.format_version).into_bytes();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("version field in header");
        // Same length, so the safetensors layout stays valid.
        bytes[at + needle.len() - 1] = b'9';
        let err = read_model(&path, &bytes).unwrap_err();
        assert!(
            matches!(err, FormatError::FutureVersion { found: 9, .. }),
            "{err}"
        );

        // A safetensors file without a manifest.
        let plain = safetensors::serialize(
            vec![(
                "w".to_string(),
                TensorView::new(Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap(),
            )],
            None,
        )
        .unwrap();
        assert!(matches!(
            read_model(&path, &plain).unwrap_err(),
            FormatError::NotTns { .. }
        ));
        assert!(matches!(
            load_model(&dir.path().join("missing.tns")).unwrap_err(),
            FormatError::Io { .. }
        ));
    }

    #[test]
    fn absurd_shapes_do_not_allocate_or_panic() {
        // A header declaring a huge tensor in a tiny file.
        let header =
            r#"{"w":{"dtype":"F32","shape":[4294967295,4294967295],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 4]);
        assert!(read_model(Path::new("x.tns"), &bytes).is_err());
        // A header length far beyond the file.
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            read_model(Path::new("x.tns"), &bytes).unwrap_err(),
            FormatError::Truncated { .. }
        ));
        // A manifest declaring sizes no engine should try to allocate for.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tns");
        let (m, t) = sample();
        for edit in [
            r#""lookback":1000000000000"#,
            r#""horizon":4294967296"#,
            r#""lead":18446744073709551615"#,
        ] {
            save_model(&path, &m, &t).unwrap();
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let key = edit.split(':').next().unwrap().replace('"', "\\\"");
            let escaped = edit.replace('"', "\\\"");
            // Replace `"key":<number>` inside the escaped manifest string, then re-serialize
            // the header so the safetensors layout stays valid.
            let re_start = text.find(&format!("{key}:")).expect("field in header");
            let re_end = re_start + text[re_start..].find([',', '}']).expect("end of field");
            let header_len = u64::from_le_bytes(text.as_bytes()[..8].try_into().unwrap()) as usize;
            let header = format!(
                "{}{}{}",
                &text[8..re_start],
                escaped,
                &text[re_end..8 + header_len]
            );
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&std::fs::read(&path).unwrap()[8 + header_len..]);
            let err = read_model(&path, &bytes).unwrap_err();
            assert!(
                matches!(
                    err,
                    FormatError::BadManifest { .. } | FormatError::InvalidConfig { .. }
                ),
                "{edit}: {err}"
            );
            assert!(
                err.to_string().contains("limit") || err.to_string().contains("invalid"),
                "{edit}: {err}"
            );
        }
    }
}

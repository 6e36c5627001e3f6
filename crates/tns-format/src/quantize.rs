//! INT8 weights: per-output-channel symmetric quantization of every dense weight matrix.
//!
//! Each weight row `w` (one output channel) gets a scale `s = max|w| / 127`, rounded to
//! f16 so that it is stored in two bytes, and codes `q = round(w / s)` in `[-127, 127]`.
//! In memory the model keeps working with ordinary [`NamedTensor`]s: the weight holds
//! `q · s` exactly (in f32) and a companion tensor `<weight>.scale` holds `s`, so everything
//! that reads f32 weights (ONNX export, evaluation) sees the quantized model, and the
//! engine recovers `q` exactly as `round(w / s)`. On disk the weight is stored as I8 and the
//! scale as F16 (see [`crate::save_model`]).

use serde::{Deserialize, Serialize};

use tns_model::NamedTensor;

/// The quantization schemes a model file can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuantScheme {
    /// Per-output-channel symmetric INT8 weights with f16 scales; activations in f32.
    Int8PerChannel,
}

/// What was quantized, stored in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    /// The scheme.
    pub scheme: QuantScheme,
    /// Names of the quantized weight matrices; each has a `<name>.scale` tensor.
    pub weights: Vec<String>,
}

/// Suffix of a quantized weight's scale tensor.
pub const SCALE_SUFFIX: &str = ".scale";

/// Largest code magnitude.
pub const INT8_MAX: f32 = 127.0;

/// Quantizes the weight matrices named in `matrices` (the description's
/// [`tns_model::ModelConfig::matrix_weights`]); biases and everything else stay f32.
/// Returns what to store in [`crate::Manifest::quantization`] and the tensors (quantized
/// weights as `q · s`, plus their scales).
///
/// ```
/// use tns_format::{quantize_int8, quantized_codes};
/// use tns_model::NamedTensor;
/// let tensors = vec![
///     NamedTensor { name: "linear.weight".into(), shape: vec![2, 3], data: vec![0.5, -1.0, 0.25, 2.0, 0.0, -0.1] },
///     NamedTensor { name: "linear.bias".into(), shape: vec![2], data: vec![0.1, 0.2] },
/// ];
/// let (quantization, q) = quantize_int8(&tensors, &["linear.weight".to_string()]).unwrap();
/// assert_eq!(quantization.weights, ["linear.weight"]);
/// let w = q.iter().find(|t| t.name == "linear.weight").unwrap();
/// let s = q.iter().find(|t| t.name == "linear.weight.scale").unwrap();
/// let codes = quantized_codes(w, &s.data).unwrap();
/// // Row 0 has max |w| = 1.0; its scale is 1/127 rounded up to f16.
/// assert_eq!(&codes[..3], &[63, -127, 32]);
/// ```
pub fn quantize_int8(
    tensors: &[NamedTensor],
    matrices: &[String],
) -> Result<(Quantization, Vec<NamedTensor>), String> {
    if tensors.iter().any(|t| t.name.ends_with(SCALE_SUFFIX)) {
        return Err("the model is already quantized".into());
    }
    if let Some(missing) = matrices
        .iter()
        .find(|m| !tensors.iter().any(|t| &t.name == *m))
    {
        return Err(format!("weight {missing:?} is not among the tensors"));
    }
    let mut out = Vec::with_capacity(tensors.len() * 2);
    let mut weights = Vec::new();
    for t in tensors {
        if !matrices.contains(&t.name) || t.shape.len() != 2 {
            out.push(t.clone());
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let mut scales = Vec::with_capacity(rows);
        let mut data = Vec::with_capacity(t.data.len());
        for row in t.data.chunks_exact(cols.max(1)) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if !max.is_finite() {
                return Err(format!("{} has a non-finite weight", t.name));
            }
            // Round the scale to f16 (upwards if rounding went down, so that no code
            // exceeds 127); a zero row keeps scale 0 and codes 0.
            let mut s = half::f16::from_f32(max / INT8_MAX);
            if s.to_f32() * INT8_MAX < max {
                s = half::f16::from_bits(s.to_bits() + 1);
            }
            let s = s.to_f32();
            scales.push(s);
            // `+ 0.0` turns a -0 code into +0: the loader rebuilds values from integer
            // codes, which have no sign of zero, and the checksum sees bits.
            data.extend(
                row.iter()
                    .map(|&w| (code(w, s).clamp(-INT8_MAX, INT8_MAX) + 0.0) * s),
            );
        }
        debug_assert_eq!(scales.len(), rows);
        weights.push(t.name.clone());
        out.push(NamedTensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            data,
        });
        out.push(NamedTensor {
            name: format!("{}{SCALE_SUFFIX}", t.name),
            shape: vec![rows],
            data: scales,
        });
    }
    Ok((
        Quantization {
            scheme: QuantScheme::Int8PerChannel,
            weights,
        },
        out,
    ))
}

/// The nearest code of `w` at scale `s` (0 for a zero row), not yet clamped.
fn code(w: f32, s: f32) -> f32 {
    if s > 0.0 {
        (w / s).round_ties_even()
    } else {
        0.0
    }
}

/// The INT8 codes of a quantized weight (`[rows, cols]`, values `q · s`) given its row
/// scales; `None` if a value is not `q · s` for an integer `|q| ≤ 127`.
pub fn quantized_codes(weight: &NamedTensor, scales: &[f32]) -> Option<Vec<i8>> {
    let cols = *weight.shape.get(1)?;
    if weight.shape.len() != 2 || scales.len() != weight.shape[0] {
        return None;
    }
    let mut codes = Vec::with_capacity(weight.data.len());
    for (row, &s) in weight.data.chunks_exact(cols.max(1)).zip(scales) {
        for &w in row {
            let q = code(w, s);
            if !(q.abs() <= INT8_MAX && q * s == w) {
                return None;
            }
            codes.push(q as i8);
        }
    }
    Some(codes)
}

//! Small trained models of every kind, shared by the engine's tests.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tns_conformance::CandleReference;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::{SplitFractions, Splits, WindowSpec};
use tns_kalman::Axis;
use tns_model::{ModelConfig, ModelKind, NamedTensor};
use tns_train::{FitOptions, TrainConfig, TrainedModel, fit_model};

pub const COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];

/// The two shapes of PRODUCT.md §2.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `[10, 4] → [1, 4]`, next step, 20 Hz.
    Compact,
    /// `[256, 4] → [1, 2]`, positions 1000 samples ahead, 2 kHz.
    Seed,
}

pub fn data(shape: Shape, rows: usize) -> (Splits, f64) {
    let (d, spec) = match shape {
        Shape::Compact => {
            let d = trajectory(&TrajectoryConfig::compact(Regime::Mixed, rows, 3));
            let spec = WindowSpec::next_step(10, d.column_indices(&COLUMNS).unwrap());
            (d, spec)
        }
        Shape::Seed => {
            let d = trajectory(&TrajectoryConfig::seed_design(Regime::Turn, rows, 3));
            let spec = WindowSpec {
                lookback: 256,
                horizon: 1,
                lead: 1000,
                stride: 16,
                origin_every: 16,
                targets: d.column_indices(&["x", "y"]).unwrap(),
                future: Vec::new(),
                calendar: None,
            };
            (d, spec)
        }
    };
    (
        d.windows(&spec, &SplitFractions::default()).unwrap(),
        d.dt(),
    )
}

pub fn config(kind: ModelKind, shape: Shape) -> ModelConfig {
    let (lookback, lead, targets): (usize, usize, &[&str]) = match shape {
        Shape::Compact => (10, 1, &COLUMNS),
        Shape::Seed => (256, 1000, &["x", "y"]),
    };
    let mut c = ModelConfig::new(kind.name(), kind, &COLUMNS, targets, lookback, 1, lead);
    if c.kalman_axes.is_some() {
        c.kalman_axes = Some(vec![
            Axis {
                position: 0,
                velocity: Some(2),
            },
            Axis {
                position: 1,
                velocity: Some(3),
            },
        ]);
    }
    c.seed = 9;
    c
}

/// A model of `kind` fitted for one epoch: real Kalman fit, normalization and calibration,
/// weights a short way from initialization.
pub fn fitted(kind: ModelKind, shape: Shape, splits: &Splits, dt: f64) -> TrainedModel {
    let options = FitOptions {
        train: TrainConfig {
            epochs: 1,
            batch_size: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    fit_model(&config(kind, shape), dt, splits, &options).unwrap()
}

/// Equal JSON documents, numbers within `1e-5 · max(|expected|, floor)`: the engine's f32
/// network may round differently from the reference, nothing more.
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, floor: f64, label: &str) {
    tns_conformance::assert_json_within(a, b, 1e-5, floor, label);
}

/// Test windows plus copies with noise added, so that the gate also rejects.
pub fn windows(splits: &tns_data::Splits, n: usize, per: usize) -> Vec<f64> {
    let test = splits.test.inputs();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut out = Vec::with_capacity(n * per);
    let available = test.len() / per;
    for i in 0..n {
        let w = &test[(i % available) * per..(i % available + 1) * per];
        let noise = if i % 3 == 2 { 0.5 } else { 0.0 };
        out.extend(w.iter().map(|v| v + noise * rng.random_range(-1.0..1.0)));
    }
    out
}

/// Scales System B's head (so the correction, linearly) until about half of `windows`'
/// gate statistics exceed the threshold: tests then compare both the accept and the
/// fallback path.
pub fn split_gate_decisions(model: &mut TrainedModel, windows: &[f64]) {
    let reference = CandleReference::new(&model.manifest, &model.tensors).unwrap();
    let threshold = reference.pipeline().gate().unwrap().threshold();
    let mut d2: Vec<f64> = reference
        .predict(windows)
        .unwrap()
        .iter()
        .flat_map(|f| f.gate_steps.clone().unwrap())
        .map(|g| g.statistic)
        .collect();
    d2.sort_by(f64::total_cmp);
    // The factor puts the median window 2% above the threshold, not on it: a
    // statistic equal to the threshold would flip with the last bit of rounding.
    let k = (1.02 * threshold / d2[d2.len() / 2]).sqrt() as f32;
    for t in model
        .tensors
        .iter_mut()
        .filter(|t| t.name.starts_with("head."))
    {
        t.data.iter_mut().for_each(|v| *v *= k);
    }
}

/// The INT8 version of a model (weights only; the conformal radii are left as they are).
pub fn int8(
    manifest: &tns_format::Manifest,
    tensors: &[NamedTensor],
) -> (tns_format::Manifest, Vec<NamedTensor>) {
    let matrices = manifest.config.matrix_weights().unwrap();
    let (quantization, tensors) = tns_format::quantize_int8(tensors, &matrices).unwrap();
    let mut manifest = manifest.clone();
    manifest.quantization = Some(quantization);
    (manifest, tensors)
}

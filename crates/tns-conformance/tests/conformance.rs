//! The conformance suite: every example network of the model description (every layer type
//! at two sizes or more) × every window shape × without and with known-future inputs
//! (covariates and calendar features across a DST change) × every kind that takes a
//! network, through every backend:
//!
//! - Candle (the training forward) is the reference;
//! - the engine, single sample, on the portable kernels and (where the CPU has them) AVX2+FMA:
//!   corrections within 1e-5 relative (floor: the residual scale), identical base, covariance
//!   and gate decisions (up to statistics within 1e-6 of the threshold, which f32 cannot
//!   decide), certificates equal up to that rounding;
//! - the engine's lane-blocked batch path: equal to the single-sample path bit for bit;
//! - INT8: single equals batch, and the correction stays within 0.1 residual scales of f32;
//! - ONNX in onnxruntime (`crates/tns-onnx/tests/ort_parity.py`): every output within 1e-5
//!   relative, identical gate decisions. Skipped with a notice when onnxruntime is missing,
//!   unless `TNS_REQUIRE_ONNXRUNTIME=1` (CI), which makes it fail instead.
//!
//! A layer type without a lowering does not compile (every backend matches `Layer`
//! exhaustively); a layer type without an example fails `tns-model`'s
//! `examples_cover_every_layer_type_at_two_sizes`.

use std::path::Path;
use std::sync::Arc;

use tns_conformance::{
    CandleReference, Example, assert_json_within, examples, onnxruntime_available, random_inputs,
    run_ort_parity,
};
use tns_engine::{Engine, Isa, Prediction, Predictor};

const WINDOWS: usize = 120;

fn close(a: f64, b: f64, floor: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(floor)
}

fn isas() -> Vec<Isa> {
    let mut isas = vec![Isa::Portable];
    if Isa::detect() == Isa::Avx2Fma {
        isas.push(Isa::Avx2Fma);
    }
    isas
}

/// Single-sample and batch predictions of `engine`, checked equal to each other.
fn engine_predictions(engine: &Arc<Engine>, windows: &[f64], label: &str) -> Vec<Prediction> {
    let per = engine.input_len();
    let n = windows.len() / per;
    let mut batch = vec![engine.empty_prediction(); n];
    engine.predict_batch(windows, &mut batch).unwrap();
    let mut predictor = Predictor::new(engine.clone());
    for (i, b) in batch.iter().enumerate() {
        let single = predictor.predict(&windows[i * per..(i + 1) * per]).unwrap();
        assert_eq!(single, b, "{label}: window {i}, single sample vs batch");
    }
    batch
}

fn check_engine_against_candle(example: &Example, windows: &[f64]) {
    let m = &example.manifest;
    let reference = CandleReference::new(m, &example.tensors).unwrap();
    let want = reference.predict(windows).unwrap();
    let threshold = reference.pipeline().gate().map(|g| g.threshold());
    let scale = &m.residual_scale;
    for isa in isas() {
        let label = format!("{} on {isa:?}", example.label);
        let engine = Arc::new(Engine::with_isa(m.clone(), &example.tensors, isa).unwrap());
        let got = engine_predictions(&engine, windows, &label);
        let mut fallbacks = 0;
        for (i, (p, w)) in got.iter().zip(&want).enumerate() {
            let label = format!("{label}, window {i}");
            let (c, r) = (
                p.forecast.correction.as_ref().unwrap(),
                w.correction.as_ref().unwrap(),
            );
            for (k, (a, b)) in c.iter().zip(r).enumerate() {
                assert!(close(*a, *b, scale[k]), "{label}: correction {a} vs {b}");
            }
            assert_eq!(p.forecast.base, w.base, "{label}: base");
            assert_eq!(p.forecast.covariance, w.covariance, "{label}: covariance");
            let undecidable = match (&w.gate_steps, threshold) {
                (Some(steps), Some(t)) => steps.iter().any(|s| (s.statistic - t).abs() <= 1e-6 * t),
                _ => false,
            };
            if undecidable {
                continue;
            }
            let decisions = |s: &Option<Vec<tns_certify::GateStep>>| {
                s.as_ref()
                    .map(|s| s.iter().map(|g| g.passed).collect::<Vec<_>>())
            };
            assert_eq!(
                decisions(&p.forecast.gate_steps),
                decisions(&w.gate_steps),
                "{label}: gate decisions"
            );
            fallbacks += usize::from(p.fallback_used());
            for (k, (a, b)) in p.forecast.prediction.iter().zip(&w.prediction).enumerate() {
                assert!(close(*a, *b, scale[k]), "{label}: prediction {a} vs {b}");
            }
            let ours = serde_json::to_value(engine.certificate(p)).unwrap();
            let theirs = serde_json::to_value(reference.pipeline().certificate(w)).unwrap();
            let floor = scale.iter().copied().fold(f64::INFINITY, f64::min);
            assert_json_within(&ours, &theirs, 1e-5, floor, &label);
        }
        if threshold.is_some() {
            assert!(
                fallbacks > 0 && fallbacks < got.len(),
                "{label}: {fallbacks} fallbacks of {}: both gate paths must be exercised",
                got.len()
            );
        }
        eprintln!("{label}: {} windows, {fallbacks} fallbacks", got.len());
    }
}

/// A model with known-future inputs must answer differently when they change (the suite's
/// agreement alone would not catch every backend ignoring them alike).
fn check_future_is_read(example: &Example, windows: &[f64]) {
    let m = &example.manifest;
    let future = m.config.future_len();
    if future == 0 {
        return;
    }
    let engine = Engine::new(m.clone(), &example.tensors).unwrap();
    let per = engine.input_len();
    let input = &windows[..per];
    let mut moved = input.to_vec();
    for v in &mut moved[per - future..] {
        *v += 0.5;
    }
    let a = engine.predict_all(input).unwrap();
    let b = engine.predict_all(&moved).unwrap();
    assert_ne!(
        a[0].forecast.correction, b[0].forecast.correction,
        "{}: the correction ignores the future block",
        example.label
    );
}

fn check_int8(example: &Example, windows: &[f64]) {
    let m = &example.manifest;
    let matrices = m.config.matrix_weights().unwrap();
    let (quantization, tensors) = tns_format::quantize_int8(&example.tensors, &matrices).unwrap();
    let mut manifest = m.clone();
    manifest.quantization = Some(quantization);
    let f32_engine = Arc::new(Engine::new(m.clone(), &example.tensors).unwrap());
    let f32_out = engine_predictions(&f32_engine, windows, &example.label);
    for isa in isas() {
        let label = format!("{} INT8 on {isa:?}", example.label);
        let engine = Arc::new(Engine::with_isa(manifest.clone(), &tensors, isa).unwrap());
        assert!(engine.network().unwrap().is_int8(), "{label}");
        let got = engine_predictions(&engine, windows, &label);
        let mut worst = 0f64;
        for (p, f) in got.iter().zip(&f32_out) {
            let (q, r) = (
                p.forecast.correction.as_ref().unwrap(),
                f.forecast.correction.as_ref().unwrap(),
            );
            for (k, (a, b)) in q.iter().zip(r).enumerate() {
                worst = worst.max((a - b).abs() / m.residual_scale[k]);
            }
        }
        assert!(
            worst < 0.1,
            "{label}: INT8 correction differs from f32 by {worst} residual scales"
        );
    }
}

/// Writes one case in the format of `ort_parity.py`: the exported model, the windows and the
/// engine's outputs.
fn write_onnx_case(dir: &Path, index: usize, example: &Example, windows: &[f64]) {
    let m = &example.manifest;
    let onnx = tns_onnx::export(m, &example.tensors)
        .unwrap_or_else(|e| panic!("{}: export: {e}", example.label));
    let case = dir.join(format!("{index:03}"));
    std::fs::create_dir_all(&case).unwrap();
    std::fs::write(case.join("model.onnx"), tns_onnx::encode(&onnx)).unwrap();
    let bytes: Vec<u8> = windows
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(case.join("windows.f32"), bytes).unwrap();
    let engine = Arc::new(Engine::new(m.clone(), &example.tensors).unwrap());
    let predictions = engine.predict_all(windows).unwrap();
    let collect = |f: &dyn Fn(&Prediction) -> Vec<f64>| -> Vec<f64> {
        predictions.iter().flat_map(f).collect()
    };
    let mut expected = serde_json::json!({
        "kind": example.label,
        "shape": format!("[{}, {}]", m.config.lookback, m.config.features.len()),
        "n": predictions.len(),
        "lookback": m.config.lookback,
        "features": m.config.features.len(),
        "future": m.config.future_width(),
        "horizon": m.config.horizon,
        "targets": m.config.targets.len(),
        "scale": m.residual_scale,
        "outputs": {
            "forecast": collect(&|p| p.forecast.prediction.clone()),
            "base": collect(&|p| p.forecast.base.clone()),
            "lower": collect(&|p| p.lower.clone()),
            "upper": collect(&|p| p.upper.clone()),
            "correction": collect(&|p| p.forecast.correction.clone().unwrap_or_default()),
        },
    });
    if let Some(gate) = engine.pipeline().gate() {
        let steps = |p: &Prediction| p.forecast.gate_steps.clone().unwrap_or_default();
        expected["outputs"]["gate_statistic"] =
            collect(&|p| steps(p).iter().map(|s| s.statistic).collect()).into();
        expected["outputs"]["gate_passed"] = predictions
            .iter()
            .flat_map(|p| steps(p).into_iter().map(|s| s.passed))
            .collect::<Vec<_>>()
            .into();
        expected["threshold"] = gate.threshold().into();
    }
    std::fs::write(
        case.join("expected.json"),
        serde_json::to_vec(&expected).unwrap(),
    )
    .unwrap();
}

#[test]
fn every_layer_type_matches_across_every_backend() {
    let examples = examples().unwrap();
    assert!(examples.len() >= 20, "{} examples", examples.len());
    let onnx = onnxruntime_available();
    let dir = tempfile::tempdir().unwrap();
    for (index, example) in examples.iter().enumerate() {
        let pipeline = example.manifest.pipeline().unwrap();
        let windows = random_inputs(&pipeline, WINDOWS, index as u64).unwrap();
        check_engine_against_candle(example, &windows);
        check_future_is_read(example, &windows);
        check_int8(example, &windows);
        if onnx {
            write_onnx_case(dir.path(), index, example, &windows);
        }
    }
    if onnx {
        run_ort_parity(dir.path());
    }
}

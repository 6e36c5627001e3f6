//! Exported models in onnxruntime against the TNS engine, on at least 1,000 windows per model
//! kind: every output within 1e-5 relative and identical gate decisions.
//!
//! onnxruntime is Python's; the test looks for it in `$TNS_PYTHON` (default `python3`). When
//! it is not installed the test says so and passes, unless `TNS_REQUIRE_ONNXRUNTIME=1` (CI
//! sets it, after `pip install onnxruntime onnx numpy`), in which case it fails.

#[path = "../../tns-engine/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Shape, data, fitted, split_gate_decisions, windows};
use tns_certify::GateMode;
use tns_conformance::{onnxruntime_available, run_ort_parity};
use tns_engine::Engine;
use tns_model::ModelKind;

fn floats_le(values: impl Iterator<Item = f64>) -> Vec<u8> {
    values.flat_map(|v| (v as f32).to_le_bytes()).collect()
}

/// Exports `kind` (System B with the gate in `mode`), predicts `n` windows with the engine
/// and writes the case for the script.
fn write_case(dir: &Path, kind: ModelKind, shape: Shape, rows: usize, n: usize, mode: GateMode) {
    let (splits, dt) = data(shape, rows);
    let mut model = fitted(kind, shape, &splits, dt);
    if let Some(gate) = model.manifest.config.gate.as_mut() {
        gate.mode = mode;
    }
    let per = model.manifest.config.lookback * model.manifest.config.features.len();
    // Both sides must read the same inputs: round the windows to f32 first.
    let windows: Vec<f64> = windows(&splits, n, per)
        .iter()
        .map(|&v| f64::from(v as f32))
        .collect();
    if kind == ModelKind::SystemB {
        split_gate_decisions(&mut model, &windows);
    }
    let onnx = tns_onnx::export(&model.manifest, &model.tensors).unwrap();
    let suffix = if mode == GateMode::Shrink {
        "-shrink"
    } else {
        ""
    };
    let case = dir.join(format!("{}-{shape:?}{suffix}", kind.name()));
    std::fs::create_dir_all(&case).unwrap();
    std::fs::write(case.join("model.onnx"), tns_onnx::encode(&onnx)).unwrap();
    std::fs::write(case.join("windows.f32"), floats_le(windows.iter().copied())).unwrap();

    let engine = Arc::new(Engine::new(model.manifest.clone(), &model.tensors).unwrap());
    let mut predictions = vec![engine.empty_prediction(); n];
    engine.predict_batch(&windows, &mut predictions).unwrap();
    let collect = |f: &dyn Fn(&tns_engine::Prediction) -> Vec<f64>| -> Vec<f64> {
        predictions.iter().flat_map(f).collect()
    };
    let mut expected = serde_json::json!({
        "kind": kind.name(),
        "shape": format!("{shape:?}"),
        "n": n,
        "lookback": model.manifest.config.lookback,
        "features": model.manifest.config.features.len(),
        "horizon": model.manifest.config.horizon,
        "targets": model.manifest.config.targets.len(),
        "scale": model.manifest.residual_scale,
        "outputs": {
            "forecast": collect(&|p| p.forecast.prediction.clone()),
            "base": collect(&|p| p.forecast.base.clone()),
        },
    });
    let outputs = &mut expected["outputs"];
    if model.manifest.conformal.is_some() {
        outputs["lower"] = collect(&|p| p.lower.clone()).into();
        outputs["upper"] = collect(&|p| p.upper.clone()).into();
    }
    if model.manifest.config.network.is_some() {
        outputs["correction"] =
            collect(&|p| p.forecast.correction.clone().unwrap_or_default()).into();
    }
    if let Some(gate) = engine.pipeline().gate() {
        let steps = |p: &tns_engine::Prediction| p.forecast.gate_steps.clone().unwrap_or_default();
        outputs["gate_statistic"] =
            collect(&|p| steps(p).iter().map(|s| s.statistic).collect()).into();
        outputs["gate_passed"] = predictions
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

fn run_script(dir: &Path) {
    let report = run_ort_parity(dir);
    // A relative TNS_ONNX_PARITY_OUT is taken from the workspace root, not from this crate's
    // folder where cargo runs the test.
    if let Some(path) = std::env::var_os("TNS_ONNX_PARITY_OUT") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        std::fs::write(root.join(path), report).unwrap();
    }
}

#[test]
fn every_kind_matches_the_engine_in_onnxruntime() {
    if !onnxruntime_available() {
        return;
    }
    // TNS_ONNX_CASES_DIR keeps the cases (models, windows, engine outputs) for other
    // runtimes, e.g. the tract check in tools/tract-check.
    let temporary = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("TNS_ONNX_CASES_DIR")
        .map_or_else(|| temporary.path().to_path_buf(), std::path::PathBuf::from);
    for kind in ModelKind::ALL {
        write_case(&dir, kind, Shape::Compact, 6000, 1200, GateMode::Reject);
    }
    // The shrink gate: rejected corrections are scaled onto the ellipsoid, not dropped.
    write_case(
        &dir,
        ModelKind::SystemB,
        Shape::Compact,
        6000,
        1200,
        GateMode::Shrink,
    );
    // The long window and 1000-step lead test the unrolled Kalman prior's f32 precision.
    for kind in [ModelKind::SystemA, ModelKind::SystemB] {
        write_case(&dir, kind, Shape::Seed, 30_000, 1000, GateMode::Reject);
    }
    run_script(&dir);
}

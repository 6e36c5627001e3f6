//! The golden model file: a System B model written by format version 1, committed under
//! `tests/fixtures/`, that every later version must load and predict from identically.
//! Regenerate (only when the format version changes on purpose) with
//! `TNS_WRITE_GOLDEN=1 cargo test --release -p tns-engine --test golden`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Shape, data, fitted};
use serde_json::{Value, json};
use tns_engine::{Engine, Isa, Predictor};
use tns_format::load_model;
use tns_model::ModelKind;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn the_golden_model_still_loads_and_predicts_identically() {
    let model_path = fixtures().join("golden-system-b-v1.tns");
    let expected_path = fixtures().join("golden-system-b-v1.expected.json");
    if std::env::var_os("TNS_WRITE_GOLDEN").is_some() {
        let (splits, dt) = data(Shape::Compact, 3000);
        let model = fitted(ModelKind::SystemB, Shape::Compact, &splits, dt);
        model.save(&model_path).unwrap();
        // The portable kernels: plain IEEE arithmetic, the same on every machine.
        let (manifest, tensors) = load_model(&model_path).unwrap();
        let engine = Arc::new(Engine::with_isa(manifest, &tensors, Isa::Portable).unwrap());
        let per = engine.window_len();
        let windows: Vec<Vec<f64>> = (0..20)
            .map(|i| splits.test.inputs()[i * 7 * per..(i * 7 + 1) * per].to_vec())
            .collect();
        let mut predictor = Predictor::new(engine.clone());
        let cases: Vec<Value> = windows
            .iter()
            .map(|w| {
                let p = predictor.predict(w).unwrap();
                json!({"window": w, "certificate": engine.certificate(p)})
            })
            .collect();
        std::fs::write(
            &expected_path,
            serde_json::to_string_pretty(&cases).unwrap(),
        )
        .unwrap();
    }
    let (manifest, _) = load_model(&model_path).expect("the golden file loads");
    assert_eq!(manifest.format_version, 1);
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
    assert_eq!(cases.len(), 20);
    let mut isas = vec![Isa::Portable];
    if Isa::detect() == Isa::Avx2Fma {
        isas.push(Isa::Avx2Fma);
    }
    for isa in isas {
        let (manifest, tensors) = load_model(&model_path).unwrap();
        let engine = Arc::new(Engine::with_isa(manifest, &tensors, isa).unwrap());
        let mut predictor = Predictor::new(engine.clone());
        for (i, case) in cases.iter().enumerate() {
            let window: Vec<f64> = serde_json::from_value(case["window"].clone()).unwrap();
            let got = serde_json::to_value(engine.certificate(predictor.predict(&window).unwrap()))
                .unwrap();
            // Floor 1e-2: the SIMD kernels round the f32 network differently from the portable ones.
            common::assert_json_close(
                &got,
                &case["certificate"],
                1e-2,
                &format!("{isa:?} case {i}"),
            );
        }
    }
}

//! The golden model files: a System B model written by format version 1, and its INT8
//! version written by format version 2 (both by the release before the model description was
//! introduced), committed under `tests/fixtures/`, that every later version must load and
//! predict from identically. Regenerate the v1 file (only when the format version changes on
//! purpose) with `TNS_WRITE_GOLDEN=1 cargo test --release -p tns-engine --test golden`. The v2
//! file and its expected certificates were written by that release's `tns quantize
//! golden-system-b-v1.tns --int8 --synth trajectory --regime mixed --rows 3000 --data-seed 3`
//! and `tns predict` on an AVX2+FMA machine; they are not regenerated. The zoo's files
//! (`golden-system-b-{dlinear-5,lstm-8-2,tcn-4-2-3,nhits-2-1-16-2,transformer-8-2-1-1-2,transformer-8-2-1-1-2-flatten-independent,s4d-8-4-2,mamba-8-4-2-3-2}`) were written by the
//! release that added those networks, one at a time, with
//! `TNS_WRITE_ZOO_GOLDEN=<network> cargo test --release -p tns-engine --test golden`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Shape, config, data, fitted};
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
        let per = engine.input_len();
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
    if std::env::var_os("TNS_WRITE_GOLDEN").is_none() {
        // Written before whole-model checksums: its checksum is recomputed on load.
        assert!(manifest.sha256_recomputed());
    }
    replay(&model_path, &expected_path, |isa, i, got, expected| {
        if isa == Isa::Portable {
            // The expected file was written on the portable kernels: plain IEEE arithmetic
            // in a fixed order, so today's engine must give the same bits.
            assert_eq!(got, expected, "portable case {i}: not bit for bit");
        }
        // Floor 1e-2: the SIMD kernels round the f32 network differently from the portable ones.
        common::assert_json_close(got, expected, 1e-2, &format!("{isa:?} case {i}"));
    });
}

/// The zoo's golden files: System B over each network added after format version 2, trained
/// one epoch, written once (`TNS_WRITE_ZOO_GOLDEN=<network>`) with 20 certificates from the portable
/// kernels; every later version must load them and predict the same.
#[test]
fn the_zoo_golden_models_still_load_and_predict_identically() {
    let write = std::env::var("TNS_WRITE_ZOO_GOLDEN").ok();
    for network in [
        "dlinear:5",
        "lstm:8,2",
        "tcn:4,2,3",
        "nhits:2,1,16,2",
        "transformer:8,2,1,1,2",
        "transformer:8,2,1,1,2,flatten,independent",
        "s4d:8,4,2",
        "mamba:8,4,2,3,2",
    ] {
        let stem = format!("golden-system-b-{}", network.replace([':', ','], "-"));
        let model_path = fixtures().join(format!("{stem}.tns"));
        let expected_path = fixtures().join(format!("{stem}.expected.json"));
        if write.as_deref() == Some(network) {
            let (splits, dt) = data(Shape::Compact, 3000);
            let mut c = config(ModelKind::SystemB, Shape::Compact);
            c.network = Some(network.parse().unwrap());
            c.name = stem.clone();
            let options = tns_train::FitOptions {
                train: tns_train::TrainConfig {
                    epochs: 1,
                    batch_size: 64,
                    ..Default::default()
                },
                ..Default::default()
            };
            let model = tns_train::fit_model(&c, dt, &splits, &options).unwrap();
            model.save(&model_path).unwrap();
            let (manifest, tensors) = load_model(&model_path).unwrap();
            let engine = Arc::new(Engine::with_isa(manifest, &tensors, Isa::Portable).unwrap());
            let inputs = splits.test.inputs();
            let per = engine.input_len();
            let mut predictor = Predictor::new(engine.clone());
            let cases: Vec<Value> = (0..20)
                .map(|i| {
                    let w = inputs[i * 7 * per..(i * 7 + 1) * per].to_vec();
                    let p = predictor.predict(&w).unwrap();
                    json!({"window": w, "certificate": engine.certificate(p)})
                })
                .collect();
            std::fs::write(&expected_path, serde_json::to_string(&cases).unwrap()).unwrap();
        }
        let (manifest, _) = load_model(&model_path)
            .unwrap_or_else(|e| panic!("{network}: the golden file loads: {e}"));
        assert_eq!(manifest.config.network.unwrap().to_string(), network);
        replay(&model_path, &expected_path, |isa, i, got, expected| {
            if isa == Isa::Portable {
                assert_eq!(
                    got, expected,
                    "{network} portable case {i}: not bit for bit"
                );
            }
            common::assert_json_close(got, expected, 1e-2, &format!("{network} {isa:?} case {i}"));
        });
    }
}

/// Predicts every case of `expected_path` with `model_path` on every instruction set of
/// this CPU and hands each certificate to `check(isa, case, got, expected)`.
fn replay(
    model_path: &std::path::Path,
    expected_path: &std::path::Path,
    check: impl Fn(Isa, usize, &Value, &Value),
) {
    let mut cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(expected_path).unwrap()).unwrap();
    assert_eq!(cases.len(), 20);
    // Releases before whole-model checksums certified the tensors' checksum; today's
    // certificates name the whole model (recomputed for such files). Everything else must
    // be as it was.
    let (manifest, _) = load_model(model_path).unwrap();
    if manifest.sha256_recomputed() {
        let whole = manifest.sha256();
        assert_ne!(whole, manifest.tensors_sha256);
        for case in &mut cases {
            let sha = &mut case["certificate"]["model"]["sha256"];
            assert_eq!(*sha, manifest.tensors_sha256);
            *sha = Value::String(whole.clone());
        }
    }
    let mut isas = vec![Isa::Portable];
    if Isa::detect() == Isa::Avx2Fma {
        isas.push(Isa::Avx2Fma);
    }
    for isa in isas {
        let (manifest, tensors) = load_model(model_path).unwrap();
        let engine = Arc::new(Engine::with_isa(manifest, &tensors, isa).unwrap());
        let mut predictor = Predictor::new(engine.clone());
        for (i, case) in cases.iter().enumerate() {
            let window: Vec<f64> = serde_json::from_value(case["window"].clone()).unwrap();
            let got = serde_json::to_value(engine.certificate(predictor.predict(&window).unwrap()))
                .unwrap();
            check(isa, i, &got, &case["certificate"]);
        }
    }
}

#[test]
fn the_golden_int8_model_still_loads_and_predicts_identically() {
    let model_path = fixtures().join("golden-system-b-v2-int8.tns");
    let (manifest, tensors) = load_model(&model_path).expect("the golden INT8 file loads");
    assert_eq!(manifest.format_version, 2);
    assert!(manifest.quantization.is_some());
    assert!(manifest.sha256_recomputed());
    let engine = Engine::new(manifest, &tensors).unwrap();
    assert!(engine.network().unwrap().is_int8());
    let expected_path = fixtures().join("golden-system-b-v2-int8.expected.json");
    replay(&model_path, &expected_path, |isa, i, got, expected| {
        if isa == Isa::Avx2Fma {
            // Written by the same kernels: the same bits.
            assert_eq!(got, expected, "AVX2 case {i}: not bit for bit");
        } else {
            // The integer products are exact on both instruction sets; the GRU's f32 gate
            // math (FMA or not) may move an activation code by one step.
            tns_conformance::assert_json_within(
                got,
                expected,
                1e-3,
                1e-2,
                &format!("portable case {i}"),
            );
        }
    });
}

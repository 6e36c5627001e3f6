//! The engine against the training side (Candle forward + the same pipeline), on at least
//! 1,000 windows per model kind: outputs within 1e-5 relative, identical gate decisions and
//! certificate fields.

mod common;

use std::sync::Arc;

use common::{Shape, data, fitted, windows};
use tns_conformance::CandleReference;
use tns_engine::{Engine, Isa, Predictor};
use tns_model::ModelKind;

/// `|a − b| ≤ 1e-5 · max(|b|, floor)`: relative, with a floor at the scale of the quantity so
/// that values crossing zero do not demand more than f32 can give.
fn close(a: f64, b: f64, floor: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(floor)
}

fn check(shape: Shape, rows: usize, n: usize) {
    let (splits, dt) = data(shape, rows);
    for kind in ModelKind::ALL {
        let mut model = fitted(kind, shape, &splits, dt);
        let per = model.manifest.config.lookback * model.manifest.config.features.len();
        let windows = windows(&splits, n, per);
        if kind == ModelKind::SystemB {
            common::split_gate_decisions(&mut model, &windows);
        }
        let forecaster = CandleReference::new(&model.manifest, &model.tensors).unwrap();
        let reference = forecaster.predict(&windows).unwrap();
        let mut isas = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx2Fma {
            isas.push(Isa::Avx2Fma);
        }
        for isa in isas {
            let engine =
                Arc::new(Engine::with_isa(model.manifest.clone(), &model.tensors, isa).unwrap());
            let mut predictor = Predictor::new(engine.clone());
            let mut batch = vec![engine.empty_prediction(); n];
            engine.predict_batch(&windows, &mut batch).unwrap();
            let scale = &model.manifest.residual_scale;
            let (mut fallbacks, mut worst) = (0, 0f64);
            for (i, (want, from_batch)) in reference.iter().zip(&batch).enumerate() {
                let got = predictor.predict(&windows[i * per..(i + 1) * per]).unwrap();
                for p in [got, from_batch] {
                    let label = format!("{kind:?} {shape:?} {isa:?} window {i}");
                    if let (Some(c), Some(w)) = (&p.forecast.correction, &want.correction) {
                        for (k, (a, b)) in c.iter().zip(w).enumerate() {
                            let s = scale[k];
                            worst = worst.max((a - b).abs() / b.abs().max(s));
                            assert!(close(*a, *b, s), "{label}: correction {a} vs {b}");
                        }
                    }
                    assert_eq!(p.forecast.base, want.base, "{label}: base");
                    assert_eq!(
                        p.forecast.covariance, want.covariance,
                        "{label}: covariance"
                    );
                    assert_eq!(
                        p.forecast
                            .gate_steps
                            .as_ref()
                            .map(|s| s.iter().map(|g| g.passed).collect::<Vec<_>>()),
                        want.gate_steps
                            .as_ref()
                            .map(|s| s.iter().map(|g| g.passed).collect::<Vec<_>>()),
                        "{label}: gate decision"
                    );
                    for (k, (a, b)) in p
                        .forecast
                        .prediction
                        .iter()
                        .zip(&want.prediction)
                        .enumerate()
                    {
                        assert!(close(*a, *b, scale[k]), "{label}: prediction {a} vs {b}");
                    }
                }
                fallbacks += usize::from(got.fallback_used());
                // Certificates: same document up to the network's f32 rounding.
                let ours = serde_json::to_value(engine.certificate(got)).unwrap();
                let theirs = serde_json::to_value(forecaster.pipeline().certificate(want)).unwrap();
                let floor = scale.iter().copied().fold(f64::INFINITY, f64::min);
                common::assert_json_close(
                    &ours,
                    &theirs,
                    floor,
                    &format!("{kind:?} window {i} certificate"),
                );
            }
            if kind == ModelKind::SystemB {
                assert!(
                    fallbacks > 0 && fallbacks < n,
                    "{fallbacks} fallbacks of {n}: both paths must be exercised"
                );
            }
            eprintln!(
                "{kind:?} {shape:?} {isa:?}: worst relative correction error {worst:.2e}, {fallbacks} fallbacks"
            );
        }
    }
}

#[test]
fn compact_models_match_the_training_forward() {
    check(Shape::Compact, 6000, 1200);
}

#[test]
fn seed_design_models_match_the_training_forward() {
    check(Shape::Seed, 30_000, 1000);
}

//! Faults the engine refuses instead of answering with infinities: inputs too large to
//! compute with (the client's error), a model that fails on its probe input (refused at
//! load), and a non-finite output from a valid input (the model's error).

use tns_conformance::example;
use tns_engine::{Engine, EngineError};
use tns_model::{InputError, ModelKind, NetworkConfig};

#[test]
fn inputs_beyond_the_limit_are_the_clients_error() {
    let ex = example(ModelKind::Linear, &NetworkConfig::Linear, 4, 3, false, 1).unwrap();
    let engine = Engine::new(ex.manifest, &ex.tensors).unwrap();
    let mut input = engine.pipeline().probe_input();
    assert!(engine.predict_all(&input).is_ok());
    input[5] = 1e200;
    let err = engine.predict_all(&input).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::BatchInput {
                index: 0,
                source: InputError::NotFinite { row: 1, .. }
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("within ±1e30"), "{err}");
    input[5] = -1e29;
    assert!(engine.predict_all(&input).is_ok());
}

#[test]
fn a_model_that_overflows_on_a_valid_input_is_the_models_error() {
    // Weights at the edge of f32: the probe input (every feature at its mean, so a zero
    // network input) still predicts, a window ten deviations away overflows.
    let mut ex = example(ModelKind::Linear, &NetworkConfig::Linear, 4, 3, false, 1).unwrap();
    for t in &mut ex.tensors {
        let fill = if t.shape.len() == 2 { 3e38 } else { 0.0 };
        t.data.iter_mut().for_each(|v| *v = fill);
    }
    let n = ex.manifest.normalization.clone();
    let engine = Engine::new(ex.manifest, &ex.tensors).unwrap();
    let input: Vec<f64> = (0..4)
        .flat_map(|_| n.mean.iter().zip(&n.std).map(|(m, s)| m + 10.0 * s))
        .collect();
    let err = engine.predict_all(&input).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NonFiniteOutput {
                what: "forecast",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("faulty"), "{err}");
}

#[test]
fn a_model_that_cannot_predict_its_probe_input_does_not_load() {
    // The case: a Kalman process noise of 1e308 overflows the prior covariance.
    let mut ex = example(ModelKind::SystemB, &NetworkConfig::Linear, 4, 3, false, 1).unwrap();
    let healthy = Engine::new(ex.manifest.clone(), &ex.tensors);
    assert!(healthy.is_ok(), "{:?}", healthy.err());
    for axis in &mut ex.manifest.kalman.as_mut().unwrap().params {
        axis.q = 1e308;
    }
    let err = Engine::new(ex.manifest, &ex.tensors).unwrap_err();
    assert!(matches!(err, EngineError::ProbeFailed(_)), "{err}");
    assert!(err.to_string().contains("probe input"), "{err}");
}

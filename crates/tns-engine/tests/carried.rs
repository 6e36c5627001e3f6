//! Sessions that carry an S4D or Mamba network's state along the stream
//! (`Session::carried`): one step per observation, the window's forecast bit for bit after
//! exactly `lookback` rows, a longer context after that (and the certificate says so); other
//! networks and relative inputs are refused with what to change.

use std::sync::Arc;

use tns_conformance::{Example, examples, random_windows};
use tns_engine::{Engine, Session};
use tns_model::NetworkConfig;

/// The suite's examples over a state-space network, with every input made absolute.
fn state_space_examples() -> Vec<Example> {
    examples()
        .unwrap()
        .into_iter()
        .filter(|e| {
            matches!(
                e.manifest.config.network,
                Some(NetworkConfig::S4d { .. } | NetworkConfig::Mamba { .. })
            ) && e.manifest.config.network_lookback.is_none()
        })
        .map(|mut e| {
            e.manifest.config.absolute_inputs = true;
            let n = &mut e.manifest.normalization;
            n.relative.iter_mut().for_each(|r| *r = false);
            e
        })
        .collect()
}

#[test]
fn carried_sessions_equal_the_window_then_carry_a_longer_context() {
    let examples = state_space_examples();
    assert!(examples.len() >= 8, "{} examples", examples.len());
    for (index, example) in examples.iter().enumerate() {
        let engine = Arc::new(Engine::new(example.manifest.clone(), &example.tensors).unwrap());
        let config = &example.manifest.config;
        let (lookback, features) = (config.lookback, config.features.len());
        let pipeline = engine.pipeline();
        let columns = pipeline.future_columns().len();
        let future = vec![0.5; config.horizon * columns];
        let future = (columns > 0).then_some(future.as_slice());
        let rows = 3 * lookback;
        let stream = random_windows(rows, features, 1, index as u64);
        let mut windowed = Session::new(engine.clone());
        let mut carried = Session::new(engine.clone()).carried().unwrap();
        let mut differed = false;
        for (t, row) in stream.chunks_exact(features).enumerate() {
            // Hourly rows from 2021-03-27 20:00 UTC (the examples' calendar is Paris time).
            let time = Some(1_616_875_200.0 + 3600.0 * t as f64);
            let a = windowed.push_with(row, future, time).unwrap().cloned();
            let b = carried.push_with(row, future, time).unwrap().cloned();
            assert_eq!(a.is_some(), b.is_some(), "{}", example.label);
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            assert!(b.values().iter().all(|v| v.is_finite()));
            let certificate = serde_json::to_value(carried.certificate(&b)).unwrap();
            assert_eq!(certificate["stream"]["rows"], t as u64 + 1);
            if t + 1 == lookback {
                // The state has read exactly the window: the same forecast, bit for bit.
                assert_eq!(a.values(), b.values(), "{}", example.label);
                assert_eq!(a.lower, b.lower, "{}", example.label);
                assert!(
                    certificate["stream"]["note"]
                        .as_str()
                        .unwrap()
                        .contains("exactly the rows of one calibrated window")
                );
            } else {
                // The correction, not only the forecast: a gate that falls back on every
                // row of a stream would hide the network behind the prior.
                differed |= a.forecast.correction != b.forecast.correction;
                assert!(
                    certificate["stream"]["note"]
                        .as_str()
                        .unwrap()
                        .contains("not established")
                );
            }
        }
        assert!(
            differed,
            "{}: the carried state never mattered",
            example.label
        );
        // Windowed sessions' certificates have no stream report.
        let p = windowed.push_with(&stream[..features], future, Some(0.0));
        if let Ok(Some(p)) = p {
            let p = p.clone();
            let certificate = serde_json::to_value(windowed.certificate(&p)).unwrap();
            assert!(certificate.get("stream").is_none());
        }
    }
}

#[test]
fn only_absolute_state_space_models_carry_their_state() {
    let all = examples().unwrap();
    let gru = all
        .iter()
        .find(|e| matches!(e.manifest.config.network, Some(NetworkConfig::Gru { .. })))
        .unwrap();
    let engine = Arc::new(Engine::new(gru.manifest.clone(), &gru.tensors).unwrap());
    let err = Session::new(engine).carried().unwrap_err().to_string();
    assert!(err.contains("S4D and Mamba"), "{err}");
    let relative = all
        .iter()
        .find(|e| {
            matches!(e.manifest.config.network, Some(NetworkConfig::S4d { .. }))
                && e.manifest.normalization.relative.iter().any(|&r| r)
        })
        .unwrap();
    let engine = Arc::new(Engine::new(relative.manifest.clone(), &relative.tensors).unwrap());
    let err = Session::new(engine).carried().unwrap_err().to_string();
    assert!(err.contains("--absolute-inputs"), "{err}");
}

/// A structural Kalman prior is filtered along the stream: after exactly `lookback` rows
/// its base is the window's (up to the diffuse start: the window is filtered relative to its
/// last value), later it holds more history than any window, its covariance stays the
/// filter's, and the certificate says which state was carried. The network (here reading
/// only the window's last rows, so not carried) re-runs on each window.
#[test]
fn a_structural_prior_is_carried_along_the_stream() {
    let structural: Vec<Example> = examples()
        .unwrap()
        .into_iter()
        .filter(|e| e.manifest.config.structural.is_some())
        .collect();
    assert!(structural.len() >= 8, "{} examples", structural.len());
    for (index, example) in structural.iter().enumerate() {
        let engine = Arc::new(Engine::new(example.manifest.clone(), &example.tensors).unwrap());
        let config = &example.manifest.config;
        let (lookback, features) = (config.lookback, config.features.len());
        let columns = engine.pipeline().future_columns().len();
        let future = vec![0.5; config.horizon * columns];
        let future = (columns > 0).then_some(future.as_slice());
        let stream = random_windows(4 * lookback, features, 1, index as u64);
        let mut windowed = Session::new(engine.clone());
        let mut carried = Session::new(engine.clone()).carried().unwrap();
        let mut differed = false;
        for (t, row) in stream.chunks_exact(features).enumerate() {
            let time = Some(1_616_875_200.0 + 3600.0 * t as f64);
            let a = windowed.push_with(row, future, time).unwrap().cloned();
            let b = carried.push_with(row, future, time).unwrap().cloned();
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            assert!(b.values().iter().all(|v| v.is_finite()));
            let certificate = serde_json::to_value(carried.certificate(&b)).unwrap();
            let note = certificate["stream"]["note"].as_str().unwrap();
            assert!(note.starts_with("the Kalman prior's state"), "{note}");
            // The network re-runs on the window either way: the same correction.
            assert_eq!(
                a.forecast.correction, b.forecast.correction,
                "{}",
                example.label
            );
            if t + 1 == lookback {
                for (x, y) in a.forecast.base.iter().zip(&b.forecast.base) {
                    assert!((x - y).abs() < 1e-4, "{}: {x} vs {y}", example.label);
                }
            } else {
                differed |= a.forecast.base != b.forecast.base;
            }
            let (ca, cb) = (
                a.forecast.covariance.as_ref().unwrap(),
                b.forecast.covariance.as_ref().unwrap(),
            );
            assert!(cb.iter().zip(ca).all(|(x, y)| (x == &0.0) == (y == &0.0)));
        }
        assert!(
            differed,
            "{}: the carried prior never mattered",
            example.label
        );
    }
}

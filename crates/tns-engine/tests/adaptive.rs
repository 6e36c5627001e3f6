//! Adaptive conformal intervals in a streaming session: calibrated on a calm random walk, a
//! stream whose steps triple in size halfway loses the static interval's coverage; the
//! adaptive session's long-run coverage stays within 2 points of nominal, and its
//! certificates name the method and its guarantee.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tns_data::{Dataset, Segment, SplitFractions, WindowSpec};
use tns_engine::{Engine, Session};
use tns_model::{ModelConfig, ModelKind};
use tns_train::{FitOptions, fit_model};

fn walk(rows: usize, scale: f64, start: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let step = Normal::new(0.0, scale).unwrap();
    let mut y = start;
    (0..rows)
        .map(|_| {
            y += step.sample(rng);
            y
        })
        .collect()
}

#[test]
fn adaptive_sessions_keep_long_run_coverage_through_a_shift() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let calm = walk(6_000, 1.0, 0.0, &mut rng);
    let times = (0..calm.len()).map(|t| t as f64).collect();
    let data = Dataset::single(
        vec!["y".into()],
        vec![Segment {
            values: calm.clone(),
            times,
        }],
        1.0,
    )
    .unwrap();
    let mut spec = WindowSpec::next_step(4, vec![0]);
    spec.horizon = 2;
    let splits = data.windows(&spec, &SplitFractions::default()).unwrap();
    let config = ModelConfig::new("p", ModelKind::Persistence, &["y"], &["y"], 4, 2, 1);
    let model = fit_model(&config, 1.0, &splits, &FitOptions::default()).unwrap();
    let engine = Arc::new(model.engine().unwrap());
    let mut fixed = Session::new(engine.clone());
    let mut adaptive = Session::new(engine.clone()).adaptive(0.01).unwrap();
    let mut stream = walk(10_000, 1.0, calm[calm.len() - 1], &mut rng);
    let last = stream[stream.len() - 1];
    stream.extend(walk(10_000, 3.0, last, &mut rng));
    // Static coverage, scored by hand on the fixed session's intervals.
    let (mut issued, mut hits, mut total) = (Vec::<(usize, Vec<f64>, Vec<f64>)>::new(), 0, 0);
    for (t, &y) in stream.iter().enumerate() {
        for (origin, lower, upper) in &issued {
            let step = t - origin - 1;
            if step < 2 {
                hits += usize::from(lower[step] <= y && y <= upper[step]);
                total += 1;
            }
        }
        issued.retain(|(origin, _, _)| t - origin < 2);
        if let Some(p) = fixed.push(&[y]).unwrap() {
            issued.push((t, p.lower.clone(), p.upper.clone()));
        }
        if let Some(p) = adaptive.push(&[y]).unwrap() {
            let p = p.clone();
            if t == stream.len() - 1 {
                let certificate = serde_json::to_value(adaptive.certificate(&p)).unwrap();
                assert_eq!(certificate["interval"]["method"], "adaptive_conformal");
                assert!(
                    certificate["interval"]["guarantee"]
                        .as_str()
                        .unwrap()
                        .contains("long-run")
                );
            }
        }
    }
    let static_coverage = hits as f64 / total as f64;
    let (resolved, coverage) = adaptive.adaptive_coverage().unwrap();
    let coverage = coverage.unwrap();
    assert!(resolved as usize >= total - 4, "{resolved} vs {total}");
    assert!(static_coverage < 0.8, "static coverage {static_coverage}");
    assert!(
        (coverage - 0.9).abs() < 0.02,
        "adaptive coverage {coverage} (static {static_coverage})"
    );
    // An uncalibrated model cannot be adaptive.
    let mut manifest = engine.manifest().clone();
    manifest.conformal = None;
    let bare = Arc::new(Engine::new(manifest, &[]).unwrap());
    let err = Session::new(bare).adaptive(0.01).unwrap_err().to_string();
    assert!(err.contains("calibrated"), "{err}");
}

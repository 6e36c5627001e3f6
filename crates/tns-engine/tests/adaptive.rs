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

/// A random walk of hourly rows whose steps are `evening` times larger from 18:00 to 21:00.
fn hourly_walk(rows: usize, first_hour: usize, evening: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let step = Normal::new(0.0, 1.0).unwrap();
    let mut y = 0.0;
    (0..rows)
        .map(|t| {
            let hour = (first_hour + t) % 24;
            y += step.sample(rng)
                * if (18..22).contains(&hour) {
                    evening
                } else {
                    1.0
                };
            y
        })
        .collect()
}

#[test]
fn adaptive_sessions_calibrated_by_hour_track_each_hour() {
    // Calibrated by hour of day on a walk with the same steps at every hour; in the stream the
    // evening's steps quadruple. The session moves only the evening's radii, so every hour
    // keeps its coverage, and its certificates name the hourly method.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let calm = hourly_walk(24 * 300, 0, 1.0, &mut rng);
    let times: Vec<f64> = (0..calm.len()).map(|t| t as f64 * 3600.0).collect();
    let data = Dataset::single(
        vec!["y".into()],
        vec![Segment {
            values: calm.clone(),
            times: times.clone(),
        }],
        3600.0,
    )
    .unwrap();
    let calendar = tns_calendar::Calendar {
        features: vec![tns_calendar::CalendarFeature::Hour],
        timezone: None,
        step: 3600.0,
    };
    let mut spec = WindowSpec::next_step(4, vec![0]);
    spec.calendar = Some(calendar.clone());
    let splits = data.windows(&spec, &SplitFractions::default()).unwrap();
    let mut config = ModelConfig::new("p", ModelKind::Persistence, &["y"], &["y"], 4, 1, 1);
    config.future = Some(tns_model::FutureInputs {
        columns: Vec::new(),
        calendar: Some(calendar),
    });
    let options = FitOptions {
        interval_by_hour: true,
        ..FitOptions::default()
    };
    let model = fit_model(&config, 3600.0, &splits, &options).unwrap();
    let engine = Arc::new(model.engine().unwrap());
    let mut session = Session::new(engine).adaptive(0.05).unwrap();
    let start = times[times.len() - 1] + 3600.0;
    let stream = hourly_walk(24 * 3000, calm.len() % 24, 4.0, &mut rng);
    let (mut hits, mut seen) = ([0usize; 24], [0usize; 24]);
    let mut issued: Option<(f64, f64, usize)> = None;
    for (t, &y) in stream.iter().enumerate() {
        let hour = (calm.len() + t) % 24;
        if let Some((lower, upper, h)) = issued.take() {
            assert_eq!(h, hour);
            hits[hour] += usize::from(lower <= y && y <= upper);
            seen[hour] += 1;
        }
        let time = start + t as f64 * 3600.0;
        if let Some(p) = session.push_with(&[y], None, Some(time)).unwrap() {
            issued = Some((p.lower[0], p.upper[0], (hour + 1) % 24));
            if t == stream.len() - 1 {
                let p = p.clone();
                let certificate = serde_json::to_value(session.certificate(&p)).unwrap();
                assert_eq!(
                    certificate["interval"]["method"],
                    "mondrian_hour_adaptive_conformal"
                );
            }
        }
    }
    for hour in 0..24 {
        let coverage = hits[hour] as f64 / seen[hour] as f64;
        assert!(
            (coverage - 0.9).abs() < 0.025,
            "hour {hour}: coverage {coverage}"
        );
    }
}

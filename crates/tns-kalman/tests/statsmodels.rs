//! The structural prior against statsmodels' `UnobservedComponents` (the reference
//! implementation; for the damped trend, which it lacks, the same model written as a
//! statsmodels `MLEModel`): the same log-likelihood and filtered state means to 1e-6 at the
//! same variances, and a maximum-likelihood fit within 0.1% of statsmodels' log-likelihood.
//!
//! Needs Python with statsmodels (`$TNS_PYTHON`, else `python3`). Without it the test says so
//! and passes, unless `TNS_REQUIRE_STATSMODELS=1` (CI), where it fails instead.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tns_kalman::{
    Season, StructuralModel, StructuralParams, StructuralSpec, Trend, fit_structural,
};

fn python() -> String {
    std::env::var("TNS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn statsmodels_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import statsmodels"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("TNS_REQUIRE_STATSMODELS").as_deref() != Ok("1"),
            "TNS_REQUIRE_STATSMODELS=1 but {} cannot import statsmodels",
            python()
        );
        eprintln!(
            "SKIPPED: {} cannot import statsmodels (pip install statsmodels, or set TNS_PYTHON)",
            python()
        );
    }
    ok
}

/// A drifting level, a daily cycle with two harmonics, and pseudo-random noise.
fn series(rows: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f64 / 10_000.0 - 0.5
    };
    let mut level = 40.0;
    (0..rows)
        .map(|t| {
            level += 0.3 * noise();
            let angle = std::f64::consts::TAU * t as f64 / 24.0;
            level + 6.0 * angle.sin() + 2.0 * (2.0 * angle).cos() + noise()
        })
        .collect()
}

fn run(case: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.json");
    std::fs::write(&path, case.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/statsmodels_check.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn structural_filter_and_fit_match_statsmodels() {
    if !statsmodels_available() {
        return;
    }
    let plain = series(24 * 20);
    // A regressor that drives the series: y = 0.8·x + level + seasons + noise.
    let x: Vec<f64> = (0..plain.len())
        .map(|t| (t as f64 * 0.13).sin() * 2.0 + (t as f64 * 0.031).cos())
        .collect();
    let driven: Vec<f64> = plain.iter().zip(&x).map(|(y, x)| y + 0.8 * x).collect();
    for (trend, name, slope, regression) in [
        (Trend::Level, "llevel", None, None),
        (Trend::LocalLinear, "lltrend", Some(0.002), None),
        (Trend::Level, "llevel", None, Some(0.75)),
        (Trend::Damped, "damped", Some(0.002), None),
    ] {
        let damping = (trend == Trend::Damped).then_some(0.8);
        let spec = StructuralSpec {
            trend,
            seasons: vec![Season {
                period: 24.0,
                harmonics: 2,
            }],
            initial_variance: 1e6,
            regressors: regression
                .map(|_| vec!["x".to_string()])
                .unwrap_or_default(),
        };
        let params = StructuralParams {
            level: 0.05,
            slope,
            seasonal: vec![0.01],
            observation: 0.2,
            regression: regression.into_iter().collect(),
            damping,
            log_likelihood: 0.0,
        };
        let (y, exog) = match regression {
            Some(_) => (&driven, x.clone()),
            None => (&plain, Vec::new()),
        };
        let theirs = run(&json!({
            "y": y,
            "exog": exog.iter().map(|v| [v]).collect::<Vec<_>>(),
            "trend": name,
            "seasons": [[24, 2]],
            "params": {"level": 0.05, "slope": slope, "seasonal": [0.01], "observation": 0.2,
                       "regression": params.regression, "damping": damping},
        }));
        let adjusted = tns_kalman::less_regression(y, &exog, &params.regression);
        let ours = StructuralModel::new(&spec, &params).filter(&adjusted);
        assert_eq!(theirs["states"], spec.states());
        assert_eq!(theirs["loglikelihood_burn"], spec.states());
        let ll = theirs["loglike"].as_f64().unwrap();
        assert!(
            (ours.log_likelihood - ll).abs() <= 1e-6 * ll.abs(),
            "{name}: log-likelihood {} vs statsmodels {ll}",
            ours.log_likelihood
        );
        let filtered: Vec<f64> = theirs["filtered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(filtered.len(), ours.filtered.len());
        let worst = filtered
            .iter()
            .zip(&ours.filtered)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{name}: filtered means differ by {worst:e}");
        let exogs = if exog.is_empty() {
            vec![]
        } else {
            vec![exog.clone()]
        };
        let fitted = fit_structural(&spec, std::slice::from_ref(y), &exogs).unwrap();
        let best = theirs["fitted_loglike"].as_f64().unwrap();
        assert!(
            fitted.log_likelihood >= best - 1e-3 * best.abs(),
            "{name}: fitted log-likelihood {} vs statsmodels {best} ({:?})",
            fitted.log_likelihood,
            theirs["fitted_params"]
        );
        if regression.is_some() {
            // statsmodels' β, last of its fitted parameters; ours within 5% of it.
            let theirs_beta = theirs["fitted_params"].as_array().unwrap().last().unwrap();
            let theirs_beta = theirs_beta.as_f64().unwrap();
            assert!(
                (fitted.regression[0] - theirs_beta).abs() <= 0.05 * theirs_beta.abs(),
                "β {} vs statsmodels {theirs_beta}",
                fitted.regression[0]
            );
        }
        eprintln!(
            "{name}: log-likelihood {:.6} (statsmodels {ll:.6}); fitted {:.4} (statsmodels {best:.4}); filtered means within {worst:.1e}",
            ours.log_likelihood, fitted.log_likelihood
        );
    }
}

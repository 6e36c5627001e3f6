// Matrix checks compare entry (i, j) of several 2×2 arrays; indices read clearer here.
#![allow(clippy::needless_range_loop)]

use super::*;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};

fn matmul(a: &Mat2, b: &Mat2) -> Mat2 {
    let mut c = [[0.0; 2]; 2];
    for i in 0..2 {
        for j in 0..2 {
            c[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j];
        }
    }
    c
}

fn transpose(a: &Mat2) -> Mat2 {
    [[a[0][0], a[1][0]], [a[0][1], a[1][1]]]
}

fn true_params(cfg: &TrajectoryConfig) -> AxisParams {
    AxisParams {
        q: cfg.accel_std * cfg.accel_std,
        r_position: cfg.pos_noise * cfg.pos_noise,
        r_velocity: Some(cfg.vel_noise * cfg.vel_noise),
        initial_velocity_var: 1.0,
    }
}

fn trajectory_spec(dt: f64) -> KalmanSpec {
    KalmanSpec {
        axes: vec![
            Axis {
                position: 0,
                velocity: Some(2),
            },
            Axis {
                position: 1,
                velocity: Some(3),
            },
        ],
        dt,
    }
}

#[test]
fn accumulated_process_noise_matches_the_explicit_sum_of_powers() {
    let dt = 0.05;
    let q1 = unit_process_noise(dt);
    for (lead, horizon) in [(1, 1), (1, 5), (7, 3), (1000, 1)] {
        let tr = transitions(dt, lead, horizon);
        assert_eq!(tr.len(), horizon);
        for (h, t) in tr.iter().enumerate() {
            let k = lead + h;
            // Reference: Σ_{i<k} F^i Q F^iᵀ with explicit matrix powers.
            let mut sum = [[0.0; 2]; 2];
            let mut fi = [[1.0, 0.0], [0.0, 1.0]];
            let f = [[1.0, dt], [0.0, 1.0]];
            for _ in 0..k {
                sum = add(&sum, &matmul(&matmul(&fi, &q1), &transpose(&fi)));
                fi = matmul(&f, &fi);
            }
            assert!((t.k_dt - fi[0][1]).abs() < 1e-9 * fi[0][1]);
            for i in 0..2 {
                for j in 0..2 {
                    let rel = (t.q_sum[i][j] - sum[i][j]).abs() / sum[i][j].abs().max(1e-300);
                    assert!(
                        rel < 1e-9,
                        "k={k} ({i},{j}): {} vs {}",
                        t.q_sum[i][j],
                        sum[i][j]
                    );
                }
            }
        }
    }
}

#[test]
fn forecast_equals_repeated_one_step_prediction() {
    let params = AxisParams {
        q: 0.3,
        r_position: 0.01,
        r_velocity: None,
        initial_velocity_var: 4.0,
    };
    let axis = Axis {
        position: 0,
        velocity: None,
    };
    let rows = [1.0, 1.2, 1.5, 1.4, 1.9];
    let mut f = AxisFilter::start(axis, params, 0.5, &rows[..1]);
    for r in rows.chunks(1).skip(1) {
        f.step(r);
    }
    let tr = transitions(0.5, 4, 1)[0];
    let (x, p) = f.forecast(tr.k_dt, &tr.q_sum);
    // Reference: predict 4 times with x ← F x, P ← F P Fᵀ + Q.
    let (mut rx, mut rp) = (f.state(), f.covariance());
    let q1 = unit_process_noise(0.5);
    for _ in 0..4 {
        rx = [rx[0] + 0.5 * rx[1], rx[1]];
        let fp = propagate(&rp, 0.5);
        rp = [
            [fp[0][0] + 0.3 * q1[0][0], fp[0][1] + 0.3 * q1[0][1]],
            [fp[1][0] + 0.3 * q1[1][0], fp[1][1] + 0.3 * q1[1][1]],
        ];
    }
    for i in 0..2 {
        assert!((x[i] - rx[i]).abs() < 1e-12);
        for j in 0..2 {
            assert!((p[i][j] - rp[i][j]).abs() < 1e-12);
        }
    }
}

#[test]
fn nis_on_cv_data_matches_its_degrees_of_freedom() {
    let cfg = TrajectoryConfig::compact(Regime::Cv, 50_000, 11);
    let data = trajectory(&cfg);
    let rows = &data.series()[0].segments[0].values;
    let spec = trajectory_spec(cfg.dt);
    let mut total = SequenceStats::default();
    for &axis in &spec.axes {
        total.merge(&AxisFilter::run(axis, true_params(&cfg), cfg.dt, rows, 4));
    }
    let ratio = total.nis_per_dof();
    assert!((ratio - 1.0).abs() < 0.05, "average NIS / dof = {ratio}");

    // With fitted parameters (fitted on the first half, checked on the second).
    let half = rows.len() / 2 / 4 * 4;
    let fitted = fit_params(&spec, &[&rows[..half]], 4);
    let mut held_out = SequenceStats::default();
    for (&axis, &p) in spec.axes.iter().zip(&fitted) {
        held_out.merge(&AxisFilter::run(axis, p, cfg.dt, &rows[half..], 4));
    }
    let ratio = held_out.nis_per_dof();
    assert!(
        (ratio - 1.0).abs() < 0.05,
        "fitted: average NIS / dof = {ratio}"
    );
}

#[test]
fn window_predictive_covariance_is_consistent_on_cv_data() {
    // (y - ŷ)ᵀ S⁻¹ (y - ŷ) averages T when S is the true predictive covariance.
    for (cfg, lookback, lead, targets) in [
        (
            TrajectoryConfig::compact(Regime::Cv, 40_000, 5),
            10,
            1,
            vec![0, 1, 2, 3],
        ),
        (
            TrajectoryConfig::seed_design(Regime::Cv, 400_000, 6),
            256,
            1000,
            vec![0, 1],
        ),
    ] {
        let data = trajectory(&cfg);
        let rows = &data.series()[0].segments[0].values;
        let spec = trajectory_spec(cfg.dt);
        let prior =
            KalmanPrior::new(spec, vec![true_params(&cfg); 2], 4, &targets, lead, 1).unwrap();
        let t = targets.len();
        let (mut mean, mut cov) = (vec![0.0; t], vec![0.0; t * t]);
        let (mut sum, mut n) = (0.0, 0usize);
        let span = lookback + lead;
        let mut start = 0;
        while (start + span) * 4 <= rows.len() {
            prior.predict_into(
                &rows[start * 4..(start + lookback) * 4],
                &mut mean,
                &mut cov,
            );
            let y = &rows[(start + span - 1) * 4..(start + span) * 4];
            let e: Vec<f64> = targets
                .iter()
                .enumerate()
                .map(|(j, &c)| y[c] - mean[j])
                .collect();
            // S is block-diagonal per axis; pairs (x, vx) and (y, vy) or diagonal.
            let d2 = if t == 4 {
                [(0, 2), (1, 3)]
                    .iter()
                    .map(|&(i, j)| {
                        let (a, b, d) = (cov[i * 4 + i], cov[i * 4 + j], cov[j * 4 + j]);
                        let det = a * d - b * b;
                        (d * e[i] * e[i] - 2.0 * b * e[i] * e[j] + a * e[j] * e[j]) / det
                    })
                    .sum::<f64>()
            } else {
                e[0] * e[0] / cov[0] + e[1] * e[1] / cov[3]
            };
            sum += d2;
            n += 1;
            start += if lead > 1 { 97 } else { 3 };
        }
        let ratio = sum / n as f64 / t as f64;
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "lead {lead}: NIS/dof = {ratio} over {n} windows"
        );
    }
}

#[test]
fn fit_recovers_the_generating_parameters() {
    let cfg = TrajectoryConfig::compact(Regime::Cv, 40_000, 21);
    let data = trajectory(&cfg);
    let rows = &data.series()[0].segments[0].values;
    let fitted = fit_params(&trajectory_spec(cfg.dt), &[rows], 4);
    let truth = true_params(&cfg);
    for p in fitted {
        assert!(
            (p.q / truth.q - 1.0).abs() < 0.15,
            "q {} vs {}",
            p.q,
            truth.q
        );
        assert!((p.r_position / truth.r_position - 1.0).abs() < 0.1, "{p:?}");
        assert!(
            (p.r_velocity.unwrap() / truth.r_velocity.unwrap() - 1.0).abs() < 0.1,
            "{p:?}"
        );
    }
}

#[test]
fn covariance_stays_symmetric_positive_definite_on_long_badly_scaled_runs() {
    // Hourly prices: dt = 3600 s, values around 1e4, tiny q; plus a 2 kHz run.
    for (dt, q, r, scale) in [
        (3600.0, 1e-14, 25.0, 1e4),
        (0.0005, 0.25, 0.0025, 1.0),
        (1.0, 1e6, 1e-6, 1e6),
    ] {
        let axis = Axis {
            position: 0,
            velocity: None,
        };
        let params = AxisParams {
            q,
            r_position: r,
            r_velocity: None,
            initial_velocity_var: 1.0,
        };
        let mut f = AxisFilter::start(axis, params, dt, &[scale]);
        let mut state = 12345u64;
        for i in 0..200_000 {
            // Deterministic pseudo-noise keeps the test self-contained.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * r.sqrt();
            f.step(&[scale + (i as f64 * 1e-3).sin() * scale * 0.1 + noise]);
            let p = f.covariance();
            assert_eq!(p[0][1], p[1][0], "asymmetric at step {i}");
            let det = p[0][0] * p[1][1] - p[0][1] * p[1][0];
            assert!(
                p[0][0] > 0.0 && p[1][1] > 0.0 && det > 0.0,
                "not PD at step {i}: {p:?} (dt={dt})"
            );
        }
    }
}

#[test]
fn invalid_configurations_are_rejected_with_reasons() {
    let spec = trajectory_spec(0.1);
    let good = AxisParams {
        q: 1.0,
        r_position: 1.0,
        r_velocity: Some(1.0),
        initial_velocity_var: 1.0,
    };
    assert_eq!(
        KalmanPrior::new(spec.clone(), vec![good; 2], 5, &[4], 1, 1).unwrap_err(),
        KalmanError::UnmodelledTarget(4)
    );
    let bad = AxisParams {
        q: f64::NAN,
        ..good
    };
    assert!(matches!(
        KalmanPrior::new(spec.clone(), vec![good, bad], 4, &[0], 1, 1),
        Err(KalmanError::BadParameter {
            axis: 1,
            what: "q",
            ..
        })
    ));
    assert!(KalmanPrior::new(spec.clone(), vec![good], 4, &[0], 1, 1).is_err());
    assert!(KalmanPrior::new(spec, vec![good; 2], 3, &[0], 1, 1).is_err());
}

/// Short windows' scheduled mean updates give the whole filter's bits; from
/// [`MAP_MIN_ROWS`] rows on the precomputed state map gives them to 1e-9 (relative, f64).
#[test]
fn the_gain_schedule_gives_the_filters_results() {
    let cfg = TrajectoryConfig::compact(Regime::Mixed, 4_000, 9);
    let data = trajectory(&cfg);
    let rows = &data.series()[0].segments[0].values;
    let mut spec = trajectory_spec(cfg.dt);
    // One axis with its velocity observed, one position only (a local linear trend).
    spec.axes[1].velocity = None;
    let mut params = vec![true_params(&cfg); 2];
    params[1].r_velocity = None;
    let cases = [
        (10, 1, 1, vec![0, 1, 2]),
        (MAP_MIN_ROWS - 1, 2, 2, vec![1]),
        (MAP_MIN_ROWS, 1, 1, vec![0, 2]),
        (37, 3, 5, vec![1, 0]),
        (256, 1000, 1, vec![0, 1]),
    ];
    for (lookback, lead, horizon, targets) in cases {
        let filter =
            KalmanPrior::new(spec.clone(), params.clone(), 4, &targets, lead, horizon).unwrap();
        let scheduled = filter.clone().with_window_rows(lookback);
        let (t, h) = (targets.len(), horizon);
        for start in (0..rows.len() / 4 - lookback).step_by(97) {
            let window = &rows[start * 4..(start + lookback) * 4];
            let (mut m1, mut c1) = (vec![0.0; h * t], vec![0.0; h * t * t]);
            let (mut m2, mut c2) = (vec![0.0; h * t], vec![0.0; h * t * t]);
            filter.predict_into(window, &mut m1, &mut c1);
            scheduled.predict_into(window, &mut m2, &mut c2);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            if lookback < MAP_MIN_ROWS {
                assert_eq!(
                    bits(&m1),
                    bits(&m2),
                    "mean, lookback {lookback}, window at {start}"
                );
            } else {
                for (a, b) in m1.iter().zip(&m2) {
                    assert!(
                        (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                        "mean, lookback {lookback}, window at {start}: filter {a}, map {b}"
                    );
                }
                // The map reads the window: its forecast is not the filter's by accident
                // of a constant window.
                assert!(m1.iter().any(|v| v.abs() > 1e-3));
            }
            assert_eq!(bits(&c1), bits(&c2), "covariance, lookback {lookback}");
        }
        // A window of another length runs the whole filter.
        let longer = &rows[..(lookback + 3) * 4];
        let (mut m1, mut c1) = (vec![0.0; h * t], vec![0.0; h * t * t]);
        let (mut m2, mut c2) = (vec![0.0; h * t], vec![0.0; h * t * t]);
        filter.predict_into(longer, &mut m1, &mut c1);
        scheduled.predict_into(longer, &mut m2, &mut c2);
        assert_eq!((m1, c1), (m2, c2));
    }
}

//! End-to-end training checks on small generated data.

use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::{SplitFractions, Splits, WindowSpec};
use tns_engine::{Engine, Predictor};
use tns_format::load_model;
use tns_kalman::Axis;
use tns_model::{ModelConfig, ModelKind};
use tns_train::{FitOptions, TrainConfig, fit_model};

const COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];

fn data(rows: usize) -> (Splits, f64) {
    let cfg = TrajectoryConfig::compact(Regime::Turn, rows, 17);
    let d = trajectory(&cfg);
    let spec = WindowSpec::next_step(10, d.column_indices(&COLUMNS).unwrap());
    (
        d.windows(&spec, &SplitFractions::default()).unwrap(),
        d.dt(),
    )
}

fn config(kind: ModelKind) -> ModelConfig {
    let mut c = ModelConfig::new(kind.name(), kind, &COLUMNS, &COLUMNS, 10, 1, 1);
    c.kalman_axes = Some(vec![
        Axis {
            position: 0,
            velocity: Some(2),
        },
        Axis {
            position: 1,
            velocity: Some(3),
        },
    ]);
    c.seed = 5;
    c
}

fn options(epochs: usize) -> FitOptions {
    FitOptions {
        train: TrainConfig {
            epochs,
            batch_size: 64,
            patience: 100,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn training_lowers_the_loss_and_is_reproducible_bit_for_bit() {
    let (splits, dt) = data(3_000);
    let a = fit_model(&config(ModelKind::SystemA), dt, &splits, &options(4)).unwrap();
    let b = fit_model(&config(ModelKind::SystemA), dt, &splits, &options(4)).unwrap();
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.manifest.tensors_sha256, b.manifest.tensors_sha256);
    let h = &a.history;
    assert!(
        h.last().unwrap().train_loss < 0.8 * h[0].train_loss,
        "{h:?}"
    );
    // A different seed gives different weights.
    let mut other = config(ModelKind::SystemA);
    other.seed = 6;
    let c = fit_model(&other, dt, &splits, &options(1)).unwrap();
    assert_ne!(c.tensors, a.tensors);
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let (splits, dt) = data(2_000);
    let dir = tempfile::tempdir().unwrap();
    let straight = fit_model(&config(ModelKind::SystemB), dt, &splits, &options(4)).unwrap();
    let mut opts = options(4);
    opts.run_dir = Some(dir.path().to_path_buf());
    opts.stop_after = Some(2);
    let first_half = fit_model(&config(ModelKind::SystemB), dt, &splits, &opts).unwrap();
    assert_eq!(first_half.history.len(), 2);
    assert_ne!(first_half.tensors, straight.tensors);
    let metrics = std::fs::read_to_string(dir.path().join("system-b.metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    opts.resume = true;
    opts.stop_after = None;
    let resumed = fit_model(&config(ModelKind::SystemB), dt, &splits, &opts).unwrap();
    assert_eq!(resumed.tensors, straight.tensors);
    assert_eq!(resumed.history.len(), 4);
    for (a, b) in resumed.history.iter().zip(&straight.history) {
        assert_eq!(
            (a.train_loss, a.val_loss, a.lr),
            (b.train_loss, b.val_loss, b.lr)
        );
    }
}

#[test]
fn saved_models_load_and_predict_identically_with_certificates() {
    let (splits, dt) = data(2_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tns");
    let model = fit_model(&config(ModelKind::SystemB), dt, &splits, &options(2)).unwrap();
    model.save(&path).unwrap();
    let (manifest, _) = load_model(&path).unwrap();
    assert_eq!(manifest.config.parameter_count(), 3_780);
    let a = std::sync::Arc::new(model.engine().unwrap());
    let b = std::sync::Arc::new(Engine::load(&path).unwrap());
    let w = &*splits.test.input(0);
    let (mut pa, mut pb) = (Predictor::new(a.clone()), Predictor::new(b.clone()));
    assert_eq!(pa.predict(w).unwrap(), pb.predict(w).unwrap());
    let certify = |p: &mut Predictor| {
        let prediction = p.predict(w).unwrap().clone();
        serde_json::to_value(p.engine().certificate(&prediction)).unwrap()
    };
    let cert = certify(&mut pb);
    assert_eq!(cert["gate"]["test"], "chi2_mahalanobis");
    assert_eq!(cert["model"]["sha256"], manifest.sha256());
    assert_eq!(cert, certify(&mut pb));
    // NaN input is refused with the row and feature named.
    let mut bad = w.to_vec();
    bad[5] = f64::NAN;
    let err = pb.predict(&bad).unwrap_err().to_string();
    assert!(err.contains("row 1") && err.contains("\"y\""), "{err}");
}

/// System B's gate mode is the one with the lowest calibration error, ties to the more
/// conservative; the evidence is in the model file and every certificate, and the mode's
/// recorded error is what the engine gives on the calibration windows under that mode.
#[test]
fn the_gate_mode_is_chosen_on_the_calibration_split_with_its_evidence() {
    let (splits, dt) = data(2_000);
    let mut cfg = config(ModelKind::SystemB);
    // A gate at α = 0.99 fails most steps, so the modes differ.
    cfg.gate = Some(tns_certify::GateConfig {
        alpha: 0.99,
        ..Default::default()
    });
    let model = fit_model(&cfg, dt, &splits, &options(2)).unwrap();
    let gate = model.manifest.config.gate.unwrap();
    let evidence = gate.evidence.expect("evidence recorded");
    assert_eq!(evidence.windows, splits.cal.len());
    assert!(evidence.failed_steps > 0, "{evidence:?}");
    assert_eq!(gate.mode, evidence.error.best());
    assert_eq!(gate.mode, evidence.choice());
    assert!(evidence.prior_error > 0.0);
    let best = evidence.error.of(gate.mode);
    for mode in tns_certify::GateMode::ALL {
        assert!(best <= evidence.error.of(mode), "{evidence:?}");
    }
    // The recorded error is the engine's on the calibration windows.
    let engine = model.engine().unwrap();
    let predictions = engine.predict_all(&splits.cal.inputs()).unwrap();
    let scale = &model.manifest.residual_scale;
    let width = scale.len();
    let (mut sum, mut n) = (0.0, 0usize);
    for (p, y) in predictions.iter().zip(splits.cal.outputs().chunks(width)) {
        for k in 0..width {
            sum += (p.values()[k] - y[k]).abs() / scale[k];
            n += 1;
        }
    }
    assert!((sum / n as f64 - best).abs() < 1e-12);
    let certificate = serde_json::to_value(engine.certificate(&predictions[0])).unwrap();
    assert_eq!(certificate["gate"]["mode"], gate.mode.name());
    assert_eq!(
        certificate["gate"]["evidence"]["failed_steps"],
        evidence.failed_steps
    );
    // A fixed mode is kept as given, without evidence.
    let fixed = FitOptions {
        choose_gate: false,
        ..options(2)
    };
    let model = fit_model(&cfg, dt, &splits, &fixed).unwrap();
    let gate = model.manifest.config.gate.unwrap();
    assert_eq!(
        (gate.mode, gate.evidence),
        (tns_certify::GateMode::Reject, None)
    );
}

#[test]
fn accumulated_batches_train_like_one_large_batch() {
    // Two batches of 64 summed per step against one batch of 128: the same windows per step
    // (the shuffled order does not depend on the batch size), the same mean gradient up to
    // rounding, the same number of steps and learning rates.
    let (splits, dt) = data(2_000);
    let run = |batch_size: usize, accumulate: usize| {
        let mut o = options(2);
        o.train.batch_size = batch_size;
        o.train.accumulate = accumulate;
        fit_model(&config(ModelKind::SystemA), dt, &splits, &o).unwrap()
    };
    let (small, large, plain) = (run(64, 2), run(128, 1), run(64, 1));
    let worst = |a: &tns_train::TrainedModel, b: &tns_train::TrainedModel| {
        a.tensors
            .iter()
            .zip(&b.tensors)
            .flat_map(|(x, y)| x.data.iter().zip(&y.data).map(|(p, q)| (p - q).abs()))
            .fold(0f32, f32::max)
    };
    assert!(worst(&small, &large) < 1e-4, "{}", worst(&small, &large));
    // Without accumulation the 64-window run takes twice the steps and ends elsewhere.
    assert!(worst(&small, &plain) > 1e-3, "{}", worst(&small, &plain));
    assert!(
        small
            .manifest
            .training
            .as_ref()
            .unwrap()
            .optimizer
            .contains("accumulate=2")
    );
}

#[test]
fn the_mae_loss_is_what_training_and_early_stopping_measure() {
    // With a zero learning rate the weights stay at their seeded start, so both runs score
    // the same predictions: the MAE run must report the mean absolute error of what the MSE
    // run squares — below its root (Jensen) and not equal to it.
    let (splits, dt) = data(2_000);
    let run = |loss: tns_train::Loss| {
        let mut o = options(1);
        o.train.lr = 0.0;
        o.train.loss = loss;
        fit_model(&config(ModelKind::SystemA), dt, &splits, &o).unwrap()
    };
    let (mse, mae) = (run(tns_train::Loss::Mse), run(tns_train::Loss::Mae));
    assert_eq!(
        mse.tensors, mae.tensors,
        "a zero learning rate moved the weights"
    );
    let (m2, m1) = (mse.history[0].val_loss, mae.history[0].val_loss);
    assert!(
        m1 < m2.sqrt() && (m1 - m2).abs() > 1e-6,
        "MAE {m1}, MSE {m2}"
    );
    let (t2, t1) = (mse.history[0].train_loss, mae.history[0].train_loss);
    assert!(t1 < t2.sqrt(), "MAE {t1}, MSE {t2}");
    let optimizer = &mae.manifest.training.as_ref().unwrap().optimizer;
    assert!(optimizer.ends_with("loss=mae"), "{optimizer}");
    // And it trains: a real learning rate lowers it.
    let mut o = options(3);
    o.train.loss = tns_train::Loss::Mae;
    let trained = fit_model(&config(ModelKind::SystemA), dt, &splits, &o).unwrap();
    assert!(
        trained.history[2].val_loss < 0.9 * m1,
        "{:?}",
        trained.history
    );
}

#[test]
fn seeded_runs_do_not_depend_on_the_thread_count() {
    let (splits, dt) = data(2_000);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fit_model(&config(ModelKind::SystemA), dt, &splits, &options(2)).unwrap())
    };
    let one = run(1);
    assert_eq!(one.tensors, run(1).tensors);
    assert_eq!(one.tensors, run(2).tensors);
}

#[test]
fn the_range_test_finds_the_falling_loss_and_stops_at_divergence() {
    let (splits, dt) = data(2_000);
    let model = config(ModelKind::SystemA);
    let prepared = tns_train::prepare(&model, dt, &splits).unwrap();
    let cfg = options(1).train;
    let device = candle_core::Device::Cpu;
    let sweep = |end: f64| tns_train::LrSweep {
        start: 1e-5,
        end,
        steps: 120,
    };
    let found = tns_train::lr_find(&model, &prepared.train, &cfg, sweep(1e3), &device).unwrap();
    let p = &found.points;
    // The loss falls well below its start before the rate gets too large, then diverges.
    let lowest = p.iter().map(|q| q.smoothed).fold(f64::INFINITY, f64::min);
    assert!(lowest < 0.7 * p[0].smoothed, "{p:?}");
    assert!(found.diverged && p.len() < 120, "{} points", p.len());
    let at_lowest = found.lowest.unwrap();
    assert!((found.suggestion.unwrap() - at_lowest / 10.0).abs() < 1e-15);
    assert!(at_lowest > 1e-5 && at_lowest < 1e3);
    // The rates grow geometrically from start.
    assert!((p[0].lr - 1e-5).abs() < 1e-18);
    let ratio = p[1].lr / p[0].lr;
    assert!((p[2].lr / p[1].lr - ratio).abs() < 1e-9);
    // The same sweep twice gives the same curve (seeded order, fresh weights).
    let again = tns_train::lr_find(&model, &prepared.train, &cfg, sweep(1e3), &device).unwrap();
    assert_eq!(found, again);
    let bad = tns_train::LrSweep {
        start: 1.0,
        end: 0.1,
        steps: 10,
    };
    assert!(tns_train::lr_find(&model, &prepared.train, &cfg, bad, &device).is_err());
}

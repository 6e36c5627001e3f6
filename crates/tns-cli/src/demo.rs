//! `tns demo`: the whole product on generated trajectory data, in a few minutes on 2 cores.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::{SplitFractions, WindowSpec};
use tns_engine::Engine;
use tns_eval::{LossCurve, SeriesToPlot, plot_forecasts, plot_loss_curves};
use tns_model::{ModelConfig, ModelKind, NetworkConfig};
use tns_train::{FitOptions, TrainConfig, TrainedModel, fit_model, parse_axes};

/// Options of the demo.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Trajectory regime: cv, turn, spiral or mixed.
    #[arg(long, default_value = "mixed")]
    regime: Regime,
    /// Rows of generated data (20 Hz).
    #[arg(long, default_value_t = 24_000)]
    rows: usize,
    /// Maximum training epochs per model.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Seed of the data and of the models.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Output directory (models, metrics, report, plots).
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
}

const COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];

pub fn run(args: DemoArgs) -> Result<()> {
    let start = Instant::now();
    let models_dir = args.out.join("models");
    let runs_dir = args.out.join("runs");
    for d in [&models_dir, &runs_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let data = trajectory(&TrajectoryConfig::compact(
        args.regime,
        args.rows,
        args.seed,
    ));
    let targets: Vec<String> = COLUMNS.iter().map(|s| s.to_string()).collect();
    let spec = WindowSpec::next_step(10, data.column_indices(&COLUMNS)?);
    let splits = data.windows(&spec, &SplitFractions::default())?;
    println!(
        "trajectory/{:?}: {} rows at 20 Hz → windows [10, 4] → next [x, y, vx, vy]; {} train / {} val / {} cal / {} test",
        args.regime,
        data.rows(),
        splits.train.len(),
        splits.val.len(),
        splits.cal.len(),
        splits.test.len()
    );
    let axes = parse_axes(None, &data, &targets)?;
    // Every preset with its default network, and System B over the MLP: the same gate and
    // prior around the MLP's network, to see whether the prior helps a stronger network.
    // Trajectories have no season: the seasonal-naive preset is left out.
    let presets = ModelKind::ALL
        .iter()
        .filter(|&&kind| kind != ModelKind::SeasonalNaive)
        .map(|&kind| (kind.name().to_string(), kind, None));
    let variants = [(
        "system-b-mlp".to_string(),
        ModelKind::SystemB,
        ModelKind::Mlp.default_network(),
    )];
    let configs: Vec<ModelConfig> = presets
        .chain(variants)
        .map(
            |(name, kind, network): (String, ModelKind, Option<NetworkConfig>)| {
                let mut c = ModelConfig::new(&name, kind, &COLUMNS, &COLUMNS, 10, 1, 1);
                c.kalman_axes = Some(axes.clone());
                c.seed = args.seed;
                if network.is_some() {
                    c.network = network;
                }
                c
            },
        )
        .collect();
    let options = FitOptions {
        train: TrainConfig {
            epochs: args.epochs,
            ..TrainConfig::default()
        },
        run_dir: Some(runs_dir.clone()),
        progress: true,
        ..FitOptions::default()
    };
    // Two trainings at a time (one per core), each on one thread.
    let dt = data.dt();
    let trained: Vec<Result<TrainedModel>> = std::thread::scope(|s| {
        let handles: Vec<_> = configs
            .chunks(configs.len().div_ceil(2))
            .map(|chunk| {
                let (splits, options) = (&splits, &options);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| {
                            fit_model(c, dt, splits, options)
                                .with_context(|| format!("fitting {}", c.name))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a training thread panicked"))])
            })
            .collect()
    });
    let trained = trained.into_iter().collect::<Result<Vec<_>>>()?;
    let mut engines = Vec::new();
    for m in &trained {
        let path = models_dir.join(format!("{}.tns", m.manifest.config.name));
        m.save(&path)?;
        engines.push(Engine::load(&path).with_context(|| format!("loading {}", path.display()))?);
    }
    let report = tns_eval::compare(&engines, &[&splits.test], spec.span(), None, None)?;
    report.write(&args.out.join("report"))?;
    println!("\n{}", report.table);
    if let Some(k) = trained.iter().find_map(|m| m.manifest.kalman.as_ref()) {
        let p = &k.params[0];
        println!(
            "Kalman prior fitted on train (axis x): q = {:.4}, R = ({:.3e}, {:.3e})",
            p.q,
            p.r_position,
            p.r_velocity.unwrap_or(f64::NAN)
        );
    }
    // Plots: the first 200 test windows of target x, and the loss curves.
    let n = report.forecasts[0].len().min(200);
    let pick = |name: &str| trained.iter().position(|m| m.manifest.config.name == name);
    let truth: Vec<f64> = (0..n).map(|i| splits.test.output(i)[0]).collect();
    let mut series = Vec::new();
    for name in ["kalman", "system-a", "system-b"] {
        if let Some(k) = pick(name) {
            series.push(SeriesToPlot {
                name: name.into(),
                values: report.forecasts[k][..n]
                    .iter()
                    .map(|f| f.prediction[0])
                    .collect(),
            });
        }
    }
    let b = pick("system-b").context("system-b missing")?;
    let radius = trained[b]
        .manifest
        .conformal
        .as_ref()
        .map_or(0.0, |c| c.radii[0]);
    let lower: Vec<f64> = series
        .last()
        .map(|s| s.values.iter().map(|v| v - radius).collect())
        .unwrap_or_default();
    let upper: Vec<f64> = series
        .last()
        .map(|s| s.values.iter().map(|v| v + radius).collect())
        .unwrap_or_default();
    let forecast_svg = args.out.join("forecast_x.svg");
    plot_forecasts(
        &forecast_svg,
        "next-step x on test windows: observed, Kalman prior, System A, System B with its conformal interval",
        "test window",
        &truth,
        &series,
        Some((&lower, &upper)),
    )?;
    let curves: Vec<LossCurve> = trained
        .iter()
        .filter(|m| !m.history.is_empty())
        .map(|m| LossCurve {
            name: m.manifest.config.name.clone(),
            train: m.history.iter().map(|h| h.train_loss).collect(),
            val: m.history.iter().map(|h| h.val_loss).collect(),
        })
        .collect();
    let loss_svg = args.out.join("loss.svg");
    plot_loss_curves(&loss_svg, &curves)?;
    println!(
        "\nwrote {} (models), {} (metrics, checkpoints), {}.{{md,json}}, {}, {} in {:.0} s",
        models_dir.display(),
        runs_dir.display(),
        args.out.join("report").display(),
        forecast_svg.display(),
        loss_svg.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

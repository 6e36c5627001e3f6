//! `tns backtest`: rolling-origin evaluation. The last `--test-share` of the time range is cut
//! into `--folds` consecutive test periods; for each, every model is fitted on the history
//! before the period (expanding from the first row, or a sliding window of the first fold's
//! length), with that history split 60/15/10 into train / validation / calibration, and scored
//! on the forecast origins inside the period. No training, validation or calibration target
//! lies at or after the fold's first test row.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tns_data::{Split, WindowSet};
use tns_engine::Engine;
use tns_eval::{PREDICTION_COLUMNS, ScoreContext, write_csv};
use tns_model::ModelKind;
use tns_train::fit_model;

use tns_job::{DataArgs, ModelArgs, TrainArgs};

/// How each fold's history grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Window {
    /// Everything before the fold.
    Expanding,
    /// A history as long as the first fold's, ending at the fold.
    Sliding,
}

/// Options of `tns backtest`.
#[derive(Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Models to backtest (comma-separated kinds; default: --model). Each uses --network,
    /// --lookback, --season and the other model options where they apply.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<ModelKind>>,
    #[command(flatten)]
    train: TrainArgs,
    /// Test periods.
    #[arg(long, default_value_t = 4)]
    folds: usize,
    /// Share of the time range, at its end, that the test periods cover.
    #[arg(long, default_value_t = 0.2)]
    test_share: f64,
    /// History of each fold.
    #[arg(long, value_enum, default_value = "expanding")]
    window: Window,
    /// Fit once, on the first fold's history, and score that model on every fold.
    #[arg(long)]
    no_refit: bool,
    /// Write every forecast as CSV (fold, then the columns of `tns eval --predictions`).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Write the per-fold and aggregate results as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// One model on one fold.
#[derive(Debug, Serialize)]
struct FoldResult {
    fold: usize,
    model: String,
    test_start: String,
    test_end: String,
    windows: usize,
    mae: f64,
    rmse: f64,
    coverage: Option<f64>,
}

/// Fold boundaries `[a_0, …, a_folds]` over the last `share` of `[t0, t1)`.
fn fold_starts(t0: f64, t1: f64, share: f64, folds: usize) -> Vec<f64> {
    let start = t1 - share * (t1 - t0);
    (0..=folds)
        .map(|k| start + (t1 - start) * k as f64 / folds as f64)
        .collect()
}

/// Runs `tns backtest`.
pub fn run(args: BacktestArgs) -> Result<()> {
    if args.folds == 0 || !(args.test_share > 0.0 && args.test_share < 1.0) {
        bail!("--folds must be at least 1 and --test-share lie in (0, 1)");
    }
    let inputs: Vec<&std::path::Path> = args.data.data.as_deref().into_iter().collect();
    for path in args.predictions.iter().chain(&args.report) {
        crate::outputs::check_output(path, &inputs)?;
        crate::ensure_parent(path)?;
    }
    let dataset = args.data.load()?;
    let times: Vec<f64> = dataset
        .series()
        .iter()
        .flat_map(|s| s.segments.iter().flat_map(|g| g.times.iter().copied()))
        .collect();
    let (t0, t_last) = times
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
            (a.min(t), b.max(t))
        });
    if !(t0.is_finite() && t_last > t0) {
        bail!("the data has no time range to backtest over");
    }
    let t1 = t_last + dataset.dt();
    let starts = fold_starts(t0, t1, args.test_share, args.folds);
    let kinds = args
        .models
        .clone()
        .unwrap_or_else(|| vec![args.model.model]);
    let series: Vec<String> = dataset.series().iter().map(|s| s.id.clone()).collect();
    let mut options = args.train.options(true)?;
    options.choose_gate = args.model.choose_gate();
    let mut results = Vec::new();
    let mut rows = vec![
        std::iter::once("fold".to_string())
            .chain(PREDICTION_COLUMNS.iter().map(|c| c.to_string()))
            .collect::<Vec<_>>(),
    ];
    let history = starts[0] - t0;
    let mut kept: Vec<Option<Engine>> = kinds.iter().map(|_| None).collect();
    for fold in 0..args.folds {
        let (a, b) = (starts[fold], starts[fold + 1]);
        let from = match args.window {
            Window::Expanding => t0,
            Window::Sliding => a - history,
        };
        // The history before the fold, split 60/15/10 like the default split.
        let length = a - from;
        let split = Split::Dates {
            train_start: (args.window == Window::Sliding).then_some(from),
            val_start: from + length * 60.0 / 85.0,
            cal_start: from + length * 75.0 / 85.0,
            test_start: a,
        };
        eprintln!(
            "fold {}/{}: test {} to {}; {}",
            fold + 1,
            args.folds,
            tns_data::format_time(a),
            tns_data::format_time(b),
            split.describe()
        );
        let mut engines = Vec::new();
        let mut tests: Vec<WindowSet> = Vec::new();
        for (k, &kind) in kinds.iter().enumerate() {
            let mut model_args = args.model.clone();
            model_args.model = kind;
            if !kind.is_learned() {
                // Baselines take neither a network nor known-future inputs.
                model_args.network = None;
                model_args.future.clear();
                model_args.calendar = None;
                model_args.timezone = None;
            }
            if kind.base() != tns_model::Base::KalmanPrior {
                model_args.seasons = None;
                model_args.prior_context = None;
            }
            if kind != ModelKind::SeasonalNaive {
                model_args.season = None;
            }
            let mut config = model_args.config(&dataset)?;
            if kind.is_learned() {
                args.train.apply_heads(&mut config)?;
            }
            config.name = kind.name().to_string();
            let spec = model_args.window_spec(&config, &dataset)?;
            let splits = dataset
                .windows_split(&spec, &split)
                .with_context(|| format!("fold {}: {}", fold + 1, kind.name()))?;
            let engine = match (&kept[k], args.no_refit && fold > 0) {
                (Some(engine), true) => engine.clone(),
                _ => {
                    let model = fit_model(&config, dataset.dt(), &splits, &options)?;
                    let engine = model.engine()?;
                    kept[k] = Some(engine.clone());
                    engine
                }
            };
            // Only the forecasts whose last target row lies inside this fold's period.
            let inside: Vec<usize> = (0..splits.test.len())
                .filter(|&i| {
                    let last_target = splits.test.origin(i).time
                        + dataset.dt() * (spec.lead + spec.horizon - 1) as f64;
                    last_target < b
                })
                .collect();
            tests.push(splits.test.select(&inside));
            engines.push(engine);
        }
        let tests = tns_eval::common_origins(&tests);
        if tests.first().is_none_or(WindowSet::is_empty) {
            bail!(
                "fold {} holds no complete forecast; use fewer folds or a larger --test-share",
                fold + 1
            );
        }
        let refs: Vec<&WindowSet> = tests.iter().collect();
        let context = ScoreContext {
            dt: dataset.dt(),
            lead: args.model.lead,
            series: series.clone(),
            mase_scale: None,
            adaptive_gamma: None,
        };
        let report = tns_eval::compare(&engines, &refs, 1, None, Some(&context))?;
        for r in &report.models {
            let o = r.scores.as_ref().map(|s| &s.overall);
            results.push(FoldResult {
                fold: fold + 1,
                model: r.name.clone(),
                test_start: tns_data::format_time(a),
                test_end: tns_data::format_time(b),
                windows: r.windows,
                mae: o.map_or(r.overall.mae, |o| o.mae),
                rmse: o.map_or(r.overall.rmse, |o| o.rmse),
                coverage: r.coverage,
            });
        }
        for row in report.prediction_rows(&tests[0], &series) {
            rows.push(std::iter::once((fold + 1).to_string()).chain(row).collect());
        }
    }
    let table = aggregate_table(&results, &kinds);
    println!("{table}");
    if let Some(path) = &args.predictions {
        write_csv(path, &rows)?;
    }
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "folds": args.folds,
            "test_share": args.test_share,
            "window": args.window,
            "refit": !args.no_refit,
            "results": results,
        });
        tns_data::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Per-fold MAE and the aggregate (window-weighted MAE, RMSE over all folds, mean coverage).
fn aggregate_table(results: &[FoldResult], kinds: &[ModelKind]) -> String {
    let folds = results.iter().map(|r| r.fold).max().unwrap_or(0);
    let mut s = String::from("| model |");
    for f in 1..=folds {
        s.push_str(&format!(" fold {f} MAE |"));
    }
    s.push_str(" all folds MAE | RMSE | coverage |\n|---|");
    s.push_str(&"---:|".repeat(folds + 3));
    s.push('\n');
    for kind in kinds {
        let mine: Vec<&FoldResult> = results.iter().filter(|r| r.model == kind.name()).collect();
        let n: usize = mine.iter().map(|r| r.windows).sum();
        let weight = |f: &dyn Fn(&FoldResult) -> f64| {
            mine.iter().map(|r| f(r) * r.windows as f64).sum::<f64>() / n.max(1) as f64
        };
        s.push_str(&format!("| {} |", kind.name()));
        for r in &mine {
            s.push_str(&format!(" {:.4} |", r.mae));
        }
        let coverage = mine
            .iter()
            .all(|r| r.coverage.is_some())
            .then(|| weight(&|r| r.coverage.unwrap_or(0.0)));
        s.push_str(&format!(
            " {:.4} | {:.4} | {} |\n",
            weight(&|r| r.mae),
            weight(&|r| r.rmse * r.rmse).sqrt(),
            coverage.map_or("—".into(), |c| format!("{:.1}%", 100.0 * c))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_tile_the_end_of_the_range() {
        let s = fold_starts(0.0, 100.0, 0.2, 4);
        assert_eq!(s, vec![80.0, 85.0, 90.0, 95.0, 100.0]);
    }
}

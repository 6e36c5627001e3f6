//! `tns lr-find`: the learning-rate range test ([`tns_train::lr_find`]) for a model described
//! as `tns train` would train it, with its curve as CSV and SVG.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tns_eval::SeriesToPlot;
use tns_train::{LrSweep, lr_find, prepare};

use tns_job::TrainSetup;

/// Arguments of `tns lr-find`.
#[derive(Args)]
pub struct LrFindArgs {
    #[command(flatten)]
    setup: TrainSetup,
    /// Learning rate of the first step.
    #[arg(long, default_value_t = 1e-6)]
    start: f64,
    /// Learning rate of the last step.
    #[arg(long, default_value_t = 1.0)]
    end: f64,
    /// Steps of the sweep (one batch each).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Write the curve here (CSV: lr, loss, smoothed).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Plot the curve here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Runs `tns lr-find`.
pub fn run(args: LrFindArgs) -> Result<()> {
    let inputs: Vec<_> = args.setup.data.data.as_deref().into_iter().collect();
    for path in args.csv.iter().chain(&args.plot) {
        crate::outputs::check_output(path, &inputs)?;
        crate::ensure_parent(path)?;
    }
    let dataset = args.setup.data.load()?;
    let config = args.setup.model.config(&dataset)?;
    if config.network.is_none() {
        bail!(
            "a {} model has no network to train: the range test needs a learned kind",
            config.kind.name()
        );
    }
    if args.setup.train.quantile_heads {
        bail!(
            "the range test measures the point forecast's loss: it does not train quantile heads; run it without --quantile-heads"
        );
    }
    let split = args.setup.data.split()?.unwrap_or_default();
    let window = args.setup.model.window_spec(&config, &dataset)?;
    let splits = dataset.windows_split(&window, &split)?;
    let options = args.setup.train.options(false)?;
    let prepared = prepare(&config, dataset.dt(), &splits)?;
    let sweep = LrSweep {
        start: args.start,
        end: args.end,
        steps: args.steps,
    };
    let found = lr_find(
        &config,
        &prepared.train,
        &options.train,
        sweep,
        &options.device,
    )?;
    let fmt = |lr: Option<f64>| lr.map_or("none".to_string(), |v| format!("{v:.3e}"));
    println!(
        "{} steps from {:.1e}{}: lowest smoothed loss at lr {}; suggested --lr {}",
        found.points.len(),
        args.start,
        if found.diverged {
            " until the loss diverged"
        } else {
            ""
        },
        fmt(found.lowest),
        fmt(found.suggestion)
    );
    if let Some(path) = &args.csv {
        let mut text = String::from("lr,loss,smoothed\n");
        for p in &found.points {
            text.push_str(&format!("{},{},{}\n", p.lr, p.loss, p.smoothed));
        }
        tns_data::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let xs: Vec<f64> = found.points.iter().map(|p| p.lr.log10()).collect();
        let line = |name: &str, f: fn(&tns_train::LrPoint) -> f64| SeriesToPlot {
            name: name.into(),
            values: found.points.iter().map(f).collect(),
        };
        tns_eval::plot_lines(
            path,
            &format!(
                "{}: learning-rate range test (suggested lr {})",
                config.name,
                fmt(found.suggestion)
            ),
            ("log10 learning rate", "training loss (normalized MSE)"),
            &xs,
            &[
                line("batch loss", |p| p.loss),
                line("smoothed", |p| p.smoothed),
            ],
            None,
        )?;
    }
    Ok(())
}

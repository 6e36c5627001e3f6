//! `tns calibrate`: recalibrates a trained model's conformal interval on its calibration
//! split (another method, level or window) without retraining it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tns_engine::Engine;
use tns_format::{load_model, save_model};

use tns_job::{DataArgs, IntervalGroups, IntervalScores, spec_for};

/// Arguments of `tns calibrate`.
#[derive(Args)]
pub struct CalibrateArgs {
    /// The model file.
    model: PathBuf,
    /// Conformal scores: `split` or `normalized` (see `tns train --interval`).
    #[arg(long, value_enum)]
    interval: IntervalScores,
    /// Rows the normalized interval's volatility reads (default: the whole lookback).
    #[arg(long)]
    interval_rows: Option<usize>,
    /// Also calibrate per group: `hour` (see `tns train --interval-by`).
    #[arg(long, value_enum)]
    interval_by: Option<IntervalGroups>,
    /// Miscoverage (default: the model's).
    #[arg(long)]
    alpha: Option<f64>,
    /// Name of the recalibrated model (default: the model's).
    #[arg(long)]
    name: Option<String>,
    /// Output model file (never the input).
    #[arg(short, long)]
    output: PathBuf,
    /// The data the model was trained on: its calibration split calibrates.
    #[command(flatten)]
    data: DataArgs,
}

/// Runs `tns calibrate`.
pub fn run(args: CalibrateArgs) -> Result<()> {
    let rows = args.interval.normalized_rows(args.interval_rows)?;
    let mut inputs = vec![args.model.as_path()];
    inputs.extend(args.data.data.as_deref());
    crate::outputs::check_output(&args.output, &inputs)?;
    let (mut manifest, tensors) =
        load_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let alpha = match (args.alpha, &manifest.conformal) {
        (Some(a), _) => a,
        (None, Some(c)) => c.alpha,
        (None, None) => 0.1,
    };
    if !(alpha > 0.0 && alpha < 1.0) {
        bail!("--alpha must lie in (0, 1), got {alpha}");
    }
    let data = args.data.for_model(&manifest);
    let dataset = data.load()?;
    let spec = spec_for(&manifest, &dataset)?;
    let splits = dataset.windows_split(&spec, &data.split_for(&manifest)?)?;
    let engine = Engine::new(manifest.clone(), &tensors)?;
    let by_hour = args.interval_by == Some(IntervalGroups::Hour);
    let calibration = engine.calibrate(
        alpha,
        rows,
        by_hour,
        &splits.cal.inputs(),
        splits.cal.outputs(),
    )?;
    println!(
        "{}: {} interval at α {alpha} on {} calibration windows (was {})",
        manifest.config.name,
        calibration.method(),
        calibration.n_calibration,
        manifest
            .conformal
            .as_ref()
            .map_or_else(|| "uncalibrated".to_string(), |c| c.method()),
    );
    manifest.conformal = Some(calibration);
    if let Some(name) = args.name {
        manifest.config.name = name;
    }
    save_model(&args.output, &manifest, &tensors)
        .with_context(|| format!("writing {}", args.output.display()))?;
    // The written file must load on the engine before success is reported.
    Engine::load(&args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

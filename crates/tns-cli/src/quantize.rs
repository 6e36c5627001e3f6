//! `tns quantize`: the command-line edge of [`tns_eval::quantize_with_report`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tns_engine::Engine;
use tns_eval::{quantize_with_report, summary};
use tns_format::{load_model, save_model};

use tns_job::{DataArgs, spec_for};

/// Arguments of `tns quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The f32 model file.
    model: PathBuf,
    /// Quantize the weights to INT8 (per output channel, symmetric). Required: the only
    /// scheme so far, named so that scripts keep working when others arrive.
    #[arg(long, required = true)]
    int8: bool,
    /// Output model file.
    #[arg(short, long)]
    output: PathBuf,
    /// The data the model was trained on (its calibration split recalibrates the conformal
    /// radii; its test split measures the accuracy change).
    #[command(flatten)]
    data: DataArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Runs `tns quantize`.
pub fn run(args: QuantizeArgs) -> Result<()> {
    debug_assert!(args.int8, "clap requires --int8");
    let mut inputs = vec![args.model.as_path()];
    inputs.extend(args.data.data.as_deref());
    crate::outputs::check_output(&args.output, &inputs)?;
    let (manifest, tensors) =
        load_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let data = args.data.for_model(&manifest);
    let dataset = data.load()?;
    let spec = spec_for(&manifest, &dataset)?;
    let splits = dataset.windows_split(&spec, &data.split_for(&manifest)?)?;
    let (int8_manifest, int8_tensors, report) = quantize_with_report(
        &manifest,
        &tensors,
        &splits,
        spec.span().div_ceil(spec.origin_every),
    )?;
    save_model(&args.output, &int8_manifest, &int8_tensors)
        .with_context(|| format!("writing {}", args.output.display()))?;
    // Check the written file loads on the engine before reporting success.
    Arc::new(Engine::load(&args.output)?);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!("{}", summary(&report));
    println!(
        "files: {} {} bytes → {} {} bytes",
        args.model.display(),
        size(&args.model),
        args.output.display(),
        size(&args.output)
    );
    if let Some(path) = &args.report {
        tns_data::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

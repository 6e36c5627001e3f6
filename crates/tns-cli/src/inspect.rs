//! `tns inspect`: what a model file holds, for humans or as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use tns_format::load_model;

/// Options of `tns inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model file.
    model: PathBuf,
    /// Print JSON (the manifest plus sizes and the tensor list) instead of text.
    #[arg(long)]
    json: bool,
}

/// Names of the future block's columns (none without future inputs).
fn future_names(c: &tns_model::ModelConfig) -> Vec<String> {
    c.future.as_ref().map_or_else(Vec::new, |f| f.names())
}

pub fn run(args: InspectArgs) -> Result<()> {
    let (m, tensors) =
        load_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let bytes = std::fs::metadata(&args.model)?.len();
    let c = &m.config;
    let parameters = c.parameter_count();
    if args.json {
        let report = json!({
            "file": args.model.display().to_string(),
            "file_bytes": bytes,
            "parameter_count": parameters,
            "macs": c.macs(),
            "layers": c.layers()?.iter().map(|l| json!({
                "name": l.name,
                "type": l.layer.type_name(),
                "input": l.input.to_string(),
                "output": l.output.to_string(),
                "parameters": l.parameter_count(),
                "blocks": l.nhits_blocks().iter().map(|b| json!({
                    "name": b.prefix,
                    "pool": b.pool,
                    "window_rows": b.window_rows,
                    "future_rows": b.future_rows,
                    "knots": b.knots,
                    "backcast": b.backcast,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "tensors": tensors.iter().map(|t| json!({"name": t.name, "shape": t.shape})).collect::<Vec<_>>(),
            "manifest": m,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut s = String::new();
    writeln!(s, "file         {} ({bytes} bytes)", args.model.display())?;
    writeln!(
        s,
        "format       {} v{} (written by tns {})",
        m.format, m.format_version, m.tns_version
    )?;
    writeln!(s, "model        {} (kind {})", c.name, c.kind.name())?;
    writeln!(
        s,
        "shape        [{}, {}] → [{}, {}], lead {}",
        c.lookback,
        c.features.len(),
        c.horizon,
        c.targets.len(),
        c.lead
    )?;
    writeln!(s, "features     {}", c.features.join(", "))?;
    writeln!(s, "targets      {}", c.targets.join(", "))?;
    if let Some(future) = &c.future {
        let calendar = future.calendar.as_ref().map_or(String::new(), |cal| {
            format!(
                "; calendar {} ({}, rows {} s apart)",
                cal.columns().join(", "),
                cal.timezone.as_deref().unwrap_or("times as written"),
                cal.step
            )
        });
        writeln!(
            s,
            "future       [{}, {}]: covariates {}{calendar}",
            c.horizon,
            future.width(),
            if future.columns.is_empty() {
                "none".to_string()
            } else {
                future.columns.join(", ")
            }
        )?;
    }
    let network = c
        .network
        .as_ref()
        .map_or("none".to_string(), ToString::to_string);
    writeln!(
        s,
        "network      {network}, {parameters} parameters, {} MACs, seed {}",
        c.macs(),
        c.seed
    )?;
    if let Some(q) = c.quantile_heads {
        writeln!(
            s,
            "  heads      point, quantile {} and quantile {} per step and target (output [{}, 3, {}]; pinball loss; conformalized quantile regression)",
            q.lower,
            q.upper,
            c.horizon,
            c.targets.len()
        )?;
    }
    for layer in c.layers()? {
        writeln!(
            s,
            "  layer      {} ({}): {} → {}",
            layer.name,
            layer.layer.type_name(),
            layer.input,
            layer.output
        )?;
        for b in layer.nhits_blocks() {
            writeln!(
                s,
                "    block    {}: max-pool {} rows → {} window + {} future rows, {} knots per target{}",
                b.prefix,
                b.pool,
                b.window_rows,
                b.future_rows,
                b.knots,
                if b.backcast { ", backcast" } else { "" }
            )?;
        }
    }
    for t in &tensors {
        writeln!(s, "  tensor     {} {:?}", t.name, t.shape)?;
    }
    let n = &m.normalization;
    for (i, f) in c.features.iter().enumerate() {
        writeln!(
            s,
            "normalize    {f}: {} / {:.6e}",
            // The loader checked every length against the description; `get` keeps a
            // display from panicking all the same.
            if n.relative.get(i).copied().unwrap_or_default() {
                "(x − last row)".to_string()
            } else {
                format!("(x − {:.6e})", n.mean.get(i).copied().unwrap_or(f64::NAN))
            },
            n.std.get(i).copied().unwrap_or(f64::NAN)
        )?;
    }
    for (i, name) in future_names(c).iter().enumerate() {
        writeln!(
            s,
            "normalize    future {name}: (x − {:.6e}) / {:.6e}",
            n.future_mean.get(i).copied().unwrap_or(f64::NAN),
            n.future_std.get(i).copied().unwrap_or(f64::NAN)
        )?;
    }
    writeln!(s, "residual     scale {:?}", m.residual_scale)?;
    if let (Some(k), Some(spec)) = (&m.kalman, &c.structural) {
        let seasons: Vec<String> = spec
            .seasons
            .iter()
            .map(|x| format!("{}:{}", x.period, x.harmonics))
            .collect();
        writeln!(
            s,
            "prior        structural: {:?} trend, seasons {}{}",
            spec.trend,
            seasons.join(", "),
            if spec.regressors.is_empty() {
                String::new()
            } else {
                format!(", regression on {}", spec.regressors.join(", "))
            }
        )?;
        for (target, p) in c.targets.iter().zip(&k.structural) {
            writeln!(
                s,
                "  target     {target}: variances level {:.4e}{}, seasonal {:?}, observation {:.4e}{}; log-likelihood {:.2}",
                p.level,
                p.slope
                    .map(|v| format!(", slope {v:.4e}"))
                    .unwrap_or_default()
                    + &p.damping
                        .map(|phi| format!(" (damping φ {phi:.4e})"))
                        .unwrap_or_default(),
                p.seasonal,
                p.observation,
                if p.regression.is_empty() {
                    String::new()
                } else {
                    format!("; β {:?}", p.regression)
                },
                p.log_likelihood
            )?;
        }
    } else if let Some(k) = &m.kalman {
        writeln!(s, "kalman       dt {}", k.spec.dt)?;
        for (axis, p) in k.spec.axes.iter().zip(&k.params) {
            writeln!(
                s,
                "  axis       position {}{}: q {:.6e}, R position {:.6e}{}",
                feature_name(&c.features, axis.position),
                axis.velocity
                    .map(|v| format!(", velocity {}", feature_name(&c.features, v)))
                    .unwrap_or_default(),
                p.q,
                p.r_position,
                p.r_velocity
                    .map(|r| format!(", R velocity {r:.6e}"))
                    .unwrap_or_default()
            )?;
        }
    }
    if let Some(g) = &c.gate {
        writeln!(s, "gate         α {} ({:?})", g.alpha, g.mode)?;
    }
    if let Some(q) = &m.quantization {
        writeln!(
            s,
            "quantized    {:?}: {} (I8 codes, f16 row scales; biases f32)",
            q.scheme,
            q.weights.join(", ")
        )?;
    }
    match &m.conformal {
        Some(cal) => {
            let scores = match &cal.scale {
                tns_certify::ScoreScale::Absolute => String::new(),
                tns_certify::ScoreScale::WindowVolatility { rows, floor } => format!(
                    " (in units of the window_volatility over the last {rows} rows, floor {floor:?})"
                ),
            };
            writeln!(
                s,
                "conformal    {}, α {}, {} calibration windows, radii {:?}{scores}",
                cal.method(),
                cal.alpha,
                cal.n_calibration,
                cal.radii
            )?;
            if let Some(by_hour) = &cal.by_hour {
                let width = cal.radii.len().max(1);
                for (hour, (radii, counts)) in by_hour
                    .radii
                    .chunks(width)
                    .zip(by_hour.counts.chunks(width))
                    .enumerate()
                {
                    writeln!(
                        s,
                        "  hour {hour:02}    radii {radii:?} from {counts:?} windows"
                    )?;
                }
            }
        }
        None => writeln!(s, "conformal    none")?,
    }
    if let Some(t) = &m.training {
        writeln!(
            s,
            "training     {} epochs (best {}, validation loss {:.6}), {} train / {} validation windows, {:.1} s, {}",
            t.epochs_run,
            t.best_epoch,
            t.best_val_loss,
            t.train_windows,
            t.val_windows,
            t.seconds,
            t.optimizer
        )?;
    }
    writeln!(
        s,
        "sha256       {} (whole model: manifest and tensors; {})",
        m.sha256(),
        if m.sha256_recomputed() {
            "recomputed on load: this file predates whole-model checksums and stores only the tensors' checksum, which was verified"
        } else {
            "verified on load"
        }
    )?;
    writeln!(
        s,
        "tensors      sha256 {} (verified on load)",
        m.tensors_sha256
    )?;
    print!("{s}");
    Ok(())
}

/// A feature's name, or its index when it has none (a display never panics).
fn feature_name(features: &[String], index: usize) -> String {
    features
        .get(index)
        .cloned()
        .unwrap_or_else(|| format!("#{index}"))
}

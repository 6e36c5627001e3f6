//! `tns bench-inputs`: the native engine's single-window latency on given model inputs (the
//! windows the WASM build is timed on in `web/test`), for the same model file, so that the
//! browser, Node and native figures sit side by side.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tns_data::write_atomic;
use tns_engine::{Engine, Predictor};

use crate::{Percentiles, percentiles};

/// Options of `tns bench-inputs`.
#[derive(Args, Debug)]
pub struct InputsArgs {
    /// Model file.
    model: PathBuf,
    /// JSON `{"inputs": [{"window": [[…], …], "future": [[…], …] or null, "time": seconds or
    /// ISO-8601 or null}, …]}`: the inputs, cycled through.
    #[arg(long)]
    inputs: PathBuf,
    /// Timed calls (after a tenth as many untimed ones).
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Deserialize)]
struct InputsFile {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    window: Vec<Vec<f64>>,
    future: Option<Vec<Vec<f64>>>,
    time: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct InputsRun {
    model: String,
    isa: &'static str,
    calls: usize,
    distinct_inputs: usize,
    /// `Predictor::predict` (µs per call).
    forecast: Percentiles,
    /// `predict` and the certificate it is given with (µs per call).
    predict_with_certificate: Percentiles,
}

/// Runs `tns bench-inputs`.
pub fn inputs(args: InputsArgs) -> Result<()> {
    let engine = Arc::new(
        Engine::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?,
    );
    let text = std::fs::read_to_string(&args.inputs)
        .with_context(|| format!("reading {}", args.inputs.display()))?;
    let file: InputsFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an inputs file", args.inputs.display()))?;
    if file.inputs.is_empty() || args.calls == 0 {
        bail!("give at least one input and one call");
    }
    let pipeline = engine.pipeline();
    let inputs: Vec<Vec<f64>> = file
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let time = match &input.time {
                None | Some(serde_json::Value::Null) => None,
                Some(t) => Some(
                    tns_data::json_time(t)
                        .with_context(|| format!("input {i}: time {t} is not a time"))?,
                ),
            };
            let future = input.future.as_ref().map(|rows| rows.concat());
            pipeline
                .assemble(&input.window.concat(), future.as_deref(), time)
                .with_context(|| format!("input {i}"))
        })
        .collect::<Result<_>>()?;
    let mut predictor = Predictor::new(engine.clone());
    let warmup = (args.calls / 10).max(1);
    let mut time_calls = |with_certificate: bool| -> Result<Percentiles> {
        let mut lat = Vec::with_capacity(args.calls);
        for k in 0..warmup + args.calls {
            let input = black_box(&inputs[k % inputs.len()]);
            let start = Instant::now();
            let p = predictor.predict(input)?;
            if with_certificate {
                black_box(engine.certificate(p));
            } else {
                black_box(p);
            }
            let ns = start.elapsed().as_nanos() as f64;
            if k >= warmup {
                lat.push(ns / 1e3);
            }
        }
        Ok(percentiles(&lat))
    };
    let forecast = time_calls(false)?;
    let predict_with_certificate = time_calls(true)?;
    let run = InputsRun {
        model: engine.manifest().config.name.clone(),
        isa: engine.isa().name(),
        calls: args.calls,
        distinct_inputs: inputs.len(),
        forecast,
        predict_with_certificate,
    };
    write_atomic(&args.out, serde_json::to_string_pretty(&run)?.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{}: forecast P50 {:.2} µs, with certificate P50 {:.2} µs",
        run.model, run.forecast.p50, run.predict_with_certificate.p50
    );
    Ok(())
}

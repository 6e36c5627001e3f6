//! Reading one model input for `tns predict -i`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tns_data::{CsvOptions, json_time, load_csv};

/// Largest file `tns predict -i` reads (16 MiB).
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Reads one model input from JSON (`{"window": [[…], …], "future": [[…], …], "time": …}`)
/// or CSV (its last `lookback` rows; models without known-future inputs only) and assembles
/// it as the engine takes it: the window, then the future block (covariates and calendar).
pub fn read_input(path: &Path, engine: &tns_engine::Engine) -> Result<Vec<f64>> {
    let manifest = engine.manifest();
    let pipeline = engine.pipeline();
    let config = &manifest.config;
    // One model input is small: a device, a FIFO or a large file is a wrong path (a whole
    // file is scored, streaming, by `tns predict --data`).
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_INPUT_BYTES {
        bail!(
            "{} is {} bytes; `-i` takes one model input (at most {MAX_INPUT_BYTES} bytes). To forecast along a whole file, use `tns predict MODEL --data FILE -o FORECASTS.csv`, which streams it",
            path.display(),
            meta.len()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (l, f) = (config.lookback, config.features.len());
    let future_names = pipeline.future_columns();
    type Rows = Vec<Vec<f64>>;
    let (rows, future, time): (Rows, Option<Rows>, Option<f64>) = if text
        .trim_start()
        .starts_with(['{', '['])
    {
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let rows = value.get("window").unwrap_or(&value);
        let rows = serde_json::from_value(rows.clone()).with_context(|| {
            format!(
                "{}: expected {{\"window\": [[{f} numbers], … {l} rows]}}",
                path.display()
            )
        })?;
        let future = value
            .get("future")
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .with_context(|| {
                format!(
                    "{}: \"future\" must be {} rows of {} numbers ({:?})",
                    path.display(),
                    config.horizon,
                    future_names.len(),
                    future_names
                )
            })?;
        let time = match value.get("time") {
            None => None,
            Some(t) => Some(json_time(t).with_context(|| {
                format!(
                    "{}: \"time\" {t} is neither seconds since 1970 nor an ISO-8601 date-time",
                    path.display()
                )
            })?),
        };
        (rows, future, time)
    } else {
        if pipeline.future_width() > 0 {
            bail!(
                "{}: model {} takes known-future inputs {:?}; give a JSON input {{\"window\": …, \"future\": …, \"time\": …}}, or score a data file with --data",
                path.display(),
                config.name,
                pipeline.future_names()
            );
        }
        // The model's time column, when the file has it, is read and checked like training
        // data: times must parse and strictly increase, or the rows are not a window.
        let header = text.lines().next().unwrap_or_default();
        let time_column = manifest
            .data
            .as_ref()
            .and_then(|d| d.time_column.clone())
            .filter(|t| header.split(',').any(|h| h.trim().trim_matches('"') == t));
        let data = load_csv(
            path,
            &CsvOptions {
                time_column,
                features: Some(config.features.clone()),
                categorical: manifest
                    .data
                    .as_ref()
                    .map(|d| d.categorical.clone())
                    .unwrap_or_default(),
                ..Default::default()
            },
        )?;
        let seg = data
            .series()
            .last()
            .and_then(|s| s.segments.last())
            .context("empty CSV")?;
        (
            seg.values.chunks(f).map(<[f64]>::to_vec).collect(),
            None,
            None,
        )
    };
    if rows.len() < l {
        bail!(
            "{}: {} rows given, the model needs the last {l}",
            path.display(),
            rows.len()
        );
    }
    let mut window = Vec::with_capacity(l * f);
    for (i, row) in rows[rows.len() - l..].iter().enumerate() {
        if row.len() != f {
            bail!(
                "{}: row {} has {} values, the model has {f} features {:?}",
                path.display(),
                i + 1,
                row.len(),
                config.features
            );
        }
        window.extend_from_slice(row);
    }
    let future: Option<Vec<f64>> = future.map(|rows| rows.concat());
    pipeline
        .assemble(&window, future.as_deref(), time)
        .with_context(|| format!("{}", path.display()))
}

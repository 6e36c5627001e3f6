//! `tns predict MODEL --data F --output P`: batch scoring of a large CSV, streaming.
//!
//! Rows are read one at a time; each series keeps only its last `lookback` rows (for a model
//! with known-future inputs, `lookback + lead + horizon − 1`: the covariates of the predicted
//! rows are read from the file, so a forecast is issued once they have been read), so memory
//! is bounded by `series × span × features` whatever the file's size. A forecast is issued at
//! every origin whose rows are complete and do not span a gap (a step longer than 1.5× the
//! model's sampling interval), every `--origin-every` rows. Forecasts go to `P.partial` as
//! they are made and the file is renamed to `P` at the end; after an interruption the same
//! command resumes from `P.partial`, skipping the origins it already holds.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tns_engine::{Engine, RowScorer};

/// Scores `data` with the model in `engine`, writing forecasts to `output`.
pub fn run(engine: Arc<Engine>, data: &Path, output: &Path, origin_every: usize) -> Result<()> {
    let manifest = engine.manifest();
    let config = &manifest.config;
    let spec = manifest.data.as_ref();
    let time_column = spec.and_then(|d| d.time_column.clone());
    let series_column = spec.and_then(|d| d.series_column.clone());
    let series_filter = spec.and_then(|d| d.series.clone());
    // A device or a FIFO would stream forever: only regular files are scored.
    if !std::fs::metadata(data)
        .with_context(|| format!("reading {}", data.display()))?
        .is_file()
    {
        bail!("{} is not a regular file", data.display());
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(data)
        .with_context(|| format!("reading {}", data.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
    let find = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{} has no column {name:?} (the model needs {:?})",
                data.display(),
                config.features
            )
        })
    };
    // Each feature: a column, or a one-hot `COLUMN=value` of a categorical column.
    let categorical = spec.map(|d| d.categorical.clone()).unwrap_or_default();
    let features: Vec<(usize, Option<String>)> = config
        .features
        .iter()
        .map(|f| match f.split_once('=') {
            Some((column, value)) if categorical.iter().any(|c| c == column) => {
                Ok((find(column)?, Some(value.to_string())))
            }
            _ => Ok((find(f)?, None)),
        })
        .collect::<Result<_>>()?;
    let time = time_column.as_deref().map(find).transpose()?;
    let series_col = series_column.as_deref().map(find).transpose()?;

    let partial = PathBuf::from(format!("{}.partial", output.display()));
    let resumed = resume(&partial)?;
    let fresh = resumed.is_empty();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    // csv's writer buffers and quotes fields (series names may hold commas).
    let mut out = csv::Writer::from_writer(file);
    if fresh {
        out.write_record([
            "series",
            "origin_time",
            "step",
            "target",
            "prediction",
            "lower",
            "upper",
        ])?;
    }
    let mut scorer = RowScorer::new(engine.clone(), origin_every)?;
    let (mut rows, mut written) = (0u64, 0u64);
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        rows += 1;
        let line = record.position().map_or(rows + 1, |p| p.line());
        let id = series_col.map_or("main", |c| &record[c]).to_string();
        if series_filter.as_ref().is_some_and(|want| *want != id) {
            continue;
        }
        let t = match time {
            Some(c) => tns_data::parse_timestamp(&record[c]).with_context(|| {
                format!(
                    "{} row {line}: time {:?} is not a time",
                    data.display(),
                    &record[c]
                )
            })?,
            None => rows as f64,
        };
        let values: Vec<f64> = features
            .iter()
            .map(|(c, one_hot)| {
                let c = *c;
                if let Some(value) = one_hot {
                    return Ok(f64::from(u8::from(&record[c] == value)));
                }
                tns_data::parse_cell(&record[c])
                    .filter(|v| v.is_finite())
                    .with_context(|| {
                        format!(
                            "{} row {line}, column {:?}: {:?} is not a finite number",
                            data.display(),
                            header[c],
                            &record[c]
                        )
                    })
            })
            .collect::<Result<_>>()?;
        let Some((t, p)) = scorer
            .push(&id, t, &values)
            .with_context(|| format!("{} row {line}", data.display()))?
        else {
            continue;
        };
        if resumed.get(&id).is_some_and(|&w| t <= w) {
            continue; // written before the interruption
        }
        let targets = config.targets.len();
        let origin = tns_data::format_time(t);
        for (k, value) in p.values().iter().enumerate() {
            let (lower, upper) = p
                .interval()
                .map_or((String::new(), String::new()), |(l, u)| {
                    (l[k].to_string(), u[k].to_string())
                });
            out.write_record([
                id.as_str(),
                &origin,
                &(k / targets + 1).to_string(),
                &config.targets[k % targets],
                &value.to_string(),
                &lower,
                &upper,
            ])?;
        }
        written += 1;
        if written % 10_000 == 0 {
            eprintln!("{rows} rows read, {written} forecasts written");
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&partial, output)
        .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    eprintln!(
        "{rows} rows read, {written} forecasts written to {}{}",
        output.display(),
        if fresh { "" } else { " (resumed)" }
    );
    Ok(())
}

/// The last origin time written per series in an interrupted run's `P.partial` (empty if
/// there is none), read line by line. A torn last line (where the run was interrupted) is cut
/// off so that appending continues on a fresh line.
fn resume(partial: &Path) -> Result<HashMap<String, f64>> {
    let mut last = HashMap::new();
    let Ok(file) = std::fs::File::open(partial) else {
        return Ok(last);
    };
    let mut reader = std::io::BufReader::new(file);
    let (mut line, mut complete, mut header) = (Vec::new(), 0u64, true);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        complete += n as u64;
        if std::mem::take(&mut header) {
            continue;
        }
        let mut fields = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_slice());
        if let Some(Ok(record)) = fields.records().next()
            && let (Some(series), Some(t)) = (record.get(0), record.get(1))
            && let Some(t) = tns_data::parse_timestamp(t)
        {
            last.insert(series.to_string(), t);
        }
    }
    let file = std::fs::OpenOptions::new().write(true).open(partial)?;
    if file.metadata()?.len() > complete {
        file.set_len(complete)?;
    }
    Ok(last)
}

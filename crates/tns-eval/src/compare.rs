//! Comparing models on the same test windows, on the inference engine.

use std::path::Path;

use serde::Serialize;
use tns_certify::ConformalCalibration;
use tns_data::WindowSet;
use tns_engine::Engine;
use tns_model::{Forecast, ModelKind};

use crate::{EvalError, ModelReport, evaluate, markdown_table, paired_bootstrap, window_errors};

/// Bootstrap resamples for the MSE-difference intervals.
const RESAMPLES: usize = 2_000;

/// A comparison of several models.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Reference model (System B when present).
    pub reference: String,
    /// Block length of the paired bootstrap.
    pub bootstrap_block: usize,
    /// One entry per model.
    pub models: Vec<ModelReport>,
    /// Markdown table.
    #[serde(skip)]
    pub table: String,
    /// Forecasts per model, in model order.
    #[serde(skip)]
    pub forecasts: Vec<Vec<Forecast>>,
    /// Conformal calibration per model, when calibrated.
    #[serde(skip)]
    pub calibrations: Vec<Option<ConformalCalibration>>,
    /// Target names, in forecast order.
    #[serde(skip)]
    pub targets: Vec<String>,
}

/// Restricts window sets built for different lookbacks to the forecast origins they all
/// share (same series, same last input row), in the first set's order. Longer lookbacks lose
/// the first origins of a series or segment, where their inputs would reach before its start.
pub fn common_origins(sets: &[WindowSet]) -> Vec<WindowSet> {
    let key = |set: &WindowSet, i: usize| {
        let o = set.origin(i);
        (o.series, o.row + set.lookback())
    };
    let keys: Vec<std::collections::HashSet<(usize, usize)>> = sets
        .iter()
        .map(|s| (0..s.len()).map(|i| key(s, i)).collect())
        .collect();
    let Some(first) = sets.first() else {
        return Vec::new();
    };
    let shared: Vec<(usize, usize)> = (0..first.len())
        .map(|i| key(first, i))
        .filter(|k| keys.iter().all(|set| set.contains(k)))
        .collect();
    sets.iter()
        .map(|s| {
            let position: std::collections::HashMap<(usize, usize), usize> =
                (0..s.len()).map(|i| (key(s, i), i)).collect();
            let indices: Vec<usize> = shared.iter().map(|k| position[k]).collect();
            s.select(&indices)
        })
        .collect()
}

impl Report {
    /// Writes `<stem>.md` and `<stem>.json`.
    pub fn write(&self, stem: &Path) -> Result<(), EvalError> {
        let md = stem.with_extension("md");
        let json = stem.with_extension("json");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EvalError::Io { path, source }
        };
        tns_data::write_atomic(&md, self.table.as_bytes()).map_err(io(&md))?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .map_err(io(&json))?;
        tns_data::write_atomic(&json, &bytes).map_err(io(&json))?;
        Ok(())
    }

    /// Writes every forecast as CSV, one row per model, window, step and target, with the
    /// header [`PREDICTION_COLUMNS`]. `test` is the window set the report was computed on,
    /// `series` the dataset's series ids.
    pub fn write_predictions(
        &self,
        path: &Path,
        test: &WindowSet,
        series: &[String],
    ) -> Result<(), EvalError> {
        let mut rows = vec![PREDICTION_COLUMNS.map(String::from).to_vec()];
        rows.extend(self.prediction_rows(test, series));
        write_csv(path, &rows)
    }

    /// The rows of [`Report::write_predictions`], without the header. The origin time is the
    /// time of the window's last input row (ISO-8601 UTC for date-times); `step` counts from
    /// 1; `lower`/`upper` are empty for uncalibrated models.
    pub fn prediction_rows(&self, test: &WindowSet, series: &[String]) -> Vec<Vec<String>> {
        let t = self.targets.len().max(1);
        let mut rows = Vec::new();
        for ((model, forecasts), calibration) in self
            .models
            .iter()
            .zip(&self.forecasts)
            .zip(&self.calibrations)
        {
            for (i, f) in forecasts.iter().enumerate() {
                let origin = test.origin(i);
                let actual = test.output(i);
                let series_id = series.get(origin.series).cloned().unwrap_or_default();
                let time = tns_data::format_time(origin.time);
                for (k, (&p, &y)) in f.prediction.iter().zip(actual).enumerate() {
                    let (lower, upper) = match calibration {
                        Some(c) => {
                            let r = f.radius(k, c.radii[k]);
                            let (lower, upper) = f.bounds(k, r, c.quantile_regression);
                            (lower.to_string(), upper.to_string())
                        }
                        None => (String::new(), String::new()),
                    };
                    rows.push(vec![
                        model.name.clone(),
                        series_id.clone(),
                        time.clone(),
                        (k / t + 1).to_string(),
                        self.targets.get(k % t).cloned().unwrap_or_default(),
                        p.to_string(),
                        lower,
                        upper,
                        y.to_string(),
                    ]);
                }
            }
        }
        rows
    }
}

impl Report {
    /// Writes three SVG plots into `dir`: `forecast.svg` (observed values and every model's
    /// forecasts of the first target over the first `points` predicted rows of the first
    /// series, with the reference model's conformal band), `error_by_step.svg` (MAE per
    /// horizon step) and, when the times are date-times and the models calibrated,
    /// `coverage_by_hour.svg` (interval coverage per hour of day of the predicted row).
    /// Returns the files written.
    pub fn plot(
        &self,
        dir: &Path,
        test: &WindowSet,
        points: usize,
    ) -> Result<Vec<std::path::PathBuf>, EvalError> {
        let reference = self
            .models
            .iter()
            .position(|m| m.name == self.reference)
            .unwrap_or(0);
        use crate::{SeriesToPlot, plot_forecasts, plot_lines};
        let plot_error = |e: crate::PlotError| EvalError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        };
        let t = self.targets.len().max(1);
        let first_series = (0..test.len())
            .map(|i| test.origin(i))
            .map(|o| o.series)
            .min();
        // Forecasts of the first target, origin after origin, until `points` values.
        let mut picked = Vec::new();
        for i in (0..test.len()).filter(|&i| Some(test.origin(i).series) == first_series) {
            for step in 0..test.horizon() {
                if picked.len() < points {
                    picked.push((i, step * t));
                }
            }
        }
        let truth: Vec<f64> = picked.iter().map(|&(i, k)| test.output(i)[k]).collect();
        let series: Vec<SeriesToPlot> = self
            .models
            .iter()
            .zip(&self.forecasts)
            .map(|(m, f)| SeriesToPlot {
                name: m.name.clone(),
                values: picked.iter().map(|&(i, k)| f[i].prediction[k]).collect(),
            })
            .collect();
        let band = self.calibrations[reference].as_ref().map(|c| {
            let forecasts = &self.forecasts[reference];
            let bounds = |&(i, k): &(usize, usize)| {
                let f = &forecasts[i];
                f.bounds(k, f.radius(k, c.radii[k]), c.quantile_regression)
            };
            picked.iter().map(bounds).unzip::<_, _, Vec<_>, Vec<_>>()
        });
        let mut written = Vec::new();
        let forecast = dir.join("forecast.svg");
        plot_forecasts(
            &forecast,
            &format!(
                "{}: observed and forecast, with {}'s interval",
                self.targets.first().map_or("target", String::as_str),
                self.reference
            ),
            "predicted row (consecutive forecasts of the first series)",
            &truth,
            &series,
            band.as_ref().map(|(l, u)| (l.as_slice(), u.as_slice())),
        )
        .map_err(plot_error)?;
        written.push(forecast);
        let steps: Vec<f64> = (1..=test.horizon()).map(|s| s as f64).collect();
        let errors: Vec<SeriesToPlot> = self
            .models
            .iter()
            .map(|m| SeriesToPlot {
                name: m.name.clone(),
                values: m.per_step.iter().map(|s| s.mae).collect(),
            })
            .collect();
        let error = dir.join("error_by_step.svg");
        plot_lines(
            &error,
            "MAE by horizon step",
            ("step", "MAE"),
            &steps,
            &errors,
            None,
        )
        .map_err(plot_error)?;
        written.push(error);
        let hours: Vec<f64> = (0..24).map(f64::from).collect();
        let coverage: Vec<SeriesToPlot> = self
            .models
            .iter()
            .filter_map(|m| {
                let per_hour = &m.scores.as_ref()?.per_hour;
                let mut values = vec![f64::NAN; 24];
                for slice in per_hour {
                    let hour: usize = slice.label.trim_start_matches("hour ").parse().ok()?;
                    values[hour.min(23)] = 100.0 * slice.score.coverage?;
                }
                Some(SeriesToPlot {
                    name: m.name.clone(),
                    values,
                })
            })
            .collect();
        if let Some(nominal) = self.models[reference].nominal_coverage
            && !coverage.is_empty()
        {
            let path = dir.join("coverage_by_hour.svg");
            plot_lines(
                &path,
                "interval coverage by hour of day of the predicted row (UTC)",
                ("hour", "coverage %"),
                &hours,
                &coverage,
                Some((100.0 * nominal, "nominal")),
            )
            .map_err(plot_error)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Columns of the forecasts CSV.
pub const PREDICTION_COLUMNS: [&str; 9] = [
    "model",
    "series",
    "origin_time",
    "step",
    "target",
    "prediction",
    "lower",
    "upper",
    "actual",
];

/// Writes rows (header first) as CSV, atomically.
pub fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<(), EvalError> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows {
        out.write_record(row).map_err(|e| io(e.into()))?;
    }
    let bytes = out.into_inner().map_err(|e| io(e.into_error()))?;
    tns_data::write_atomic(path, &bytes).map_err(io)
}

/// Evaluates every model on its test windows and compares each with the reference
/// (`reference`, or else the first System B model, or else the first model) by a paired
/// block bootstrap (blocks of `block` consecutive windows: the span of one window, so blocks
/// cover the overlap that correlates neighbouring errors).
///
/// `tests` holds one window set per model, or one for all. Models with different lookbacks
/// read different inputs, so each has its own set; the sets must hold the same forecast
/// origins in the same order (see [`common_origins`]), hence the same targets.
pub fn compare(
    models: &[Engine],
    tests: &[&WindowSet],
    block: usize,
    reference: Option<usize>,
    context: Option<&crate::ScoreContext>,
) -> Result<Report, EvalError> {
    if models.is_empty() {
        return Err(EvalError::NoModels);
    }
    let test_of = |i: usize| tests[if tests.len() == 1 { 0 } else { i }];
    if tests.is_empty()
        || (tests.len() != 1 && tests.len() != models.len())
        || tests.iter().any(|t| t.outputs() != tests[0].outputs())
    {
        return Err(EvalError::Windows(
            "every model must be scored on the same forecast origins and targets".into(),
        ));
    }
    let test = tests[0];
    let reference = reference.filter(|&r| r < models.len()).unwrap_or_else(|| {
        models
            .iter()
            .position(|m| m.manifest().config.kind == ModelKind::SystemB)
            .unwrap_or(0)
    });
    let forecasts = models
        .iter()
        .enumerate()
        .map(|(i, m)| crate::forecasts(m, test_of(i)))
        .collect::<Result<Vec<Vec<Forecast>>, EvalError>>()?;
    let ref_errors = window_errors(&forecasts[reference], test.outputs());
    let mut reports = Vec::new();
    for (m, f) in models.iter().zip(&forecasts) {
        let c = &m.manifest().config;
        let mut r = evaluate(
            &c.name,
            c.parameter_count(),
            f,
            test.outputs(),
            c.horizon,
            m.manifest().conformal.as_ref(),
        );
        r.gate = crate::gate_effect(
            f,
            test.outputs(),
            c.targets.len(),
            c.gate.map(|g| g.mode).unwrap_or_default(),
            block,
        );
        if let Some(context) = context {
            let conformal = m.manifest().conformal.as_ref();
            r.scores = Some(crate::score(f, test, conformal.map(Into::into), context));
            if let (Some(gamma), Some(c)) = (context.adaptive_gamma, conformal) {
                r.adaptive = Some(crate::adaptive_scores(f, test, c, gamma, context)?);
            }
        }
        if !std::ptr::eq(m, &models[reference]) {
            r.mse_diff_vs_reference = Some(paired_bootstrap(
                &window_errors(f, test.outputs()),
                &ref_errors,
                block,
                RESAMPLES,
                1,
            ));
        }
        reports.push(r);
    }
    // Forecasts are finite (the engine refuses others), but a statistic of huge ones could
    // still overflow: never report one that is not a number.
    if let Some(r) = reports
        .iter()
        .find(|r| !(r.overall.mse.is_finite() && r.overall.mae.is_finite()))
    {
        return Err(EvalError::Windows(format!(
            "{}: the test error is not finite (MSE {}); its forecasts are too large to score",
            r.name, r.overall.mse
        )));
    }
    let name = models[reference].manifest().config.name.clone();
    let mut table = markdown_table(&reports, &name);
    let scored: Vec<(&str, &crate::Scores)> = reports
        .iter()
        .filter_map(|r| r.scores.as_ref().map(|s| (r.name.as_str(), s)))
        .collect();
    let gated: Vec<(&str, &crate::GateEffect)> = reports
        .iter()
        .filter_map(|r| r.gate.as_ref().map(|g| (r.name.as_str(), g)))
        .collect();
    let intervals: Vec<crate::IntervalRow<'_>> = reports
        .iter()
        .filter_map(|r| {
            Some(crate::IntervalRow {
                name: &r.name,
                nominal: r.nominal_coverage?,
                method: r.interval_method.as_deref()?,
                split: (r.scores.as_ref()?, r.mean_width?),
                adaptive: r.adaptive.as_ref()?,
            })
        })
        .collect();
    // Each further table only when some model has what it shows.
    for section in [
        (!scored.is_empty()).then(|| crate::scores_table(&scored)),
        (!gated.is_empty()).then(|| crate::gate_table(&gated)),
        (!intervals.is_empty()).then(|| crate::interval_table(&intervals)),
    ]
    .into_iter()
    .flatten()
    {
        table.push('\n');
        table.push_str(&section);
    }
    Ok(Report {
        calibrations: models
            .iter()
            .map(|m| m.manifest().conformal.clone())
            .collect(),
        targets: models[reference].manifest().config.targets.clone(),
        table,
        reference: name,
        bootstrap_block: block,
        models: reports,
        forecasts,
    })
}

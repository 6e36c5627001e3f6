//! Comparing models on the same test windows, on the inference engine.

use std::path::Path;

use serde::Serialize;
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
}

/// Evaluates every model on `test` and compares each with the reference (`reference`, or
/// else the first System B model, or else the first model) by a paired block
/// bootstrap (blocks of `block` consecutive windows: the span of one window, so blocks
/// cover the overlap that correlates neighbouring errors).
pub fn compare(
    models: &[Engine],
    test: &WindowSet,
    block: usize,
    reference: Option<usize>,
) -> Result<Report, EvalError> {
    if models.is_empty() {
        return Err(EvalError::NoModels);
    }
    let reference = reference.filter(|&r| r < models.len()).unwrap_or_else(|| {
        models
            .iter()
            .position(|m| m.manifest().config.kind == ModelKind::SystemB)
            .unwrap_or(0)
    });
    let forecasts = models
        .iter()
        .map(|m| {
            let predictions =
                m.predict_all(test.inputs())
                    .map_err(|source| EvalError::Predict {
                        model: m.manifest().config.name.clone(),
                        source,
                    })?;
            Ok(predictions.into_iter().map(|p| p.forecast).collect())
        })
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
    let name = models[reference].manifest().config.name.clone();
    Ok(Report {
        table: markdown_table(&reports, &name),
        reference: name,
        bootstrap_block: block,
        models: reports,
        forecasts,
    })
}

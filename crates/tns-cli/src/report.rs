//! Comparing models on the same test windows.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use tns_data::WindowSet;
use tns_eval::{ModelReport, evaluate, markdown_table, paired_bootstrap, window_errors};
use tns_format::{Forecast, ModelKind};
use tns_models::Forecaster;

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
    pub fn write(&self, stem: &Path) -> Result<()> {
        let md = stem.with_extension("md");
        let json = stem.with_extension("json");
        tns_data::write_atomic(&md, self.table.as_bytes())
            .with_context(|| format!("writing {}", md.display()))?;
        tns_data::write_atomic(&json, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(())
    }
}

/// Evaluates every model on `test` and compares each with the reference by a paired block
/// bootstrap (blocks of `block` consecutive windows: the span of one window, so blocks
/// cover the overlap that correlates neighbouring errors).
pub fn compare(models: &[Forecaster], test: &WindowSet, block: usize) -> Result<Report> {
    let reference = models
        .iter()
        .position(|m| m.manifest().config.kind == ModelKind::SystemB)
        .unwrap_or(0);
    let forecasts = models
        .iter()
        .map(|m| {
            m.predict(test.inputs())
                .with_context(|| format!("predicting with {}", m.manifest().config.name))
        })
        .collect::<Result<Vec<_>>>()?;
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

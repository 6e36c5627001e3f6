//! What System B's gate did on the test windows: the gated forecast against the forecast that
//! always applies the network's correction (prior + correction, which every forecast
//! carries), with a paired block bootstrap, and both errors on the steps whose correction
//! failed the test.

use serde::{Deserialize, Serialize};
use tns_certify::GateMode;
use tns_model::Forecast;

use crate::{DiffInterval, paired_bootstrap};

/// The gate's effect on one model's test forecasts (MAE in data units, over every value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEffect {
    /// What a failed step returns.
    pub mode: GateMode,
    /// MAE of the gated forecast.
    pub mae_gated: f64,
    /// MAE had the correction always been applied.
    pub mae_always_corrected: f64,
    /// `MAE(gated) − MAE(always corrected)` per window, paired block bootstrap: below zero,
    /// the gate helped.
    pub gated_minus_corrected: DiffInterval,
    /// Horizon steps (windows × horizon).
    pub steps: usize,
    /// Steps whose correction failed the test.
    pub failed_steps: usize,
    /// On the failed steps: MAE of what the gate returned and of the corrected forecast.
    pub failed_mae: Option<(f64, f64)>,
}

/// The gate's effect, for a gated model's forecasts (`None` for models without a gate).
pub fn gate_effect(
    forecasts: &[Forecast],
    truths: &[f64],
    targets: usize,
    mode: GateMode,
    block: usize,
) -> Option<GateEffect> {
    let width = forecasts.first()?.prediction.len();
    let (mut gated, mut corrected) = (Vec::new(), Vec::new());
    let (mut failed, mut failed_gated, mut failed_corrected, mut failed_values) = (0, 0.0, 0.0, 0);
    for (f, y) in forecasts.iter().zip(truths.chunks_exact(width)) {
        let (steps, correction) = (f.gate_steps.as_ref()?, f.correction.as_ref()?);
        let (mut g, mut c) = (0.0, 0.0);
        for (h, step) in steps.iter().enumerate() {
            failed += usize::from(!step.passed);
            for k in h * targets..(h + 1) * targets {
                let eg = (f.prediction[k] - y[k]).abs();
                let ec = (f.base[k] + correction[k] - y[k]).abs();
                g += eg;
                c += ec;
                if !step.passed {
                    failed_gated += eg;
                    failed_corrected += ec;
                    failed_values += 1;
                }
            }
        }
        gated.push(g / width as f64);
        corrected.push(c / width as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Some(GateEffect {
        mode,
        mae_gated: mean(&gated),
        mae_always_corrected: mean(&corrected),
        gated_minus_corrected: paired_bootstrap(&gated, &corrected, block, 2000, 3),
        steps: forecasts.len() * (width / targets.max(1)),
        failed_steps: failed,
        failed_mae: (failed_values > 0).then(|| {
            let n = failed_values as f64;
            (failed_gated / n, failed_corrected / n)
        }),
    })
}

/// The markdown table of the gated models' effects.
pub fn gate_table(rows: &[(&str, &GateEffect)]) -> String {
    let mut s = String::from(
        "| model | gate mode | MAE gated | MAE always corrected | gated − corrected [95% CI] | failed steps | on failed steps: gated / corrected |\n|---|---|---:|---:|---|---:|---|\n",
    );
    for (name, e) in rows {
        let d = e.gated_minus_corrected;
        s.push_str(&format!(
            "| {name} | {} | {:.4} | {:.4} | {:+.4} [{:+.4}, {:+.4}] | {} of {} | {} |\n",
            e.mode.name(),
            e.mae_gated,
            e.mae_always_corrected,
            d.mean,
            d.low,
            d.high,
            e.failed_steps,
            e.steps,
            e.failed_mae
                .map_or("—".to_string(), |(g, c)| format!("{g:.4} / {c:.4}"))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_certify::GateStep;

    fn step(passed: bool) -> GateStep {
        GateStep {
            statistic: if passed { 1.0 } else { 100.0 },
            passed,
            applied_scale: if passed { 1.0 } else { 0.0 },
            residual_norm: 0.0,
        }
    }

    #[test]
    fn gated_and_corrected_errors_are_counted_where_the_test_failed() {
        // Two windows, one step, one target: the first passes (gated = corrected), the second
        // fails and falls back to the base 0 while the correction would have hit 1 exactly.
        let forecasts = vec![
            Forecast {
                prediction: vec![2.0],
                base: vec![1.0],
                covariance: Some(vec![1.0]),
                correction: Some(vec![1.0]),
                gate_steps: Some(vec![step(true)]),
                interval_scale: Vec::new(),
                step_hours: Vec::new(),
                interval_radii: Vec::new(),
                quantile_lower: Vec::new(),
                quantile_upper: Vec::new(),
            },
            Forecast {
                prediction: vec![0.0],
                base: vec![0.0],
                covariance: Some(vec![1.0]),
                correction: Some(vec![1.0]),
                gate_steps: Some(vec![step(false)]),
                interval_scale: Vec::new(),
                step_hours: Vec::new(),
                interval_radii: Vec::new(),
                quantile_lower: Vec::new(),
                quantile_upper: Vec::new(),
            },
        ];
        let e = gate_effect(&forecasts, &[2.5, 1.0], 1, GateMode::Reject, 1).unwrap();
        assert_eq!((e.mae_gated, e.mae_always_corrected), (0.75, 0.25));
        assert_eq!((e.failed_steps, e.steps), (1, 2));
        assert_eq!(e.failed_mae, Some((1.0, 0.0)));
        assert!(gate_table(&[("b", &e)]).contains("| b | reject | 0.7500 | 0.2500 |"));
        let ungated = Forecast {
            gate_steps: None,
            interval_scale: Vec::new(),
            step_hours: Vec::new(),
            interval_radii: Vec::new(),
            ..forecasts[0].clone()
        };
        assert!(gate_effect(&[ungated], &[1.0], 1, GateMode::Reject, 1).is_none());
    }
}

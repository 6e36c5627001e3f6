use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tns_certify::ConformalCalibration;
use tns_model::Forecast;

/// Errors of one horizon step (over all targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
}

/// A paired-bootstrap interval of `mean(err_model − err_reference)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffInterval {
    /// Observed mean difference.
    pub mean: f64,
    /// 2.5th percentile of the bootstrap distribution.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
}

impl DiffInterval {
    /// True when the interval excludes zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Everything reported for one model on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Model name.
    pub name: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Overall metrics (all steps and targets).
    pub overall: StepMetrics,
    /// Per horizon step.
    pub per_step: Vec<StepMetrics>,
    /// MSE difference against the reference model (System B), if computed.
    pub mse_diff_vs_reference: Option<DiffInterval>,
    /// Share of gate tests passed (System B).
    pub gate_pass_rate: Option<f64>,
    /// Empirical coverage of the conformal interval.
    pub coverage: Option<f64>,
    /// Nominal coverage `1 − α`.
    pub nominal_coverage: Option<f64>,
    /// Mean interval width.
    pub mean_width: Option<f64>,
    /// The conformal method (`split_conformal` or `normalized_split_conformal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_method: Option<String>,
    /// MAE, sMAPE, MASE, pinball, Winkler and coverage, overall and sliced (when scored
    /// with a [`crate::ScoreContext`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<crate::Scores>,
    /// What the gate did: gated against always-corrected error (System B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::GateEffect>,
    /// The adaptive conformal interval replayed over the test windows, when asked for.
    pub adaptive: Option<crate::AdaptiveScores>,
}

/// Mean squared error per window (over steps and targets): the unit of the paired bootstrap.
pub fn window_errors(forecasts: &[Forecast], truths: &[f64]) -> Vec<f64> {
    forecasts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let w = f.prediction.len();
            let y = &truths[i * w..(i + 1) * w];
            f.prediction
                .iter()
                .zip(y)
                .map(|(p, t)| (p - t).powi(2))
                .sum::<f64>()
                / w as f64
        })
        .collect()
}

/// Metrics of `forecasts` against `truths` (`[n, horizon, targets]` flat).
pub fn evaluate(
    name: &str,
    parameters: usize,
    forecasts: &[Forecast],
    truths: &[f64],
    horizon: usize,
    conformal: Option<&ConformalCalibration>,
) -> ModelReport {
    let n = forecasts.len();
    let width = truths.len() / n.max(1);
    let targets = width / horizon.max(1);
    let mut per_step = Vec::with_capacity(horizon);
    let (mut all_se, mut all_ae) = (0.0, 0.0);
    for h in 0..horizon {
        let (mut se, mut ae) = (0.0, 0.0);
        for (i, f) in forecasts.iter().enumerate() {
            for j in 0..targets {
                let k = h * targets + j;
                let e = f.prediction[k] - truths[i * width + k];
                se += e * e;
                ae += e.abs();
            }
        }
        let m = (n * targets).max(1) as f64;
        all_se += se;
        all_ae += ae;
        per_step.push(StepMetrics {
            mse: se / m,
            rmse: (se / m).sqrt(),
            mae: ae / m,
        });
    }
    let total = (n * width).max(1) as f64;
    let gate_pass_rate = forecasts
        .first()
        .and_then(|f| f.gate_steps.as_ref())
        .map(|_| {
            let (pass, all) = forecasts
                .iter()
                .flat_map(|f| f.gate_steps.iter().flatten())
                .fold((0usize, 0usize), |(p, a), s| {
                    (p + usize::from(s.passed), a + 1)
                });
            pass as f64 / all.max(1) as f64
        });
    let (coverage, mean_width) = match conformal {
        Some(c) => {
            let (mut covered, mut width_sum) = (0usize, 0.0);
            for (i, f) in forecasts.iter().enumerate() {
                for (k, &r) in c.radii.iter().enumerate() {
                    let (lower, upper) = f.bounds(k, f.radius(k, r), c.quantile_regression);
                    let y = truths[i * width + k];
                    covered += usize::from(lower <= y && y <= upper);
                    width_sum += upper - lower;
                }
            }
            (Some(covered as f64 / total), Some(width_sum / total))
        }
        None => (None, None),
    };
    ModelReport {
        name: name.to_string(),
        parameters,
        windows: n,
        overall: StepMetrics {
            mse: all_se / total,
            rmse: (all_se / total).sqrt(),
            mae: all_ae / total,
        },
        per_step,
        mse_diff_vs_reference: None,
        gate_pass_rate,
        coverage,
        nominal_coverage: conformal.map(|c| 1.0 - c.alpha),
        mean_width,
        interval_method: conformal.map(ConformalCalibration::method),
        scores: None,
        gate: None,
        adaptive: None,
    }
}

/// Circular block bootstrap of `mean(a − reference)` over paired per-window errors.
/// Consecutive windows overlap and their errors are correlated, so whole blocks of
/// `block` consecutive windows are resampled; a plain i.i.d. bootstrap would give
/// intervals that are too narrow.
pub fn paired_bootstrap(
    a: &[f64],
    reference: &[f64],
    block: usize,
    resamples: usize,
    seed: u64,
) -> DiffInterval {
    assert_eq!(
        a.len(),
        reference.len(),
        "paired errors must have the same length"
    );
    let d: Vec<f64> = a.iter().zip(reference).map(|(x, y)| x - y).collect();
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n.max(1) as f64;
    if n == 0 {
        return DiffInterval {
            mean,
            low: mean,
            high: mean,
        };
    }
    let block = block.clamp(1, n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut sum, mut taken) = (0.0, 0usize);
        while taken < n {
            let start = rng.random_range(0..n);
            for k in 0..block.min(n - taken) {
                sum += d[(start + k) % n];
            }
            taken += block.min(n - taken);
        }
        means.push(sum / n as f64);
    }
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    DiffInterval {
        mean,
        low: at(0.025),
        high: at(0.975),
    }
}

/// The comparison table in markdown.
pub fn markdown_table(reports: &[ModelReport], reference: &str) -> String {
    let mut s = format!(
        "| model | params | test MSE | RMSE | MAE | ΔMSE vs {reference} [95% CI] | gate pass | coverage (nominal) | mean width |\n|---|---:|---:|---:|---:|---|---:|---:|---:|\n"
    );
    for r in reports {
        let diff = r.mse_diff_vs_reference.map_or("—".into(), |d| {
            format!(
                "{:+.3e} [{:+.3e}, {:+.3e}]{}",
                d.mean,
                d.low,
                d.high,
                if d.excludes_zero() { "" } else { " (n.s.)" }
            )
        });
        let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", 100.0 * v));
        let cov = match (r.coverage, r.nominal_coverage) {
            (Some(c), Some(n)) => format!("{:.1}% ({:.0}%)", 100.0 * c, 100.0 * n),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {:.4e} | {:.4e} | {:.4e} | {} | {} | {} | {} |\n",
            r.name,
            r.parameters,
            r.overall.mse,
            r.overall.rmse,
            r.overall.mae,
            diff,
            pct(r.gate_pass_rate),
            cov,
            r.mean_width.map_or("—".into(), |w| format!("{w:.3e}")),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_detects_a_real_difference_and_not_a_null_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f64> = (0..4000).map(|_| rng.random_range(0.0..2.0)).collect();
        let better: Vec<f64> = noise.iter().map(|v| v * 0.9).collect();
        let ci = paired_bootstrap(&noise, &better, 20, 1000, 9);
        assert!(ci.excludes_zero() && ci.low > 0.0, "{ci:?}");
        let other: Vec<f64> = (0..4000).map(|_| rng.random_range(0.0..2.0)).collect();
        let null = paired_bootstrap(&noise, &other, 20, 1000, 9);
        assert!(null.low < null.mean && null.mean < null.high);
        assert!(!null.excludes_zero(), "{null:?}");
    }

    #[test]
    fn metrics_are_computed_per_step() {
        let f = |p: Vec<f64>| Forecast {
            prediction: p,
            base: vec![],
            covariance: None,
            correction: None,
            gate_steps: None,
            interval_scale: Vec::new(),
            step_hours: Vec::new(),
            interval_radii: Vec::new(),
            quantile_lower: Vec::new(),
            quantile_upper: Vec::new(),
        };
        let forecasts = vec![f(vec![1.0, 2.0]), f(vec![0.0, 0.0])];
        let truths = [0.0, 0.0, 0.0, 4.0];
        let r = evaluate("m", 0, &forecasts, &truths, 2, None);
        assert_eq!(r.per_step[0].mse, 0.5);
        assert_eq!(r.per_step[1].mse, 10.0);
        assert_eq!(r.overall.mae, 1.75);
        assert_eq!(window_errors(&forecasts, &truths), vec![2.5, 8.0]);
    }
}

use serde::{Deserialize, Serialize};

use crate::{ConformalCalibration, Gate, GateEvidence, GateMode, GateStep};

/// Stated in every certificate, because it is the limit of what the certificate says.
pub const DISCLAIMER: &str = "This certificate states whether the network's correction was consistent with the \
Kalman prior's predictive distribution (a chi-square test) and gives a split-conformal interval with a \
marginal coverage guarantee under exchangeability. It does not certify that the forecast is correct.";

/// The gate's test, statistic, threshold and decision, one entry per horizon step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Always `"chi2_mahalanobis"`.
    pub test: String,
    /// `d²_h = r_hᵀ S_h⁻¹ r_h` per horizon step (`null` if the correction was not finite).
    pub statistic: Vec<Option<f64>>,
    /// Degrees of freedom (number of targets).
    pub dof: usize,
    /// Significance level.
    pub alpha: f64,
    /// `χ²_dof(1 − α)`.
    pub threshold: f64,
    /// `d²_h ≤ threshold` per step.
    pub passed: Vec<bool>,
    /// Reject, shrink or keep.
    pub mode: GateMode,
    /// Factor applied to each step's correction (1 pass or keep, 0 reject, `sqrt(χ²/d²)`
    /// shrink).
    pub applied_scale: Vec<f64>,
    /// What the calibration split showed when the mode was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<GateEvidence>,
}

/// The conformal interval and its guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// `"split_conformal"`, `"normalized_split_conformal"`, their conformalized quantile
    /// regression forms (`"conformalized_quantile_regression"`, …), their `"mondrian_hour_"`
    /// forms, or `"adaptive_conformal"` / `"mondrian_hour_adaptive_conformal"` (a streaming
    /// session's).
    pub method: String,
    /// Miscoverage level.
    pub alpha: f64,
    /// Calibration windows used.
    pub n_calibration: usize,
    /// The guarantee in words.
    pub guarantee: String,
    /// Lower bounds `[horizon][targets]`.
    pub lower: Vec<Vec<f64>>,
    /// Upper bounds `[horizon][targets]`.
    pub upper: Vec<Vec<f64>>,
    /// The window's score scale per target, for normalized scores (the radius multiplies
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Vec<f64>>,
    /// The network's quantile forecasts `[lower, upper]`, each `[horizon][targets]`, that a
    /// conformalized-quantile-regression interval grows from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<[Vec<Vec<f64>>; 2]>,
}

/// How the Mahalanobis systems were solved and how well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolverReport {
    /// Always `"cholesky"`.
    pub method: String,
    /// `‖S_h x − r_h‖₂` per horizon step.
    pub residual_norm: Vec<f64>,
}

/// Which model produced the prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Model name.
    pub name: String,
    /// TNS version that wrote the model file.
    pub version: String,
    /// SHA-256 of the model's tensor bytes.
    pub sha256: String,
}

/// A prediction with what was tested about it. Models without a prior and a gate (System A,
/// the baselines) carry `gate`, `prior`, `correction` and `solver` as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The gate's test and decision (System B).
    pub gate: Option<GateReport>,
    /// Per step, whether the output fell back to the prior.
    pub fallback_used: Option<Vec<bool>>,
    /// The Kalman prior mean `[horizon][targets]`.
    pub prior: Option<Vec<Vec<f64>>>,
    /// The network's proposed correction `[horizon][targets]`.
    pub correction: Option<Vec<Vec<f64>>>,
    /// The output `[horizon][targets]`.
    pub prediction: Vec<Vec<f64>>,
    /// The conformal interval around the output.
    pub interval: Option<IntervalReport>,
    /// The linear solves behind the statistic.
    pub solver: Option<SolverReport>,
    /// The model.
    pub model: ModelIdentity,
    /// A streaming session whose network state is carried along the stream: how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
    /// What the certificate does not say.
    pub disclaimer: String,
}

/// The network state of a streaming session carried from row to row (S4D, Mamba) instead
/// of re-running each window: how many rows it holds against the window length the gate
/// threshold and the interval were calibrated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Rows the network's state has read since the session opened.
    pub rows: u64,
    /// The window length of training and calibration.
    pub calibrated_rows: usize,
    /// What that means for this certificate.
    pub note: String,
}

impl StreamReport {
    /// The report of a state (`what`: "the network's state", "the Kalman prior's state", …)
    /// that has read `rows` rows, for a model calibrated on windows of `calibrated_rows` rows.
    pub fn carried(rows: u64, calibrated_rows: usize, what: &str) -> Self {
        let note = if rows <= calibrated_rows as u64 {
            format!(
                "{what} holds exactly the rows of one calibrated window: the forecast is the window's"
            )
        } else {
            format!(
                "{what} holds all {rows} rows since the session opened, more than the {calibrated_rows}-row windows the gate threshold and the interval were calibrated on: their guarantees are stated for those windows, not established for this longer context"
            )
        };
        Self {
            rows,
            calibrated_rows,
            note,
        }
    }
}

/// Everything a certificate is computed from, as flat `[horizon, targets]` slices.
#[derive(Debug, Clone, Copy)]
pub struct CertificateInputs<'a> {
    /// Targets per step.
    pub targets: usize,
    /// The output.
    pub prediction: &'a [f64],
    /// The prior mean and the proposed correction, when the model has a prior.
    pub prior_and_correction: Option<(&'a [f64], &'a [f64])>,
    /// The gate and its per-step outcomes.
    pub gate: Option<(&'a Gate, &'a [GateStep])>,
    /// The calibration, when the model has one.
    pub conformal: Option<&'a ConformalCalibration>,
    /// The window's score scale per target (read by normalized calibrations only).
    pub interval_scale: &'a [f64],
    /// The forecast's radius per output when the calibration depends on the forecast (by
    /// hour of day; empty: the calibration's pooled radii).
    pub interval_radii: &'a [f64],
    /// The lower and upper quantile forecasts, for models with quantile heads.
    pub quantiles: crate::Quantiles<'a>,
}

fn rows(flat: &[f64], width: usize) -> Vec<Vec<f64>> {
    flat.chunks(width).map(<[f64]>::to_vec).collect()
}

impl Certificate {
    /// Assembles a certificate from what the model actually computed.
    pub fn assemble(inputs: CertificateInputs<'_>, model: ModelIdentity) -> Self {
        let t = inputs.targets;
        let gate = inputs.gate.map(|(g, steps)| GateReport {
            test: "chi2_mahalanobis".into(),
            statistic: steps
                .iter()
                .map(|s| s.statistic.is_finite().then_some(s.statistic))
                .collect(),
            dof: g.dof(),
            alpha: g.alpha(),
            threshold: g.threshold(),
            passed: steps.iter().map(|s| s.passed).collect(),
            mode: g.mode(),
            applied_scale: steps.iter().map(|s| s.applied_scale).collect(),
            evidence: g.evidence().copied(),
        });
        let solver = inputs.gate.map(|(_, steps)| SolverReport {
            method: "cholesky".into(),
            residual_norm: steps.iter().map(|s| s.residual_norm).collect(),
        });
        let fallback_used = inputs
            .gate
            .map(|(_, steps)| steps.iter().map(|s| s.applied_scale == 0.0).collect());
        let interval = inputs.conformal.map(|c| {
            let mut lower = vec![0.0; inputs.prediction.len()];
            let mut upper = vec![0.0; inputs.prediction.len()];
            c.interval(
                inputs.prediction,
                inputs.quantiles,
                inputs.interval_scale,
                inputs.interval_radii,
                &mut lower,
                &mut upper,
            );
            IntervalReport {
                method: c.method(),
                scale: (!c.scale.is_absolute()).then(|| inputs.interval_scale.to_vec()),
                alpha: c.alpha,
                n_calibration: c.n_calibration,
                guarantee: c.guarantee(),
                lower: rows(&lower, t),
                upper: rows(&upper, t),
                quantiles: inputs
                    .quantiles
                    .filter(|_| c.quantile_regression)
                    .map(|(l, u)| [rows(l, t), rows(u, t)]),
            }
        });
        Self {
            gate,
            fallback_used,
            prior: inputs.prior_and_correction.map(|(p, _)| rows(p, t)),
            correction: inputs.prior_and_correction.map(|(_, c)| rows(c, t)),
            prediction: rows(inputs.prediction, t),
            interval,
            solver,
            model,
            stream: None,
            disclaimer: DISCLAIMER.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GateMode, GateScratch};

    #[test]
    fn certificate_has_the_documented_shape_and_is_deterministic() {
        let gate = Gate::new(0.01, 2, GateMode::Reject).unwrap();
        let cal = ConformalCalibration {
            alpha: 0.1,
            n_calibration: 500,
            radii: vec![0.5, 0.25],
            scale: crate::ScoreScale::Absolute,
            by_hour: None,
            quantile_regression: false,
        };
        let make = |r: [f64; 2]| {
            let prior = [1.0, 2.0];
            let mut out = [0.0; 2];
            let step = gate
                .apply(
                    &prior,
                    &r,
                    &[1.0, 0.0, 0.0, 1.0],
                    &mut out,
                    &mut GateScratch::new(2),
                )
                .unwrap();
            let cert = Certificate::assemble(
                CertificateInputs {
                    targets: 2,
                    prediction: &out,
                    prior_and_correction: Some((&prior, &r)),
                    gate: Some((&gate, &[step])),
                    conformal: Some(&cal),
                    interval_scale: &[],
                    interval_radii: &[],
                    quantiles: None,
                },
                ModelIdentity {
                    name: "m".into(),
                    version: "0.1.0".into(),
                    sha256: "ab".into(),
                },
            );
            serde_json::to_value(&cert).unwrap()
        };
        let a = make([0.1, 0.2]);
        assert_eq!(a, make([0.1, 0.2]));
        assert_ne!(a, make([0.1, 0.3]));
        assert_eq!(a["gate"]["test"], "chi2_mahalanobis");
        assert_eq!(a["gate"]["passed"][0], true);
        assert!((a["gate"]["statistic"][0].as_f64().unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(a["fallback_used"][0], false);
        assert_eq!(a["interval"]["method"], "split_conformal");
        assert!((a["interval"]["lower"][0][0].as_f64().unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(a["solver"]["method"], "cholesky");
        for key in ["prior", "correction", "prediction", "model", "disclaimer"] {
            assert!(a.get(key).is_some(), "missing {key}");
        }
        let b = make([30.0, 0.0]);
        assert_eq!(b["gate"]["passed"][0], false);
        assert_eq!(b["fallback_used"][0], true);
        assert_eq!(b["prediction"][0], serde_json::json!([1.0, 2.0]));
    }
}

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::linalg::{self, NotPositiveDefinite};

/// What happens to a correction outside the ellipsoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Return the prior exactly (the default).
    #[default]
    Reject,
    /// Scale the correction onto the ellipsoid boundary (`r · sqrt(χ² / d²)`); the
    /// certificate reports the failure and the scale applied.
    Shrink,
    /// Apply the correction whatever the test says; the certificate still reports the test
    /// and its failures. Chosen when the calibration split shows that falling back does harm
    /// (the prior is less trustworthy than the network where they disagree).
    Keep,
}

impl GateMode {
    /// Every mode, in the order ties are broken (the most conservative first).
    pub const ALL: [GateMode; 3] = [GateMode::Reject, GateMode::Shrink, GateMode::Keep];

    /// The lowercase name (`reject`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Shrink => "shrink",
            Self::Keep => "keep",
        }
    }
}

impl std::str::FromStr for GateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown gate mode {s:?}; use reject, shrink or keep"))
    }
}

/// A mean error under each gate mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModeErrors {
    /// Falling back to the prior on a failed test.
    pub reject: f64,
    /// Shrinking the correction onto the ellipsoid.
    pub shrink: f64,
    /// Always applying the correction.
    pub keep: f64,
}

impl ModeErrors {
    /// The error of `mode`.
    pub fn of(&self, mode: GateMode) -> f64 {
        match mode {
            GateMode::Reject => self.reject,
            GateMode::Shrink => self.shrink,
            GateMode::Keep => self.keep,
        }
    }

    /// The mode with the lowest error; a later mode must be strictly better to win, so
    /// ties keep the more conservative one.
    pub fn best(&self) -> GateMode {
        GateMode::ALL.into_iter().fold(GateMode::Reject, |best, m| {
            if self.of(m) < self.of(best) { m } else { best }
        })
    }
}

/// Why a gate runs in its mode: what each mode did on the calibration split, measured when
/// the model was fitted (errors are mean absolute errors in units of each output's
/// residual scale, so targets of different units weigh alike).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateEvidence {
    /// Calibration windows.
    pub windows: usize,
    /// Their horizon steps (windows × horizon).
    pub steps: usize,
    /// Steps whose correction failed the test.
    pub failed_steps: usize,
    /// Error over every calibration value under each mode.
    pub error: ModeErrors,
    /// Error on the failed steps only (none when no step failed): there the prior alone
    /// (reject) against the shrunk and the full correction.
    pub failed_error: Option<ModeErrors>,
    /// Error of the prior alone over every calibration value: what a fallback returns.
    #[serde(default)]
    pub prior_error: f64,
}

impl GateEvidence {
    /// The mode this evidence supports. Where some steps failed, the mode with the lowest
    /// calibration error (ties to the more conservative). Where none failed there is no
    /// direct evidence; a fallback returns the prior, so the gate keeps the correction when
    /// the prior alone is less accurate than the corrected forecast, and rejects otherwise.
    pub fn choice(&self) -> GateMode {
        if self.failed_steps > 0 {
            self.error.best()
        } else if self.prior_error > self.error.keep {
            GateMode::Keep
        } else {
            GateMode::Reject
        }
    }
}

/// Serializable gate settings, stored in the model config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateConfig {
    /// Significance level of the chi-square test (e.g. 0.01).
    pub alpha: f64,
    /// Reject, shrink or keep.
    #[serde(default)]
    pub mode: GateMode,
    /// What the calibration split showed when the mode was chosen (absent when the mode
    /// was fixed by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<GateEvidence>,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            mode: GateMode::Reject,
            evidence: None,
        }
    }
}

/// Errors of the gate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    /// α outside (0, 1), or below [`MIN_GATE_ALPHA`].
    #[error("gate alpha must lie in [{MIN_GATE_ALPHA}, 1), got {0}")]
    BadAlpha(f64),
    /// No target, so no degrees of freedom.
    #[error("gate needs at least one target (dof = 0)")]
    NoDof,
    /// The covariance is not positive definite.
    #[error("the prior's predictive covariance is unusable: {0}")]
    Covariance(#[from] NotPositiveDefinite),
}

/// The `(1 − α)` quantile of the chi-square distribution with `dof` degrees of freedom.
///
/// ```
/// let t = tns_certify::chi2_threshold(2, 0.01).unwrap();
/// assert!((t - (-2.0 * 0.01f64.ln())).abs() < 1e-6); // closed form for 2 dof
/// ```
pub fn chi2_threshold(dof: usize, alpha: f64) -> Result<f64, GateError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(GateError::BadAlpha(alpha));
    }
    if dof == 0 {
        return Err(GateError::NoDof);
    }
    let dist = ChiSquared::new(dof as f64).map_err(|_| GateError::NoDof)?;
    Ok(dist.inverse_cdf(1.0 - alpha))
}

/// A chi-square Mahalanobis gate with its threshold precomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    alpha: f64,
    dof: usize,
    threshold: f64,
    mode: GateMode,
    evidence: Option<GateEvidence>,
}

/// Buffers for one gate evaluation, so the hot path allocates nothing.
#[derive(Debug, Clone)]
pub struct GateScratch {
    factor: Vec<f64>,
    solution: Vec<f64>,
}

impl GateScratch {
    /// Buffers for `k` targets.
    pub fn new(k: usize) -> Self {
        Self {
            factor: vec![0.0; k * k],
            solution: vec![0.0; k],
        }
    }

    /// Bytes its buffers hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        size_of::<f64>() * (self.factor.capacity() + self.solution.capacity())
    }
}

/// The outcome for one horizon step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateStep {
    /// `d² = rᵀ S⁻¹ r` (NaN when the correction is not finite).
    pub statistic: f64,
    /// `d² ≤ threshold`.
    pub passed: bool,
    /// Factor applied to the correction: 1 on pass, 0 on reject, `sqrt(χ²/d²)` on shrink.
    pub applied_scale: f64,
    /// `‖S x − r‖₂` of the Cholesky solve `S x = r`.
    pub residual_norm: f64,
}

/// Smallest gate level: below it the chi-square threshold is so far out that the gate
/// cannot fail, which no calibration chooses.
pub const MIN_GATE_ALPHA: f64 = 1e-12;

impl Gate {
    /// A gate for `dof` targets at level `alpha` (at least [`MIN_GATE_ALPHA`]).
    pub fn new(alpha: f64, dof: usize, mode: GateMode) -> Result<Self, GateError> {
        if !(MIN_GATE_ALPHA..1.0).contains(&alpha) {
            return Err(GateError::BadAlpha(alpha));
        }
        Ok(Self {
            alpha,
            dof,
            threshold: chi2_threshold(dof, alpha)?,
            mode,
            evidence: None,
        })
    }

    /// The gate a model's settings describe, with the evidence its mode was chosen on.
    pub fn from_config(config: &GateConfig, dof: usize) -> Result<Self, GateError> {
        let mut gate = Self::new(config.alpha, dof, config.mode)?;
        gate.evidence = config.evidence;
        Ok(gate)
    }

    /// What the calibration split showed when the mode was chosen.
    pub fn evidence(&self) -> Option<&GateEvidence> {
        self.evidence.as_ref()
    }

    /// Significance level.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Degrees of freedom (number of targets).
    pub fn dof(&self) -> usize {
        self.dof
    }

    /// `χ²_dof(1 − α)`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Reject, shrink or keep.
    pub fn mode(&self) -> GateMode {
        self.mode
    }

    /// `d² = rᵀ S⁻¹ r` and the residual norm of the solve, by Cholesky.
    pub fn statistic(
        &self,
        correction: &[f64],
        cov: &[f64],
        scratch: &mut GateScratch,
    ) -> Result<(f64, f64), GateError> {
        let k = self.dof;
        assert_eq!(correction.len(), k, "correction length");
        linalg::cholesky(cov, k, &mut scratch.factor)?;
        scratch.solution.copy_from_slice(correction);
        linalg::solve_lower(&scratch.factor, k, &mut scratch.solution);
        // After the forward solve, y = L⁻¹ r and d² = ‖y‖².
        let d2: f64 = scratch.solution.iter().map(|v| v * v).sum();
        linalg::solve_lower_transposed(&scratch.factor, k, &mut scratch.solution);
        let residual = linalg::residual_norm(cov, k, &scratch.solution, correction);
        Ok((d2, residual))
    }

    /// Tests `correction` against the ellipsoid of `cov` and writes the gated output
    /// `prior + scale · correction` into `out`. On a rejection `out` is a copy of `prior`,
    /// bit for bit.
    pub fn apply(
        &self,
        prior: &[f64],
        correction: &[f64],
        cov: &[f64],
        out: &mut [f64],
        scratch: &mut GateScratch,
    ) -> Result<GateStep, GateError> {
        let (statistic, residual_norm) = self.statistic(correction, cov, scratch)?;
        let passed = statistic <= self.threshold;
        let applied_scale = match (passed, self.mode) {
            (true, _) | (false, GateMode::Keep) => 1.0,
            (false, GateMode::Shrink) if statistic.is_finite() => {
                (self.threshold / statistic).sqrt()
            }
            (false, _) => 0.0,
        };
        if applied_scale == 0.0 {
            out.copy_from_slice(prior);
        } else {
            for ((o, p), r) in out.iter_mut().zip(prior).zip(correction) {
                *o = p + applied_scale * r;
            }
        }
        Ok(GateStep {
            statistic,
            passed,
            applied_scale,
            residual_norm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn cov3() -> Vec<f64> {
        vec![2.0, 0.3, -0.2, 0.3, 1.0, 0.1, -0.2, 0.1, 0.5]
    }

    #[test]
    fn keep_applies_a_failed_correction_and_reports_the_failure() {
        let gate = Gate::new(0.01, 3, GateMode::Keep).unwrap();
        let (prior, big) = ([1.0, 2.0, 3.0], [50.0, -40.0, 30.0]);
        let mut out = [0.0; 3];
        let step = gate
            .apply(&prior, &big, &cov3(), &mut out, &mut GateScratch::new(3))
            .unwrap();
        assert!(!step.passed && step.applied_scale == 1.0);
        assert_eq!(out, [51.0, -38.0, 33.0]);
        assert_eq!("keep".parse::<GateMode>(), Ok(GateMode::Keep));
        assert!("maybe".parse::<GateMode>().is_err());
    }

    #[test]
    fn without_failures_the_prior_s_own_error_decides() {
        let errors = ModeErrors {
            reject: 1.0,
            shrink: 1.0,
            keep: 1.0,
        };
        let evidence = |failed_steps, prior_error| GateEvidence {
            windows: 10,
            steps: 10,
            failed_steps,
            error: errors,
            failed_error: None,
            prior_error,
        };
        assert_eq!(evidence(0, 3.0).choice(), GateMode::Keep);
        assert_eq!(evidence(0, 0.5).choice(), GateMode::Reject);
        assert_eq!(evidence(2, 3.0).choice(), GateMode::Reject);
    }

    #[test]
    fn the_best_mode_needs_a_strictly_lower_error() {
        let errors = |reject, shrink, keep| ModeErrors {
            reject,
            shrink,
            keep,
        };
        assert_eq!(errors(1.0, 1.0, 1.0).best(), GateMode::Reject);
        assert_eq!(errors(1.0, 0.9, 0.9).best(), GateMode::Shrink);
        assert_eq!(errors(1.0, 1.1, 0.5).best(), GateMode::Keep);
        assert_eq!(errors(0.2, 1.1, 0.5).best(), GateMode::Reject);
    }

    #[test]
    fn thresholds_match_tables() {
        // Standard chi-square table values.
        for (dof, alpha, want) in [
            (1, 0.05, 3.8415),
            (2, 0.01, 9.2103),
            (4, 0.01, 13.2767),
            (4, 0.05, 9.4877),
            (10, 0.1, 15.9872),
        ] {
            let t = chi2_threshold(dof, alpha).unwrap();
            assert!((t - want).abs() < 1e-3, "dof {dof} alpha {alpha}: {t}");
        }
        assert!(chi2_threshold(2, 0.0).is_err());
        assert!(chi2_threshold(2, 1.0).is_err());
        assert!(chi2_threshold(0, 0.1).is_err());
    }

    #[test]
    fn statistic_changes_with_the_input_and_equals_the_quadratic_form() {
        let gate = Gate::new(0.01, 3, GateMode::Reject).unwrap();
        let mut s = GateScratch::new(3);
        let (a, res_a) = gate.statistic(&[0.1, 0.2, 0.3], &cov3(), &mut s).unwrap();
        let (b, _) = gate.statistic(&[0.1, 0.2, 0.31], &cov3(), &mut s).unwrap();
        assert_ne!(a, b);
        assert!(res_a < 1e-12);
        // Reference: S⁻¹ by the adjugate of the 3×3 matrix.
        let m = cov3();
        let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
            + m[2] * (m[3] * m[7] - m[4] * m[6]);
        let inv = [
            (m[4] * m[8] - m[5] * m[7]) / det,
            (m[2] * m[7] - m[1] * m[8]) / det,
            (m[1] * m[5] - m[2] * m[4]) / det,
            (m[5] * m[6] - m[3] * m[8]) / det,
            (m[0] * m[8] - m[2] * m[6]) / det,
            (m[2] * m[3] - m[0] * m[5]) / det,
            (m[3] * m[7] - m[4] * m[6]) / det,
            (m[1] * m[6] - m[0] * m[7]) / det,
            (m[0] * m[4] - m[1] * m[3]) / det,
        ];
        let r = [0.1, 0.2, 0.3];
        let q: f64 = (0..3)
            .map(|i| (0..3).map(|j| r[i] * inv[i * 3 + j] * r[j]).sum::<f64>())
            .sum();
        assert!((a - q).abs() < 1e-12);
    }

    #[test]
    fn scaling_a_passing_correction_by_ten_makes_it_fail() {
        let gate = Gate::new(0.01, 3, GateMode::Reject).unwrap();
        let mut s = GateScratch::new(3);
        let prior = [1.0, -2.0, 3.0];
        let r = [0.5, 0.4, -0.3];
        let mut out = [0.0; 3];
        let pass = gate.apply(&prior, &r, &cov3(), &mut out, &mut s).unwrap();
        assert!(pass.passed);
        assert_eq!(out, [1.5, -1.6, 2.7]);
        let r10 = r.map(|v| v * 10.0);
        let fail = gate.apply(&prior, &r10, &cov3(), &mut out, &mut s).unwrap();
        assert!(!fail.passed);
        assert!((fail.statistic / pass.statistic - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_failed_gate_returns_the_prior_bit_for_bit() {
        let gate = Gate::new(0.05, 2, GateMode::Reject).unwrap();
        let mut s = GateScratch::new(2);
        // Values whose sum with a tiny correction would round differently.
        let prior = [0.1 + 0.2, -0.0];
        let mut out = [7.0; 2];
        for r in [[1e3, 1e3], [f64::NAN, 0.0], [f64::INFINITY, 1.0]] {
            let step = gate
                .apply(&prior, &r, &[1.0, 0.0, 0.0, 1.0], &mut out, &mut s)
                .unwrap();
            assert!(!step.passed);
            assert_eq!(step.applied_scale, 0.0);
            assert_eq!(out[0].to_bits(), prior[0].to_bits());
            assert_eq!(out[1].to_bits(), prior[1].to_bits());
        }
    }

    #[test]
    fn shrink_mode_lands_on_the_boundary() {
        let gate = Gate::new(0.01, 2, GateMode::Shrink).unwrap();
        let mut s = GateScratch::new(2);
        let cov = [1.0, 0.2, 0.2, 2.0];
        let mut out = [0.0; 2];
        let step = gate
            .apply(&[0.0, 0.0], &[10.0, -5.0], &cov, &mut out, &mut s)
            .unwrap();
        assert!(!step.passed);
        let (d2, _) = gate.statistic(&out, &cov, &mut s).unwrap();
        assert!((d2 - gate.threshold()).abs() < 1e-9);
    }

    #[test]
    fn pass_rate_on_model_drawn_corrections_is_one_minus_alpha() {
        // r ~ N(0, S): d² ~ χ²_k exactly, so the pass rate must be 1 - α (±1%).
        let cov = cov3();
        let mut l = [0.0; 9];
        linalg::cholesky(&cov, 3, &mut l).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut s = GateScratch::new(3);
        for alpha in [0.01, 0.05, 0.2] {
            let gate = Gate::new(alpha, 3, GateMode::Reject).unwrap();
            let n = 200_000;
            let mut passed = 0;
            for _ in 0..n {
                let z: [f64; 3] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
                let r: Vec<f64> = (0..3)
                    .map(|i| (0..=i).map(|j| l[i * 3 + j] * z[j]).sum())
                    .collect();
                if gate.statistic(&r, &cov, &mut s).unwrap().0 <= gate.threshold() {
                    passed += 1;
                }
            }
            let rate = passed as f64 / n as f64;
            assert!(
                (rate - (1.0 - alpha)).abs() < 0.01,
                "alpha {alpha}: pass rate {rate}"
            );
        }
    }

    #[test]
    fn an_indefinite_covariance_is_an_error_not_a_pass() {
        let gate = Gate::new(0.01, 2, GateMode::Reject).unwrap();
        let mut s = GateScratch::new(2);
        let mut out = [0.0; 2];
        assert!(
            gate.apply(
                &[0.0, 0.0],
                &[0.1, 0.1],
                &[1.0, 2.0, 2.0, 1.0],
                &mut out,
                &mut s
            )
            .is_err()
        );
    }
}

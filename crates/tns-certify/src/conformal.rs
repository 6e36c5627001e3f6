use serde::{Deserialize, Serialize};

/// Split-conformal calibration: one radius per (horizon step, target).
///
/// On `n` calibration windows, score `|y − ŷ|` per target and step; the radius is the
/// `⌈(n+1)(1−α)⌉`-th smallest score. For exchangeable data the interval `ŷ ± radius` then
/// covers the truth with marginal probability at least `1 − α` (and at most
/// `1 − α + 1/(n+1)` when scores have no ties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformalCalibration {
    /// Miscoverage level.
    pub alpha: f64,
    /// Number of calibration windows.
    pub n_calibration: usize,
    /// Radii, `[horizon, targets]` row-major.
    pub radii: Vec<f64>,
}

/// Errors of the calibration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConformalError {
    /// α outside (0, 1).
    #[error("conformal alpha must lie in (0, 1), got {0}")]
    BadAlpha(f64),
    /// Too few calibration windows for a finite radius.
    #[error(
        "{n} calibration windows are too few for alpha = {alpha}: at least {needed} are needed for a finite interval; enlarge the calibration split or raise alpha"
    )]
    TooFew {
        /// Calibration windows.
        n: usize,
        /// The miscoverage level.
        alpha: f64,
        /// Rows (or windows) needed.
        needed: usize,
    },
    /// A non-finite calibration score.
    #[error(
        "calibration scores contain a non-finite value at window {window}, position {position}"
    )]
    NonFinite {
        /// 0-based window.
        window: usize,
        /// 0-based position in the window.
        position: usize,
    },
    /// A radius that is negative or not finite.
    #[error("conformal radius {position} is {value}, not a finite non-negative number")]
    BadRadius {
        /// 0-based output position.
        position: usize,
        /// The radius.
        value: f64,
    },
    /// An ACI step size outside (0, 1).
    #[error("the adaptive step gamma must lie in (0, 1), got {0}")]
    BadGamma(f64),
    /// Predictions and truths of mismatched lengths.
    #[error(
        "predictions ({0}) and truths ({1}) differ in length or are not a multiple of the width"
    )]
    Shape(usize, usize),
}

impl ConformalCalibration {
    /// The 1-based rank `⌈(n+1)(1−α)⌉` of the score used as radius, if it is ≤ `n`.
    ///
    /// ```
    /// use tns_certify::ConformalCalibration;
    /// assert_eq!(ConformalCalibration::rank(99, 0.1), Some(90));
    /// assert_eq!(ConformalCalibration::rank(999, 0.1), Some(900));
    /// assert_eq!(ConformalCalibration::rank(5, 0.1), None);
    /// ```
    pub fn rank(n: usize, alpha: f64) -> Option<usize> {
        // The small tolerance keeps (n+1)(1-α) that is an integer in exact arithmetic from
        // rounding up past it in floating point.
        let k = ((n as f64 + 1.0) * (1.0 - alpha) - 1e-9).ceil() as usize;
        (k >= 1 && k <= n).then_some(k)
    }

    /// Calibrates on `predictions` and `truths`, both `[n, width]` row-major.
    pub fn fit(
        alpha: f64,
        predictions: &[f64],
        truths: &[f64],
        width: usize,
    ) -> Result<Self, ConformalError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(ConformalError::BadAlpha(alpha));
        }
        if predictions.len() != truths.len()
            || width == 0
            || !predictions.len().is_multiple_of(width)
        {
            return Err(ConformalError::Shape(predictions.len(), truths.len()));
        }
        let n = predictions.len() / width;
        let k = Self::rank(n, alpha).ok_or(ConformalError::TooFew {
            n,
            alpha,
            needed: (1.0 / alpha).ceil() as usize - 1,
        })?;
        let mut radii = Vec::with_capacity(width);
        let mut scores = Vec::with_capacity(n);
        for position in 0..width {
            scores.clear();
            for window in 0..n {
                let s = (truths[window * width + position]
                    - predictions[window * width + position])
                    .abs();
                if !s.is_finite() {
                    return Err(ConformalError::NonFinite { window, position });
                }
                scores.push(s);
            }
            let (_, kth, _) = scores.select_nth_unstable_by(k - 1, f64::total_cmp);
            radii.push(*kth);
        }
        Ok(Self {
            alpha,
            n_calibration: n,
            radii,
        })
    }

    /// Checks a calibration read from elsewhere (a file): α in (0, 1), enough calibration
    /// windows for α, finite non-negative radii — what [`ConformalCalibration::fit`] yields.
    pub fn validate(&self) -> Result<(), ConformalError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(ConformalError::BadAlpha(self.alpha));
        }
        if Self::rank(self.n_calibration, self.alpha).is_none() {
            return Err(ConformalError::TooFew {
                n: self.n_calibration,
                alpha: self.alpha,
                needed: (1.0 / self.alpha).ceil() as usize - 1,
            });
        }
        match self
            .radii
            .iter()
            .position(|r| !(r.is_finite() && *r >= 0.0))
        {
            Some(position) => Err(ConformalError::BadRadius {
                position,
                value: self.radii[position],
            }),
            None => Ok(()),
        }
    }

    /// Writes `ŷ ∓ radius` into `lower` and `upper`.
    pub fn interval(&self, prediction: &[f64], lower: &mut [f64], upper: &mut [f64]) {
        for (i, (&p, &r)) in prediction.iter().zip(&self.radii).enumerate() {
            lower[i] = p - r;
            upper[i] = p + r;
        }
    }

    /// The guarantee in words, as stated in certificates.
    pub fn guarantee(&self) -> String {
        format!(
            "marginal coverage >= {:.4} per target and horizon step if calibration and test windows are exchangeable",
            1.0 - self.alpha
        )
    }
}

/// Adaptive conformal intervals over a stream, by online quantile tracking (Angelopoulos,
/// Candès & Tibshirani, 2023, "Conformal PID control", its P term; the finite-radius form of
/// Gibbs & Candès' adaptive conformal inference): each output's radius starts at the
/// split-conformal one and moves when that output's truth arrives,
/// `r ← r + η (err − α)` with `err = 1` when the truth fell outside, `η = γ · r₀`. Whatever
/// the distribution shift, after `T` resolved intervals the miss rate is within
/// `(r₀ + B) / (η T)` of `α` (`B`: the largest score seen), so it tends to `α`; there is no
/// per-forecast guarantee.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConformal {
    target: f64,
    gamma: f64,
    radii: Vec<f64>,
    steps: Vec<f64>,
    resolved: u64,
    misses: u64,
}

impl AdaptiveConformal {
    /// Starts every output at the calibration's radius, with relative step `gamma`.
    pub fn new(calibration: &ConformalCalibration, gamma: f64) -> Result<Self, ConformalError> {
        if !(gamma > 0.0 && gamma < 1.0) {
            return Err(ConformalError::BadGamma(gamma));
        }
        Ok(Self {
            target: calibration.alpha,
            gamma,
            radii: calibration.radii.clone(),
            steps: calibration
                .radii
                .iter()
                .map(|r| gamma * r.max(f64::MIN_POSITIVE))
                .collect(),
            resolved: 0,
            misses: 0,
        })
    }

    /// Writes `ŷ ∓ r_t` per output.
    pub fn interval(&self, prediction: &[f64], lower: &mut [f64], upper: &mut [f64]) {
        for (k, (&p, &r)) in prediction.iter().zip(&self.radii).enumerate() {
            lower[k] = p - r;
            upper[k] = p + r;
        }
    }

    /// Records whether output `position`'s interval covered its truth.
    pub fn update(&mut self, position: usize, covered: bool) {
        let err = if covered { 0.0 } else { 1.0 };
        let r = self.radii[position] + self.steps[position] * (err - self.target);
        self.radii[position] = r.max(0.0);
        self.resolved += 1;
        self.misses += u64::from(!covered);
    }

    /// Intervals resolved so far, and the share that covered their truth.
    pub fn coverage(&self) -> (u64, Option<f64>) {
        let share = (self.resolved > 0).then(|| 1.0 - self.misses as f64 / self.resolved as f64);
        (self.resolved, share)
    }

    /// Bytes its buffers hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        size_of::<f64>() * (self.radii.capacity() + self.steps.capacity())
    }

    /// The current radius of each output.
    pub fn radii(&self) -> &[f64] {
        &self.radii
    }

    /// The guarantee in words, as stated in certificates.
    pub fn guarantee(&self) -> String {
        format!(
            "long-run coverage -> {:.4} per output under any distribution shift (online quantile tracking of the split-conformal radius, step {} x the initial radius): the miss rate over T resolved intervals is within O(1/T) of {}; no per-forecast guarantee",
            1.0 - self.target,
            self.gamma,
            self.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, StudentT};

    #[test]
    fn empirical_coverage_lies_in_the_guaranteed_band() {
        // Exchangeable heavy-tailed errors around a biased predictor; 2 targets.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let t3 = StudentT::new(3.0).unwrap();
        let noise = Normal::new(0.5, 2.0).unwrap();
        let mut draw = |n: usize| {
            let mut pred = Vec::new();
            let mut truth = Vec::new();
            for _ in 0..n {
                pred.extend([0.0, 1.0]);
                truth.extend([t3.sample(&mut rng), 1.0 + noise.sample(&mut rng)]);
            }
            (pred, truth)
        };
        // The coverage conditional on one calibration draw has a standard deviation of about
        // sqrt(α(1−α)/n); n = 20,000 keeps it under 0.003, so the ±0.01 band is a real check.
        for alpha in [0.05, 0.1, 0.2] {
            let n = 20_000;
            let (p, t) = draw(n);
            let cal = ConformalCalibration::fit(alpha, &p, &t, 2).unwrap();
            let (tp, tt) = draw(100_000);
            for j in 0..2 {
                let covered = (0..100_000)
                    .filter(|&i| (tt[i * 2 + j] - tp[i * 2 + j]).abs() <= cal.radii[j])
                    .count() as f64
                    / 100_000.0;
                let lo = 1.0 - alpha - 0.01;
                let hi = 1.0 - alpha + 1.0 / (n as f64 + 1.0) + 0.01;
                assert!(
                    covered >= lo && covered <= hi,
                    "alpha {alpha} target {j}: {covered} not in [{lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn adaptive_levels_restore_long_run_coverage_after_a_shift() {
        // Calibrated on unit-scale noise; the stream's noise triples halfway.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let unit = Normal::new(0.0, 1.0).unwrap();
        let truths: Vec<f64> = (0..2_000).map(|_| unit.sample(&mut rng)).collect();
        let cal = ConformalCalibration::fit(0.1, &vec![0.0; 2_000], &truths, 1).unwrap();
        let mut aci = AdaptiveConformal::new(&cal, 0.02).unwrap();
        let (mut lower, mut upper) = ([0.0], [0.0]);
        let (mut static_hits, mut adaptive_hits, n) = (0, 0, 20_000);
        for t in 0..n {
            let scale = if t < n / 2 { 1.0 } else { 3.0 };
            let y = scale * unit.sample(&mut rng);
            static_hits += usize::from(y.abs() <= cal.radii[0]);
            aci.interval(&[0.0], &mut lower, &mut upper);
            let covered = lower[0] <= y && y <= upper[0];
            adaptive_hits += usize::from(covered);
            aci.update(0, covered);
        }
        let (static_cov, adaptive_cov) = (
            static_hits as f64 / n as f64,
            adaptive_hits as f64 / n as f64,
        );
        // Static: 90% before, about 41% after the shift. Adaptive: within 2 points of 90%.
        assert!(static_cov < 0.75, "static {static_cov}");
        assert!((adaptive_cov - 0.9).abs() < 0.02, "adaptive {adaptive_cov}");
        assert_eq!(aci.coverage().0, n as u64);
        // The radius followed the noise up: about 3 × 1.645.
        assert!(
            (aci.radii()[0] - 3.0 * 1.645).abs() < 1.0,
            "{:?}",
            aci.radii()
        );
        assert!(AdaptiveConformal::new(&cal, 0.0).is_err());
    }

    #[test]
    fn radius_is_the_rank_statistic() {
        let truths: Vec<f64> = (1..=19).map(f64::from).collect();
        let preds = vec![0.0; 19];
        // n = 19, alpha = 0.1: rank ⌈20 · 0.9⌉ = 18.
        let cal = ConformalCalibration::fit(0.1, &preds, &truths, 1).unwrap();
        assert_eq!(cal.radii, vec![18.0]);
        assert!(matches!(
            ConformalCalibration::fit(0.1, &preds[..5], &truths[..5], 1),
            Err(ConformalError::TooFew { needed: 9, .. })
        ));
        let mut bad = truths.clone();
        bad[3] = f64::NAN;
        assert!(ConformalCalibration::fit(0.1, &preds, &bad, 1).is_err());
    }
}

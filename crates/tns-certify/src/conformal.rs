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
        let k = ((n + 1) as f64 * (1.0 - alpha) - 1e-9).ceil() as usize;
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

use serde::{Deserialize, Serialize};

/// Split-conformal calibration: one radius per (horizon step, target).
///
/// On `n` calibration windows, score `|y − ŷ| / s` per target and step, where `s` is 1
/// ([`ScoreScale::Absolute`]) or a scale read off the window's own past
/// ([`ScoreScale::WindowVolatility`]); the radius is the `⌈(n+1)(1−α)⌉`-th smallest score.
/// For exchangeable data the interval `ŷ ± s · radius` then covers the truth with marginal
/// probability at least `1 − α` (and at most `1 − α + 1/(n+1)` when scores have no ties):
/// the scale only reshapes the interval across windows, the guarantee is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformalCalibration {
    /// Miscoverage level.
    pub alpha: f64,
    /// Number of calibration windows.
    pub n_calibration: usize,
    /// Radii, `[horizon, targets]` row-major, in units of the score scale.
    pub radii: Vec<f64>,
    /// What the scores are divided by (absent in files written before normalized scores:
    /// absolute scores).
    #[serde(default, skip_serializing_if = "ScoreScale::is_absolute")]
    pub scale: ScoreScale,
    /// Group-conditional (Mondrian) radii by the hour of day of the predicted step, when
    /// calibrated by hour ([`ConformalCalibration::fit_by_hour`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_hour: Option<HourRadii>,
    /// Conformalized quantile regression: scores and intervals measured from the network's
    /// quantile forecasts ([`conformal_score`], [`conformal_bounds`]); radii may then be
    /// negative (the quantile band was too wide).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quantile_regression: bool,
}

/// The conformal score of `truth` against a forecast: how far the interval grown from the
/// band `[lower, upper]` around `point` (by [`conformal_bounds`]) must reach to cover it.
/// With `lower = upper = point` (split conformal) it is `|truth − point|`; with quantile
/// forecasts (CQR) it is `truth − upper` above the point and `lower − truth` below it, the
/// smallest radius whose interval covers the truth (a truth equal to the point is covered
/// at every radius; its score `point − upper` only errs on the wide side).
///
/// ```
/// use tns_certify::{conformal_bounds, conformal_score};
/// assert_eq!(conformal_score(3.0, 1.0, 1.0, 1.0), 2.0);
/// assert_eq!(conformal_score(3.0, 1.0, 0.0, 2.5), 0.5);
/// let (lo, hi) = conformal_bounds(1.0, 0.0, 2.5, 0.5);
/// assert!(lo <= 3.0 && 3.0 <= hi);
/// ```
pub fn conformal_score(truth: f64, point: f64, lower: f64, upper: f64) -> f64 {
    if truth >= point {
        truth - upper
    } else {
        lower - truth
    }
}

/// The interval of radius `radius` (data units) grown from the band `[lower, upper]` around
/// `point`: `[min(lower − radius, point), max(upper + radius, point)]`. It always holds the
/// point, and it grows with the radius (the sets are nested), so the `⌈(n+1)(1−α)⌉`-th
/// smallest [`conformal_score`] of `n` exchangeable calibration windows is a radius with the
/// split-conformal guarantee. With `lower = upper = point` and `radius ≥ 0` it is
/// `point ∓ radius`, bit for bit.
pub fn conformal_bounds(point: f64, lower: f64, upper: f64, radius: f64) -> (f64, f64) {
    ((lower - radius).min(point), (upper + radius).max(point))
}

/// What the calibration scores measure each truth against (`[n, width]` each): the point
/// forecasts, and for CQR the quantile forecasts.
#[derive(Debug, Clone, Copy)]
struct Band<'a> {
    point: &'a [f64],
    lower: &'a [f64],
    upper: &'a [f64],
}

impl<'a> Band<'a> {
    /// Split conformal: the band is the point.
    fn point(point: &'a [f64]) -> Self {
        Self {
            point,
            lower: point,
            upper: point,
        }
    }

    fn score(&self, at: usize, truth: f64) -> f64 {
        conformal_score(truth, self.point[at], self.lower[at], self.upper[at])
    }
}

/// Hours in a day: the groups of [`HourRadii`].
pub const HOURS: usize = 24;

/// Mondrian radii: one split-conformal radius per (hour of day of the predicted step,
/// horizon step, target), each the `⌈(n_g+1)(1−α)⌉`-th smallest of the `n_g` calibration
/// scores of that output whose predicted step fell in that hour. Coverage then holds
/// conditionally on the hour (Vovk's Mondrian conformal prediction): at least `1 − α` for
/// forecasts at 19:00 as for forecasts at 04:00, not only on average over the day. An
/// (hour, output) with too few scores for `α` (`n_g < 1/α − 1`) keeps the pooled radius
/// and only the marginal guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourRadii {
    /// `[24, horizon, targets]` row-major, in units of the score scale.
    pub radii: Vec<f64>,
    /// Calibration scores per (hour, output), same layout.
    pub counts: Vec<usize>,
}

/// What a conformal score is divided by.
///
/// A window-volatility scale makes the interval wider after volatile stretches and narrower
/// after calm ones: on prices whose volatility drifts between the calibration and test
/// periods it keeps coverage near nominal where one fixed width per step does not.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScoreScale {
    /// `|y − ŷ|`: one width per target and step.
    #[default]
    Absolute,
    /// `|y − ŷ| / s`, `s` = the mean absolute one-row change of each target over the
    /// window's last `rows` rows, at least `floor` (per target), so that a flat window does
    /// not get a zero-width interval.
    WindowVolatility {
        /// Rows of the window the scale reads (at least 2).
        rows: usize,
        /// Smallest scale per target.
        floor: Vec<f64>,
    },
}

impl ScoreScale {
    /// Whether scores are absolute errors.
    pub fn is_absolute(&self) -> bool {
        matches!(self, Self::Absolute)
    }

    /// The rows a window-volatility scale reads (`None` for absolute scores): what
    /// recalibrating with the same method needs.
    pub fn normalized_rows(&self) -> Option<usize> {
        match self {
            Self::Absolute => None,
            Self::WindowVolatility { rows, .. } => Some(*rows),
        }
    }

    /// The method's name, as certificates and reports print it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Absolute => "split_conformal",
            Self::WindowVolatility { .. } => "normalized_split_conformal",
        }
    }
}

/// The mean absolute change between consecutive values (0 for fewer than two): the
/// volatility a [`ScoreScale::WindowVolatility`] scale reads off one target's column.
///
/// ```
/// assert_eq!(tns_certify::mean_abs_change([1.0, 3.0, 2.0].into_iter()), 1.5);
/// ```
pub fn mean_abs_change(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n, mut last) = (0.0, 0usize, None);
    for v in values {
        if let Some(prev) = last {
            sum += f64::abs(v - prev);
            n += 1;
        }
        last = Some(v);
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
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
    /// A radius that is not finite, or negative outside conformalized quantile regression.
    #[error(
        "conformal radius {position} is {value}, not a finite number (non-negative unless the interval is conformalized quantile regression)"
    )]
    BadRadius {
        /// 0-based output position.
        position: usize,
        /// The radius.
        value: f64,
    },
    /// Volatilities that are not one per target and calibration window.
    #[error(
        "{found} window volatilities for {windows} calibration windows: expected one per target and window"
    )]
    VolatilityShape {
        /// Volatilities given.
        found: usize,
        /// Calibration windows.
        windows: usize,
    },
    /// A normalized-score scale that cannot be used.
    #[error(
        "the interval's window-volatility scale reads {rows} rows with floor {floor:?}: it needs at least 2 rows and one positive floor per target"
    )]
    BadScale {
        /// Rows the scale reads.
        rows: usize,
        /// Floor per target.
        floor: Vec<f64>,
    },
    /// Hours that are not one per calibration window and predicted step.
    #[error(
        "{found} hours for {windows} calibration windows: expected one per window and predicted step"
    )]
    HourShape {
        /// Hours given.
        found: usize,
        /// Calibration windows.
        windows: usize,
    },
    /// An hour of day outside 0–23.
    #[error("calibration window {window} has hour {hour}, not 0–23")]
    BadHour {
        /// 0-based window.
        window: usize,
        /// The hour.
        hour: u8,
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

    /// Calibrates on `predictions` and `truths`, both `[n, width]` row-major, with absolute
    /// scores.
    pub fn fit(
        alpha: f64,
        predictions: &[f64],
        truths: &[f64],
        width: usize,
    ) -> Result<Self, ConformalError> {
        Self::fit_scaled(alpha, Band::point(predictions), truths, width, None)
    }

    /// Conformalized quantile regression (Romano, Patterson & Candès 2019): calibrates the
    /// interval grown from the quantile forecasts `lower` and `upper` around the point
    /// `predictions` (all `[n, width]`; see [`conformal_bounds`]), with absolute scores, or
    /// normalized ones when `volatility` gives the windows' volatilities and rows (as
    /// [`ConformalCalibration::fit_normalized`]), and per hour of day when `hours` gives the
    /// predicted steps' hours (as [`ConformalCalibration::fit_by_hour`]).
    #[allow(clippy::too_many_arguments)]
    pub fn fit_quantile_regression(
        alpha: f64,
        predictions: &[f64],
        lower: &[f64],
        upper: &[f64],
        truths: &[f64],
        width: usize,
        volatility: Option<(&[f64], usize)>,
        hours: Option<&[u8]>,
    ) -> Result<Self, ConformalError> {
        if lower.len() != predictions.len() || upper.len() != predictions.len() {
            return Err(ConformalError::Shape(lower.len(), predictions.len()));
        }
        let band = Band {
            point: predictions,
            lower,
            upper,
        };
        let mut cal = match hours {
            Some(hours) => Self::by_hour(alpha, band, truths, width, volatility, hours)?,
            None => Self::pooled(alpha, band, truths, width, volatility)?,
        };
        cal.quantile_regression = true;
        Ok(cal)
    }

    /// Absolute or (with `volatility`) normalized scores, one radius per output.
    fn pooled(
        alpha: f64,
        band: Band<'_>,
        truths: &[f64],
        width: usize,
        volatility: Option<(&[f64], usize)>,
    ) -> Result<Self, ConformalError> {
        match volatility {
            None => Self::fit_scaled(alpha, band, truths, width, None),
            Some((v, rows)) => Self::normalized(alpha, band, truths, width, v, rows),
        }
    }

    /// Calibrates with normalized scores: `volatility` holds each calibration window's
    /// [`mean_abs_change`] per target (`[n, targets]`, before any floor) over its last
    /// `rows` rows. The floor per target is [`VOLATILITY_FLOOR`] times the median
    /// calibration volatility.
    pub fn fit_normalized(
        alpha: f64,
        predictions: &[f64],
        truths: &[f64],
        width: usize,
        volatility: &[f64],
        rows: usize,
    ) -> Result<Self, ConformalError> {
        Self::normalized(
            alpha,
            Band::point(predictions),
            truths,
            width,
            volatility,
            rows,
        )
    }

    fn normalized(
        alpha: f64,
        band: Band<'_>,
        truths: &[f64],
        width: usize,
        volatility: &[f64],
        rows: usize,
    ) -> Result<Self, ConformalError> {
        let n = band.point.len() / width.max(1);
        let targets = volatility.len().checked_div(n).unwrap_or(0);
        if targets == 0 || volatility.len() != n * targets || !width.is_multiple_of(targets) {
            return Err(ConformalError::VolatilityShape {
                found: volatility.len(),
                windows: n,
            });
        }
        if rows < 2 {
            return Err(ConformalError::BadScale {
                rows,
                floor: Vec::new(),
            });
        }
        if let Some(position) = volatility
            .iter()
            .position(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err(ConformalError::NonFinite {
                window: position / targets,
                position: position % targets,
            });
        }
        let floor: Vec<f64> = (0..targets)
            .map(|j| {
                let mut column: Vec<f64> = volatility
                    .iter()
                    .skip(j)
                    .step_by(targets)
                    .copied()
                    .collect();
                let mid = column.len() / 2;
                let (_, median, _) = column.select_nth_unstable_by(mid, f64::total_cmp);
                // A series that never moves in calibration still gets a positive scale.
                (VOLATILITY_FLOOR * *median).max(f64::MIN_POSITIVE)
            })
            .collect();
        let scale = ScoreScale::WindowVolatility { rows, floor };
        let scales = scale.floored(volatility);
        let mut cal = Self::fit_scaled(alpha, band, truths, width, Some(&scales))?;
        cal.scale = scale;
        Ok(cal)
    }

    /// Calibrates as [`ConformalCalibration::fit`] (or [`ConformalCalibration::fit_normalized`]
    /// when `volatility` gives the windows' volatilities and rows), then per hour of day of
    /// the predicted step ([`HourRadii`]): `hours` holds the hour (0–23) of every
    /// calibration window's predicted steps, `[n, horizon]`.
    pub fn fit_by_hour(
        alpha: f64,
        predictions: &[f64],
        truths: &[f64],
        width: usize,
        volatility: Option<(&[f64], usize)>,
        hours: &[u8],
    ) -> Result<Self, ConformalError> {
        Self::by_hour(
            alpha,
            Band::point(predictions),
            truths,
            width,
            volatility,
            hours,
        )
    }

    fn by_hour(
        alpha: f64,
        band: Band<'_>,
        truths: &[f64],
        width: usize,
        volatility: Option<(&[f64], usize)>,
        hours: &[u8],
    ) -> Result<Self, ConformalError> {
        let mut cal = Self::pooled(alpha, band, truths, width, volatility)?;
        let n = cal.n_calibration;
        let horizon = hours.len() / n.max(1);
        if horizon == 0 || hours.len() != n * horizon || !width.is_multiple_of(horizon) {
            return Err(ConformalError::HourShape {
                found: hours.len(),
                windows: n,
            });
        }
        if let Some(i) = hours.iter().position(|&h| usize::from(h) >= HOURS) {
            return Err(ConformalError::BadHour {
                window: i / horizon,
                hour: hours[i],
            });
        }
        let targets = width / horizon;
        // The same scores as the pooled fit, divided by the window's floored scale.
        let scales = volatility.map(|(v, _)| cal.scale.floored(v));
        let scale_targets = cal.scale.floor().len().max(1);
        let mut radii = vec![0.0; HOURS * width];
        let mut counts = vec![0; HOURS * width];
        // One pass over the windows per output, each score into its hour's bucket.
        let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); HOURS];
        for position in 0..width {
            let step = position / targets;
            buckets.iter_mut().for_each(Vec::clear);
            for w in 0..n {
                let scale = scales
                    .as_ref()
                    .map_or(1.0, |s| s[w * scale_targets + position % scale_targets]);
                let at = w * width + position;
                buckets[usize::from(hours[w * horizon + step])]
                    .push(band.score(at, truths[at]) / scale);
            }
            for (hour, scores) in buckets.iter_mut().enumerate() {
                let at = hour * width + position;
                counts[at] = scores.len();
                radii[at] = match Self::rank(scores.len(), alpha) {
                    Some(k) => *scores.select_nth_unstable_by(k - 1, f64::total_cmp).1,
                    None => cal.radii[position],
                };
            }
        }
        cal.by_hour = Some(HourRadii { radii, counts });
        Ok(cal)
    }

    /// The radius of every output (`[horizon, targets]`, score units) of a forecast whose
    /// predicted steps fall in `step_hours` (one hour per step; ignored without
    /// [`HourRadii`]), written into `out`.
    pub fn radii_into(&self, step_hours: &[u8], out: &mut [f64]) {
        match &self.by_hour {
            Some(by_hour) if !step_hours.is_empty() => {
                let width = self.radii.len();
                let targets = width / step_hours.len();
                for (k, o) in out.iter_mut().enumerate() {
                    let hour = usize::from(step_hours[k / targets.max(1)]) % HOURS;
                    *o = by_hour.radii[hour * width + k];
                }
            }
            _ => out.copy_from_slice(&self.radii),
        }
    }

    /// The method's name, as certificates and reports print it.
    pub fn method(&self) -> String {
        let base = match (self.quantile_regression, &self.scale) {
            (false, scale) => scale.method(),
            (true, ScoreScale::Absolute) => "conformalized_quantile_regression",
            (true, ScoreScale::WindowVolatility { .. }) => {
                "normalized_conformalized_quantile_regression"
            }
        };
        match self.by_hour {
            Some(_) => format!("mondrian_hour_{base}"),
            None => base.to_string(),
        }
    }

    fn fit_scaled(
        alpha: f64,
        band: Band<'_>,
        truths: &[f64],
        width: usize,
        scales: Option<&[f64]>,
    ) -> Result<Self, ConformalError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(ConformalError::BadAlpha(alpha));
        }
        let len = band.point.len();
        if len != truths.len() || width == 0 || !len.is_multiple_of(width) {
            return Err(ConformalError::Shape(len, truths.len()));
        }
        let n = len / width;
        let k = Self::rank(n, alpha).ok_or(ConformalError::TooFew {
            n,
            alpha,
            needed: (1.0 / alpha).ceil() as usize - 1,
        })?;
        let targets = scales.map_or(1, |s| s.len() / n);
        let mut radii = Vec::with_capacity(width);
        let mut scores = Vec::with_capacity(n);
        for position in 0..width {
            scores.clear();
            for window in 0..n {
                let scale = scales.map_or(1.0, |s| s[window * targets + position % targets]);
                let at = window * width + position;
                let s = band.score(at, truths[at]) / scale;
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
            scale: ScoreScale::Absolute,
            by_hour: None,
            quantile_regression: false,
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
        let usable = |r: &f64| r.is_finite() && (self.quantile_regression || *r >= 0.0);
        if let Some(position) = self.radii.iter().position(|r| !usable(r)) {
            return Err(ConformalError::BadRadius {
                position,
                value: self.radii[position],
            });
        }
        if let ScoreScale::WindowVolatility { rows, floor } = &self.scale
            && (*rows < 2
                || floor.is_empty()
                || !self.radii.len().is_multiple_of(floor.len())
                || floor.iter().any(|f| !(f.is_finite() && *f > 0.0)))
        {
            return Err(ConformalError::BadScale {
                rows: *rows,
                floor: floor.clone(),
            });
        }
        if let Some(by_hour) = &self.by_hour {
            let expected = HOURS * self.radii.len();
            if by_hour.radii.len() != expected || by_hour.counts.len() != expected {
                return Err(ConformalError::HourShape {
                    found: by_hour.radii.len(),
                    windows: self.n_calibration,
                });
            }
            if let Some(position) = by_hour.radii.iter().position(|r| !usable(r)) {
                return Err(ConformalError::BadRadius {
                    position,
                    value: by_hour.radii[position],
                });
            }
        }
        Ok(())
    }

    /// Writes the interval of radius `s · radius` per output ([`conformal_bounds`]: `ŷ ∓ s ·
    /// radius`, or grown from the quantile forecasts `quantiles` for CQR) into `lower` and
    /// `upper`; `scale` holds the window's score scale per target (see
    /// [`ConformalCalibration::window_scale_into`]; ignored for absolute scores) and `radii`
    /// the forecast's radii when they depend on it ([`ConformalCalibration::radii_into`];
    /// empty: the pooled radii).
    pub fn interval(
        &self,
        prediction: &[f64],
        quantiles: Quantiles<'_>,
        scale: &[f64],
        radii: &[f64],
        lower: &mut [f64],
        upper: &mut [f64],
    ) {
        let radii = if radii.is_empty() { &self.radii } else { radii };
        let quantiles = quantiles.filter(|_| self.quantile_regression);
        let forecast = (prediction, quantiles);
        write_interval(|k| radii[k], &self.scale, forecast, scale, lower, upper);
    }

    /// Writes the score scale of a window (`[rows, features]` row-major, data units) per
    /// target into `out`; `targets` are the targets' feature columns. Leaves `out` as it is
    /// for absolute scores.
    pub fn window_scale_into(
        &self,
        window: &[f64],
        features: usize,
        targets: &[usize],
        out: &mut [f64],
    ) {
        if let ScoreScale::WindowVolatility { rows, floor } = &self.scale {
            let volatility = window_volatility(window, features, targets, *rows);
            for ((o, v), f) in out.iter_mut().zip(volatility).zip(floor) {
                *o = v.max(*f);
            }
        }
    }

    /// The guarantee in words, as stated in certificates.
    pub fn guarantee(&self) -> String {
        let scores = match &self.scale {
            ScoreScale::Absolute => String::new(),
            ScoreScale::WindowVolatility { rows, .. } => format!(
                " (scores normalized by the mean absolute change of each target over the window's last {rows} rows; the interval's width follows that volatility)"
            ),
        };
        let condition = match &self.by_hour {
            None => "marginal coverage".to_string(),
            Some(by_hour) => {
                let needed = (1.0 / self.alpha).ceil() as usize - 1;
                let pooled = by_hour
                    .counts
                    .iter()
                    .filter(|&&c| c > 0 && c < needed)
                    .count();
                format!(
                    "coverage conditional on the hour of day of the predicted step (Mondrian{})",
                    if pooled > 0 {
                        format!(
                            "; {pooled} (hour, output) groups with fewer than {needed} calibration windows use the pooled radius and hold marginally"
                        )
                    } else {
                        String::new()
                    }
                )
            }
        };
        let band = if self.quantile_regression {
            "; conformalized quantile regression: the interval [min(q_lo - s r, y_hat), max(q_hi + s r, y_hat)] grows (or, for r < 0, shrinks) the network's quantile band and always holds the forecast; its sets are nested in r, so the guarantee is the split-conformal one"
        } else {
            ""
        };
        format!(
            "{condition} >= {:.4} per target and horizon step if calibration and test windows are exchangeable{scores}{band}",
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
///
/// A calibration by hour of day ([`HourRadii`]) gets one tracker per (hour of the predicted
/// step, output), started at that hour's radius and moved only by outcomes of that hour: the
/// long-run bound then holds within every hour, as the Mondrian radii's guarantee does for
/// exchangeable data.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConformal {
    target: f64,
    gamma: f64,
    scale: ScoreScale,
    /// `[groups, width]`: one group, or [`HOURS`] when calibrated by hour.
    radii: Vec<f64>,
    steps: Vec<f64>,
    /// CQR: radii may go below 0 (the interval always holds the point).
    quantile_regression: bool,
    width: usize,
    by_hour: bool,
    resolved: u64,
    misses: u64,
}

impl AdaptiveConformal {
    /// Starts every output (every (hour, output) when calibrated by hour) at the
    /// calibration's radius, with relative step `gamma`.
    pub fn new(calibration: &ConformalCalibration, gamma: f64) -> Result<Self, ConformalError> {
        if !(gamma > 0.0 && gamma < 1.0) {
            return Err(ConformalError::BadGamma(gamma));
        }
        let radii = match &calibration.by_hour {
            Some(by_hour) => by_hour.radii.clone(),
            None => calibration.radii.clone(),
        };
        Ok(Self {
            target: calibration.alpha,
            gamma,
            scale: calibration.scale.clone(),
            // CQR radii may be negative; the step follows the radius' size either way.
            steps: radii
                .iter()
                .map(|r| gamma * r.abs().max(f64::MIN_POSITIVE))
                .collect(),
            quantile_regression: calibration.quantile_regression,
            radii,
            width: calibration.radii.len(),
            by_hour: calibration.by_hour.is_some(),
            resolved: 0,
            misses: 0,
        })
    }

    /// The tracker of output `position` whose predicted step falls in `hour`.
    fn slot(&self, position: usize, hour: u8) -> usize {
        if self.by_hour {
            usize::from(hour) % HOURS * self.width + position
        } else {
            position
        }
    }

    /// The current radius of output `k` of a forecast whose predicted steps fall in
    /// `step_hours`.
    fn radius(&self, k: usize, step_hours: &[u8]) -> f64 {
        let per_step = self.width / step_hours.len().max(1);
        let hour = step_hours.get(k / per_step.max(1)).copied().unwrap_or(0);
        self.radii[self.slot(k, hour)]
    }

    /// Writes the current radius of every output of a forecast whose predicted steps fall
    /// in `step_hours` (one hour per step; ignored unless calibrated by hour) into `out`.
    pub fn radii_into(&self, step_hours: &[u8], out: &mut [f64]) {
        for (k, o) in out.iter_mut().enumerate().take(self.width) {
            *o = self.radius(k, step_hours);
        }
    }

    /// Writes the interval of radius `s · r_t` per output (`quantiles` and `scale` as in
    /// [`ConformalCalibration::interval`]; `step_hours` as in
    /// [`AdaptiveConformal::radii_into`]).
    pub fn interval(
        &self,
        prediction: &[f64],
        quantiles: Quantiles<'_>,
        scale: &[f64],
        step_hours: &[u8],
        lower: &mut [f64],
        upper: &mut [f64],
    ) {
        let radius = |k| self.radius(k, step_hours);
        let forecast = (prediction, quantiles.filter(|_| self.quantile_regression));
        write_interval(radius, &self.scale, forecast, scale, lower, upper);
    }

    /// The calibration's score scale, which the radii are in units of.
    pub fn scale(&self) -> &ScoreScale {
        &self.scale
    }

    /// Records whether output `position`'s interval, whose predicted step fell in `hour`
    /// (ignored unless calibrated by hour), covered its truth.
    pub fn update(&mut self, position: usize, hour: u8, covered: bool) {
        let err = if covered { 0.0 } else { 1.0 };
        let at = self.slot(position, hour);
        let r = self.radii[at] + self.steps[at] * (err - self.target);
        self.radii[at] = if self.quantile_regression {
            r
        } else {
            r.max(0.0)
        };
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

    /// The method's name, as certificates print it.
    pub fn method(&self) -> &'static str {
        match (self.by_hour, self.quantile_regression) {
            (true, false) => "mondrian_hour_adaptive_conformal",
            (false, false) => "adaptive_conformal",
            (true, true) => "mondrian_hour_adaptive_conformalized_quantile_regression",
            (false, true) => "adaptive_conformalized_quantile_regression",
        }
    }

    /// The guarantee in words, as stated in certificates.
    pub fn guarantee(&self) -> String {
        let per = if self.by_hour {
            "per output and hour of day of the predicted step (one tracker per hour, started at that hour's Mondrian radius)"
        } else {
            "per output"
        };
        let radius = if self.quantile_regression {
            "conformalized-quantile-regression radius around the network's quantile band"
        } else {
            "split-conformal radius"
        };
        format!(
            "long-run coverage -> {:.4} {per} under any distribution shift (online quantile tracking of the {radius}, step {} x the initial radius): the miss rate over T resolved intervals is within O(1/T) of {}; no per-forecast guarantee",
            1.0 - self.target,
            self.gamma,
            self.target
        )
    }
}

/// The [`mean_abs_change`] of each target column over the last `rows` rows of a window
/// (`[rows, features]` row-major), before any floor.
pub fn window_volatility(
    window: &[f64],
    features: usize,
    targets: &[usize],
    rows: usize,
) -> impl Iterator<Item = f64> {
    let available = window.len() / features.max(1);
    let first = available.saturating_sub(rows);
    targets
        .iter()
        .map(move |&c| mean_abs_change((first..available).map(|r| window[r * features + c])))
}

/// Smallest window-volatility scale, relative to the median one on the calibration split.
pub const VOLATILITY_FLOOR: f64 = 0.05;

impl ScoreScale {
    fn floor(&self) -> &[f64] {
        match self {
            Self::Absolute => &[],
            Self::WindowVolatility { floor, .. } => floor,
        }
    }

    /// Window volatilities (`[n, targets]`) raised to the floor per target: the scales the
    /// scores are divided by.
    fn floored(&self, volatility: &[f64]) -> Vec<f64> {
        let floor = self.floor();
        volatility
            .chunks_exact(floor.len().max(1))
            .flat_map(|v| v.iter().zip(floor).map(|(v, f)| v.max(*f)))
            .collect()
    }
}

/// A forecast's lower and upper quantile forecasts (`[horizon, targets]` each), for
/// conformalized quantile regression; `None`: intervals grow from the point.
pub type Quantiles<'a> = Option<(&'a [f64], &'a [f64])>;

/// The interval of radius `s · r` per output ([`conformal_bounds`]); `s` = 1 for absolute
/// scores, else the window's scale of the output's target.
fn write_interval(
    radius: impl Fn(usize) -> f64,
    kind: &ScoreScale,
    (prediction, quantiles): (&[f64], Quantiles<'_>),
    scale: &[f64],
    lower: &mut [f64],
    upper: &mut [f64],
) {
    let targets = scale.len().max(1);
    for (k, &p) in prediction.iter().enumerate() {
        let r = match kind {
            ScoreScale::Absolute => radius(k),
            ScoreScale::WindowVolatility { .. } => radius(k) * scale[k % targets],
        };
        let (lo, hi) = quantiles.map_or((p, p), |(l, u)| (l[k], u[k]));
        (lower[k], upper[k]) = conformal_bounds(p, lo, hi, r);
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

    /// Heteroscedastic data (noise sd `0.2 + 2x`, `x ~ U(0, 1)`) with quantile forecasts
    /// 0.3 too far out on each side: CQR covers at the nominal level with a negative radius (it narrows
    /// the band), and its mean width is below split conformal's one width for all `x`.
    #[test]
    fn quantile_regression_covers_and_adapts_its_width() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let unit = Normal::new(0.0, 1.0).unwrap();
        let z = 1.644_853_626_951_472_2; // the standard normal's 0.95 quantile
        let mut draw = |n: usize| {
            let (mut point, mut lower, mut upper, mut truth) = (vec![], vec![], vec![], vec![]);
            for _ in 0..n {
                let sd = 0.2 + 2.0 * rand::Rng::random_range(&mut rng, 0.0..1.0);
                point.push(0.0);
                lower.push(-z * sd - 0.3);
                upper.push(z * sd + 0.3);
                truth.push(sd * unit.sample(&mut rng));
            }
            (point, lower, upper, truth)
        };
        let (p, l, u, t) = draw(20_000);
        let cqr = ConformalCalibration::fit_quantile_regression(0.1, &p, &l, &u, &t, 1, None, None)
            .unwrap();
        let split = ConformalCalibration::fit(0.1, &p, &t, 1).unwrap();
        assert!(cqr.quantile_regression && cqr.validate().is_ok());
        assert!(cqr.radii[0] < 0.0, "radius {} should narrow", cqr.radii[0]);
        assert_eq!(cqr.method(), "conformalized_quantile_regression");
        let (tp, tl, tu, tt) = draw(100_000);
        let (mut covered, mut width) = (0usize, 0.0);
        let (mut lo, mut hi) = (vec![0.0; 1], vec![0.0; 1]);
        for i in 0..tt.len() {
            let q = Some((&tl[i..=i], &tu[i..=i]));
            cqr.interval(&tp[i..=i], q, &[], &[], &mut lo, &mut hi);
            assert!(
                lo[0] <= tp[i] && tp[i] <= hi[0],
                "the interval holds the point"
            );
            covered += usize::from(lo[0] <= tt[i] && tt[i] <= hi[0]);
            width += hi[0] - lo[0];
        }
        let coverage = covered as f64 / tt.len() as f64;
        assert!((coverage - 0.9).abs() < 0.01, "CQR coverage {coverage}");
        let mean_width = width / tt.len() as f64;
        assert!(
            mean_width < 0.95 * 2.0 * split.radii[0],
            "CQR width {mean_width} against split {}",
            2.0 * split.radii[0]
        );
        // With the band at the point, CQR's scores are split conformal's.
        let same =
            ConformalCalibration::fit_quantile_regression(0.1, &p, &p, &p, &t, 1, None, None)
                .unwrap();
        assert_eq!(same.radii, split.radii);
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
            aci.interval(&[0.0], None, &[], &[], &mut lower, &mut upper);
            let covered = lower[0] <= y && y <= upper[0];
            adaptive_hits += usize::from(covered);
            aci.update(0, 0, covered);
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
        let mut radius = [0.0];
        aci.radii_into(&[], &mut radius);
        assert!((radius[0] - 3.0 * 1.645).abs() < 1.0, "{radius:?}");
        assert!(AdaptiveConformal::new(&cal, 0.0).is_err());
    }

    #[test]
    fn normalized_scores_cover_calm_and_volatile_windows_alike() {
        // One target whose noise scale is the window's volatility: 1 in calm windows, 4 in
        // volatile ones (a quarter of them). Absolute scores give every window one width.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let unit = Normal::new(0.0, 1.0).unwrap();
        let mut draw = |n: usize| {
            let (mut vol, mut truth) = (Vec::new(), Vec::new());
            for i in 0..n {
                let v = if i % 4 == 0 { 4.0 } else { 1.0 };
                vol.push(v);
                truth.push(v * unit.sample(&mut rng));
            }
            (vol, truth)
        };
        let (vol, truth) = draw(20_000);
        let zeros = vec![0.0; 20_000];
        let absolute = ConformalCalibration::fit(0.1, &zeros, &truth, 1).unwrap();
        let normalized =
            ConformalCalibration::fit_normalized(0.1, &zeros, &truth, 1, &vol, 24).unwrap();
        assert_eq!(normalized.scale.method(), "normalized_split_conformal");
        normalized.validate().unwrap();
        let (tvol, ttruth) = draw(40_000);
        let coverage = |cal: &ConformalCalibration, volatile: bool| {
            let (mut hits, mut n) = (0, 0);
            let (mut lo, mut hi) = ([0.0], [0.0]);
            for (v, y) in tvol.iter().zip(&ttruth) {
                if (*v > 1.0) == volatile {
                    cal.interval(&[0.0], None, &[*v], &[], &mut lo, &mut hi);
                    hits += usize::from(lo[0] <= *y && *y <= hi[0]);
                    n += 1;
                }
            }
            hits as f64 / n as f64
        };
        // Normalized: 90% in both groups. Absolute: over-covers calm, under-covers volatile.
        for volatile in [false, true] {
            let c = coverage(&normalized, volatile);
            assert!(
                (c - 0.9).abs() < 0.015,
                "normalized, volatile {volatile}: {c}"
            );
        }
        assert!(coverage(&absolute, true) < 0.75);
        assert!(coverage(&absolute, false) > 0.95);
        // The floor is 5% of the median volatility (1).
        assert_eq!(
            normalized.scale,
            ScoreScale::WindowVolatility {
                rows: 24,
                floor: vec![VOLATILITY_FLOOR]
            }
        );
        assert!(matches!(
            ConformalCalibration::fit_normalized(0.1, &zeros, &truth, 1, &vol[..10], 24),
            Err(ConformalError::VolatilityShape { .. })
        ));
        assert!(ConformalCalibration::fit_normalized(0.1, &zeros, &truth, 1, &vol, 1).is_err());
    }

    #[test]
    fn calibration_by_hour_covers_every_hour_where_pooled_radii_do_not() {
        // One output; errors ten times wider at 18:00–21:00 than at other hours. Pooled
        // radii over-cover calm hours and under-cover the evening; radii by hour cover each.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let mut draw = |n: usize| {
            let hours: Vec<u8> = (0..n).map(|i| (i % 24) as u8).collect();
            let truths: Vec<f64> = hours
                .iter()
                .map(|&h| normal.sample(&mut rng) * if (18..22).contains(&h) { 10.0 } else { 1.0 })
                .collect();
            (hours, truths)
        };
        let (hours, truths) = draw(24 * 200);
        let zeros = vec![0.0; truths.len()];
        let pooled = ConformalCalibration::fit(0.1, &zeros, &truths, 1).unwrap();
        let by_hour =
            ConformalCalibration::fit_by_hour(0.1, &zeros, &truths, 1, None, &hours).unwrap();
        assert_eq!(by_hour.radii, pooled.radii);
        assert_eq!(by_hour.method(), "mondrian_hour_split_conformal");
        assert!(
            by_hour
                .guarantee()
                .starts_with("coverage conditional on the hour")
        );
        let (test_hours, test_truths) = draw(24 * 2000);
        let coverage = |cal: &ConformalCalibration, hour: u8| {
            let (mut covered, mut n) = (0, 0);
            let mut radius = [0.0];
            cal.radii_into(&[hour], &mut radius);
            for (&h, &y) in test_hours.iter().zip(&test_truths) {
                if h == hour {
                    n += 1;
                    covered += usize::from(y.abs() <= radius[0]);
                }
            }
            covered as f64 / n as f64
        };
        for hour in [3, 12, 19, 21] {
            let c = coverage(&by_hour, hour);
            assert!((0.86..0.95).contains(&c), "hour {hour}: {c}");
        }
        assert!(coverage(&pooled, 19) < 0.6, "{}", coverage(&pooled, 19));
        assert!(coverage(&pooled, 3) > 0.99, "{}", coverage(&pooled, 3));
        // Hours with too few windows keep the pooled radius.
        let few = ConformalCalibration::fit_by_hour(
            0.1,
            &zeros[..30],
            &truths[..30],
            1,
            None,
            &hours[..30],
        )
        .unwrap();
        let mut radius = [0.0];
        few.radii_into(&[23], &mut radius);
        assert_eq!(radius[0], few.radii[0]);
        assert!(few.guarantee().contains("use the pooled radius"));
        assert!(
            ConformalCalibration::fit_by_hour(0.1, &zeros, &truths, 1, None, &hours[1..]).is_err()
        );
        let mut bad = hours.clone();
        bad[5] = 24;
        assert!(ConformalCalibration::fit_by_hour(0.1, &zeros, &truths, 1, None, &bad).is_err());
    }

    #[test]
    fn adaptive_intervals_by_hour_track_a_shift_within_each_hour() {
        // Calibrated by hour on unit noise; in the stream the evening (18:00–21:00) noise
        // quadruples. One tracker per hour restores every hour's coverage; one pooled tracker
        // restores the day's but leaves the evening short and over-covers the rest.
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let hours: Vec<u8> = (0..24 * 300).map(|i| (i % 24) as u8).collect();
        let truths: Vec<f64> = hours.iter().map(|_| normal.sample(&mut rng)).collect();
        let zeros = vec![0.0; truths.len()];
        let by_hour =
            ConformalCalibration::fit_by_hour(0.1, &zeros, &truths, 1, None, &hours).unwrap();
        let mut pooled_calibration = by_hour.clone();
        pooled_calibration.by_hour = None;
        let mut hourly = AdaptiveConformal::new(&by_hour, 0.05).unwrap();
        let mut pooled = AdaptiveConformal::new(&pooled_calibration, 0.05).unwrap();
        assert_eq!(hourly.method(), "mondrian_hour_adaptive_conformal");
        assert!(hourly.guarantee().contains("hour of day"));
        let (mut hits, mut seen) = ([[0usize; 24]; 2], [0usize; 24]);
        let (mut lower, mut upper) = ([0.0], [0.0]);
        for t in 0..24 * 4000 {
            let hour = (t % 24) as u8;
            let scale = if (18..22).contains(&hour) { 4.0 } else { 1.0 };
            let y = scale * normal.sample(&mut rng);
            for (i, aci) in [&mut hourly, &mut pooled].into_iter().enumerate() {
                aci.interval(&[0.0], None, &[], &[hour], &mut lower, &mut upper);
                let covered = lower[0] <= y && y <= upper[0];
                hits[i][usize::from(hour)] += usize::from(covered);
                aci.update(0, hour, covered);
            }
            seen[usize::from(hour)] += 1;
        }
        let coverage = |i: usize, hour: usize| hits[i][hour] as f64 / seen[hour] as f64;
        for hour in 0..24 {
            let c = coverage(0, hour);
            assert!((c - 0.9).abs() < 0.02, "by hour, hour {hour}: {c}");
        }
        assert!(
            coverage(1, 19) < 0.8,
            "pooled, hour 19: {}",
            coverage(1, 19)
        );
        assert!(coverage(1, 3) > 0.95, "pooled, hour 3: {}", coverage(1, 3));
        // Radii moved only in the evening: about 4 × 1.645 there, 1.645 at 03:00.
        let mut radius = [0.0];
        hourly.radii_into(&[19], &mut radius);
        assert!((radius[0] - 4.0 * 1.645).abs() < 1.2, "{radius:?}");
        hourly.radii_into(&[3], &mut radius);
        assert!((radius[0] - 1.645).abs() < 0.4, "{radius:?}");
    }

    #[test]
    fn window_scale_reads_the_last_rows_of_each_target_and_is_floored() {
        let cal = ConformalCalibration {
            alpha: 0.1,
            n_calibration: 100,
            radii: vec![2.0, 3.0],
            scale: ScoreScale::WindowVolatility {
                rows: 3,
                floor: vec![0.5, 0.5],
            },
            by_hour: None,
            quantile_regression: false,
        };
        // [4 rows, 3 features]; targets are columns 2 and 0. Column 2's last 3 rows change
        // by 1 and 3; column 0 is flat (floored).
        let window = [
            100.0, 0.0, -50.0, //
            7.0, 0.0, 1.0, //
            7.0, 0.0, 2.0, //
            7.0, 0.0, 5.0,
        ];
        let mut scale = [0.0; 2];
        cal.window_scale_into(&window, 3, &[2, 0], &mut scale);
        assert_eq!(scale, [2.0, 0.5]);
        let (mut lo, mut hi) = ([0.0; 2], [0.0; 2]);
        cal.interval(&[10.0, 20.0], None, &scale, &[], &mut lo, &mut hi);
        assert_eq!((lo, hi), ([6.0, 18.5], [14.0, 21.5]));
        let mut bad = cal.clone();
        bad.scale = ScoreScale::WindowVolatility {
            rows: 3,
            floor: vec![0.0, 0.5],
        };
        assert!(matches!(
            bad.validate(),
            Err(ConformalError::BadScale { .. })
        ));
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

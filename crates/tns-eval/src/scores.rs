//! Forecast-quality scores a forecaster slices by: MAE, RMSE, sMAPE, MASE, the pinball loss
//! and Winkler score of the interval, and coverage — overall, per horizon step, per series, and
//! per hour of day and day of week of the predicted row (UTC, when the time column holds
//! date-times).

use serde::{Deserialize, Serialize};
use tns_certify::ConformalCalibration;
use tns_data::{Segment, WindowSet};
use tns_model::Forecast;

/// What the scores need beyond the forecasts and the windows.
#[derive(Debug, Clone)]
pub struct ScoreContext {
    /// Time between rows (to date each predicted row from its window's origin).
    pub dt: f64,
    /// Rows from a window's last input row to its first predicted row.
    pub lead: usize,
    /// Series names, by series index.
    pub series: Vec<String>,
    /// MASE denominators per target (see [`mase_scale`]); `None` leaves MASE out.
    pub mase_scale: Option<Vec<f64>>,
    /// Step of adaptive conformal inference replayed over the test windows (see
    /// [`crate::adaptive_radii`]); `None` leaves the adaptive interval out.
    pub adaptive_gamma: Option<f64>,
}

/// The interval that scoring reads: `ŷ ± radius` per output, at miscoverage `alpha`.
#[derive(Debug, Clone, Copy)]
pub struct Interval<'a> {
    /// Miscoverage level (for the pinball loss and the Winkler score).
    pub alpha: f64,
    /// The radii.
    pub radii: Radii<'a>,
    /// Whether the intervals grow from the forecasts' quantiles (conformalized quantile
    /// regression) rather than from the point.
    pub quantile_regression: bool,
}

/// Radii of an [`Interval`].
#[derive(Debug, Clone, Copy)]
pub enum Radii<'a> {
    /// The same radii for every window, `[horizon, targets]` (split conformal).
    Fixed(&'a [f64]),
    /// One set per window, in window order (adaptive conformal).
    PerWindow(&'a [Vec<f64>]),
}

impl Interval<'_> {
    /// The radius of output `position` of window `window`'s forecast `f`, in data units: a
    /// fixed calibration's radius may depend on the forecast (by hour of day); adaptive radii
    /// are the stream's own.
    fn radius(&self, window: usize, position: usize, f: &Forecast) -> f64 {
        match self.radii {
            Radii::Fixed(r) => f.radius(position, r[position]),
            Radii::PerWindow(r) => f.scaled_radius(position, r[window][position]),
        }
    }
}

impl<'a> From<&'a ConformalCalibration> for Interval<'a> {
    fn from(c: &'a ConformalCalibration) -> Self {
        Self {
            alpha: c.alpha,
            radii: Radii::Fixed(&c.radii),
            quantile_regression: c.quantile_regression,
        }
    }
}

/// The scores of one slice of forecasts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Forecast values scored.
    pub n: usize,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Symmetric MAPE in percent: mean of `200·|y − ŷ| / (|y| + |ŷ|)` (0 where both are 0).
    pub smape: f64,
    /// Mean absolute scaled error: MAE over the in-sample seasonal-naive MAE of the target.
    pub mase: Option<f64>,
    /// Mean pinball loss of the interval's ends as the α/2 and 1 − α/2 quantiles.
    pub pinball: Option<f64>,
    /// Mean Winkler (interval) score at level α: width plus `2/α` times any miss.
    pub winkler: Option<f64>,
    /// Share of values inside the interval.
    pub coverage: Option<f64>,
}

/// A labelled slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// What the slice holds (`step 3`, a series name, `hour 17`, `Mon`).
    pub label: String,
    /// Its scores.
    pub score: Score,
}

/// Scores overall and by slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Every forecast value.
    pub overall: Score,
    /// By horizon step.
    pub per_step: Vec<Slice>,
    /// By series.
    pub per_series: Vec<Slice>,
    /// By hour of day of the predicted row (UTC), when times are date-times.
    pub per_hour: Vec<Slice>,
    /// By day of week of the predicted row (UTC), when times are date-times.
    pub per_weekday: Vec<Slice>,
}

#[derive(Debug, Clone, Default)]
struct Accumulator {
    n: usize,
    abs: f64,
    sq: f64,
    smape: f64,
    scaled: f64,
    pinball: f64,
    winkler: f64,
    covered: usize,
}

impl Accumulator {
    fn finish(&self, mase: bool, interval: bool) -> Score {
        let n = self.n.max(1) as f64;
        Score {
            n: self.n,
            mae: self.abs / n,
            rmse: (self.sq / n).sqrt(),
            smape: self.smape / n,
            mase: mase.then(|| self.scaled / n),
            pinball: interval.then(|| self.pinball / n),
            winkler: interval.then(|| self.winkler / n),
            coverage: interval.then(|| self.covered as f64 / n),
        }
    }
}

/// The in-sample MASE denominators: for each target column, the mean absolute difference
/// between rows `season` apart within the training segments (`season = 1`: the naive
/// forecast's error).
pub fn mase_scale(
    train_rows: &[Segment],
    features: usize,
    targets: &[usize],
    season: usize,
) -> Vec<f64> {
    let season = season.max(1);
    targets
        .iter()
        .map(|&c| {
            let (mut sum, mut n) = (0.0, 0usize);
            for seg in train_rows {
                let rows = seg.values.len() / features.max(1);
                for r in season..rows {
                    sum += (seg.values[r * features + c] - seg.values[(r - season) * features + c])
                        .abs();
                    n += 1;
                }
            }
            if n == 0 { f64::NAN } else { sum / n as f64 }
        })
        .collect()
}

/// The season MASE uses when none is given: the rows in a day for a sampling step (in
/// seconds) that divides a day into 2 or more rows (24 for hourly data, 48 half-hourly), else
/// 1 (the naive forecast).
///
/// ```
/// assert_eq!(tns_eval::daily_season(3_600.0), 24);
/// assert_eq!(tns_eval::daily_season(1_800.0), 48);
/// assert_eq!(tns_eval::daily_season(0.05), 1);
/// ```
pub fn daily_season(dt: f64) -> usize {
    let rows = 86_400.0 / dt;
    // Sub-second steps are not date-time data; a step that does not divide a day evenly
    // has no daily season in rows.
    if dt >= 1.0 && rows >= 2.0 && (rows - rows.round()).abs() < 1e-9 {
        rows.round() as usize
    } else {
        1
    }
}

/// Hour of day (0–23) and day of week (0 = Monday) of a time in seconds since 1970, UTC;
/// `None` for times that are not date-times.
fn calendar(t: f64) -> Option<(usize, usize)> {
    use chrono::{Datelike, Timelike};
    if !tns_data::is_date_time(t) {
        return None;
    }
    let d = chrono::DateTime::from_timestamp_micros((t * 1e6) as i64)?;
    Some((
        d.hour() as usize,
        d.weekday().num_days_from_monday() as usize,
    ))
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Scores `forecasts` of the windows `test` (whose targets are the truths).
pub fn score(
    forecasts: &[Forecast],
    test: &WindowSet,
    interval: Option<Interval<'_>>,
    context: &ScoreContext,
) -> Scores {
    let (h, t) = (test.horizon(), test.targets());
    // A target constant over the training rows has no scale: MASE is left out rather than
    // reported infinite.
    let mase = context
        .mase_scale
        .as_ref()
        .filter(|s| s.len() == t && s.iter().all(|v| v.is_finite() && *v > 0.0));
    let mut overall = Accumulator::default();
    let mut steps = vec![Accumulator::default(); h];
    let mut series = vec![Accumulator::default(); context.series.len().max(1)];
    let (mut hours, mut weekdays) = (
        vec![Accumulator::default(); 24],
        vec![Accumulator::default(); 7],
    );
    let mut dated = false;
    for (i, f) in forecasts.iter().enumerate() {
        let origin = test.origin(i);
        let truth = test.output(i);
        for (k, (&p, &y)) in f.prediction.iter().zip(truth).enumerate() {
            let (step, j) = (k / t, k % t);
            let e = p - y;
            let when = origin.time + (context.lead + step) as f64 * context.dt;
            let cal = calendar(when);
            dated |= cal.is_some();
            let add = |a: &mut Accumulator| {
                a.n += 1;
                a.abs += e.abs();
                a.sq += e * e;
                let denominator = y.abs() + p.abs();
                if denominator > 0.0 {
                    a.smape += 200.0 * e.abs() / denominator;
                }
                if let Some(scale) = mase {
                    a.scaled += e.abs() / scale[j];
                }
                if let Some(iv) = interval {
                    // A fixed calibration's radius may depend on the forecast (by hour);
                    // adaptive radii are the stream's own.
                    let r = iv.radius(i, k, f);
                    let (lower, upper) = f.bounds(k, r, iv.quantile_regression);
                    let alpha = iv.alpha;
                    let pinball = |q: f64, v: f64| (q * (y - v)).max((q - 1.0) * (y - v));
                    a.pinball +=
                        0.5 * (pinball(alpha / 2.0, lower) + pinball(1.0 - alpha / 2.0, upper));
                    let miss = if y < lower {
                        lower - y
                    } else if y > upper {
                        y - upper
                    } else {
                        0.0
                    };
                    a.winkler += (upper - lower) + 2.0 / alpha * miss;
                    a.covered += usize::from(miss == 0.0);
                }
            };
            add(&mut overall);
            add(&mut steps[step]);
            let last_series = series.len() - 1;
            add(&mut series[origin.series.min(last_series)]);
            if let Some((hour, weekday)) = cal {
                add(&mut hours[hour]);
                add(&mut weekdays[weekday]);
            }
        }
    }
    let (m, iv) = (mase.is_some(), interval.is_some());
    let slices = |accs: &[Accumulator], label: &dyn Fn(usize) -> String| -> Vec<Slice> {
        accs.iter()
            .enumerate()
            .filter(|(_, a)| a.n > 0)
            .map(|(i, a)| Slice {
                label: label(i),
                score: a.finish(m, iv),
            })
            .collect()
    };
    Scores {
        overall: overall.finish(m, iv),
        per_step: slices(&steps, &|i| format!("step {}", i + 1)),
        per_series: slices(&series, &|i| {
            context
                .series
                .get(i)
                .cloned()
                .unwrap_or_else(|| "main".into())
        }),
        per_hour: if dated {
            slices(&hours, &|i| format!("hour {i:02}"))
        } else {
            Vec::new()
        },
        per_weekday: if dated {
            slices(&weekdays, &|i| WEEKDAYS[i].to_string())
        } else {
            Vec::new()
        },
    }
}

/// The lowest coverage over the hours of day, with its hour (`—` without dated intervals).
pub(crate) fn worst_hour(scores: &Scores) -> String {
    scores
        .per_hour
        .iter()
        .filter_map(|h| h.score.coverage.map(|c| (c, &h.label)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or("—".into(), |(c, label)| {
            format!("{:.1}% ({label})", 100.0 * c)
        })
}

/// The scores table in markdown, one row per model.
pub fn scores_table(rows: &[(&str, &Scores)]) -> String {
    let mut s = String::from(
        "| model | MAE | RMSE | sMAPE % | MASE | pinball | Winkler | coverage | worst hour coverage |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
    for (name, sc) in rows {
        let o = &sc.overall;
        let worst = worst_hour(sc);
        s.push_str(&format!(
            "| {name} | {:.4} | {:.4} | {:.2} | {} | {} | {} | {} | {worst} |\n",
            o.mae,
            o.rmse,
            o.smape,
            opt(o.mase, 3),
            opt(o.pinball, 4),
            opt(o.winkler, 3),
            o.coverage
                .map_or("—".into(), |c| format!("{:.1}%", 100.0 * c)),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_data::WindowOrigin;

    #[test]
    fn scores_follow_their_formulas() {
        // One window, two steps, one target, at 2016-01-04 (a Monday) 23:00 UTC, hourly.
        let origin_time = 1_451_948_400.0;
        let mut test = WindowSet::empty(1, 1, 2, 1);
        test.push(
            &[0.0],
            &[10.0, 4.0],
            WindowOrigin {
                series: 0,
                row: 0,
                time: origin_time,
            },
        );
        let forecast = Forecast {
            prediction: vec![8.0, 4.0],
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
        let cal = ConformalCalibration {
            alpha: 0.1,
            n_calibration: 10,
            radii: vec![1.0, 1.0],
            scale: tns_certify::ScoreScale::Absolute,
            by_hour: None,
            quantile_regression: false,
        };
        let context = ScoreContext {
            dt: 3_600.0,
            lead: 1,
            series: vec!["FR".into()],
            mase_scale: Some(vec![2.0]),
            adaptive_gamma: None,
        };
        let s = score(
            std::slice::from_ref(&forecast),
            &test,
            Some((&cal).into()),
            &context,
        );
        // A target constant in training (scale 0) has no MASE, rather than an infinite one.
        let flat = ScoreContext {
            mase_scale: Some(vec![0.0]),
            ..context.clone()
        };
        let no_mase = score(&[forecast], &test, None, &flat);
        assert_eq!(no_mase.overall.mase, None);
        let o = &s.overall;
        assert_eq!(o.n, 2);
        assert_eq!(o.mae, 1.0);
        assert_eq!(o.rmse, 2f64.sqrt());
        // sMAPE: 200·2/18 for step 1, 0 for step 2.
        assert!((o.smape - 100.0 * 2.0 / 18.0).abs() < 1e-12);
        assert_eq!(o.mase, Some(0.5));
        // Step 1: interval [7, 9] misses 10 by 1: Winkler 2 + 20·1 = 22; step 2: 2.
        assert_eq!(o.winkler, Some(12.0));
        assert_eq!(o.coverage, Some(0.5));
        // Pinball, step 1: lower 7 at q 0.05 → 0.05·3; upper 9 at q 0.95 → 0.95·1;
        // step 2 (y 4, ends 3 and 5): 0.05·1 and 0.05·1.
        let want = 0.5 * (0.5 * (0.15 + 0.95) + 0.5 * (0.05 + 0.05));
        assert!((o.pinball.unwrap() - want).abs() < 1e-12);
        // The predicted rows are Tuesday 00:00 and 01:00.
        let hours: Vec<&str> = s.per_hour.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(hours, ["hour 00", "hour 01"]);
        assert_eq!(s.per_weekday[0].label, "Tue");
        assert_eq!(s.per_series[0].label, "FR");
        assert_eq!(s.per_step[0].score.mae, 2.0);
    }

    #[test]
    fn mase_scale_is_the_in_sample_seasonal_naive_error() {
        let seg = Segment {
            values: vec![0.0, 1.0, 3.0, 6.0],
            times: vec![0.0, 1.0, 2.0, 3.0],
        };
        assert_eq!(
            mase_scale(std::slice::from_ref(&seg), 1, &[0], 1),
            vec![2.0]
        );
        assert_eq!(mase_scale(&[seg], 1, &[0], 2), vec![4.0]);
    }
}

//! Adaptive conformal inference replayed over the test windows, as a streaming session or
//! the server would run it: every interval is issued with the radii of that moment, and a
//! radius moves only once its truth has been observed.
//!
//! Truth arrives late: the value a window predicts `s` rows ahead is known only when a later
//! window's input holds that row. The replay keeps each outcome pending until the first window
//! whose last input row is at or after the predicted row, so no interval uses a truth that
//! would not have been known when it was issued.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};
use tns_certify::{AdaptiveConformal, ConformalCalibration, ConformalError};
use tns_data::WindowSet;
use tns_model::Forecast;

use crate::{Interval, Radii, ScoreContext, Scores};

/// An outcome waiting for its truth to become known.
#[derive(Debug)]
struct Pending {
    /// Time of the predicted row.
    known_at: f64,
    position: usize,
    /// Hour of day of the predicted step (read only when calibrated by hour).
    hour: u8,
    covered: bool,
}

// A min-heap on `known_at` (BinaryHeap is a max-heap, so the order is reversed).
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        other.known_at.total_cmp(&self.known_at)
    }
}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}

/// The radii adaptive conformal inference (step `gamma`, see [`AdaptiveConformal`]) issues
/// for each test window, in window order, replaying the windows by origin time with delayed
/// feedback. One adaptive state serves every series, as in a server that shares a model; a
/// model calibrated by hour gets one tracker per hour of the predicted step.
pub fn adaptive_radii(
    forecasts: &[Forecast],
    test: &WindowSet,
    calibration: &ConformalCalibration,
    gamma: f64,
    context: &ScoreContext,
) -> Result<Vec<Vec<f64>>, ConformalError> {
    let mut aci = AdaptiveConformal::new(calibration, gamma)?;
    let targets = test.targets().max(1);
    let mut order: Vec<usize> = (0..forecasts.len().min(test.len())).collect();
    order.sort_by(|&a, &b| test.origin(a).time.total_cmp(&test.origin(b).time));
    let mut radii = vec![Vec::new(); order.len()];
    let mut pending = BinaryHeap::new();
    for i in order {
        let origin = test.origin(i);
        while pending
            .peek()
            .is_some_and(|p: &Pending| p.known_at <= origin.time)
        {
            if let Some(p) = pending.pop() {
                aci.update(p.position, p.hour, p.covered);
            }
        }
        let mut issued = vec![0.0; forecasts[i].prediction.len()];
        aci.radii_into(&forecasts[i].step_hours, &mut issued);
        for (k, (&y, &r)) in test.output(i).iter().zip(&issued).enumerate() {
            let step = k / targets;
            pending.push(Pending {
                known_at: origin.time + (context.lead + step) as f64 * context.dt,
                position: k,
                hour: forecasts[i].step_hours.get(step).copied().unwrap_or(0),
                covered: {
                    let r = forecasts[i].scaled_radius(k, r);
                    let (lower, upper) = forecasts[i].bounds(k, r, calibration.quantile_regression);
                    lower <= y && y <= upper
                },
            });
        }
        radii[i] = issued;
    }
    Ok(radii)
}

/// The adaptive interval's scores on the test windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveScores {
    /// The ACI step.
    pub gamma: f64,
    /// Mean interval width over every test output.
    pub mean_width: f64,
    /// The scores, with the adaptive intervals.
    pub scores: Scores,
}

/// Scores the adaptive intervals of `forecasts` (see [`adaptive_radii`]).
pub fn adaptive_scores(
    forecasts: &[Forecast],
    test: &WindowSet,
    calibration: &ConformalCalibration,
    gamma: f64,
    context: &ScoreContext,
) -> Result<AdaptiveScores, ConformalError> {
    let radii = adaptive_radii(forecasts, test, calibration, gamma, context)?;
    let (sum, n) = radii
        .iter()
        .zip(forecasts)
        .flat_map(|(r, f)| {
            r.iter().enumerate().map(|(k, &r)| {
                let (lower, upper) =
                    f.bounds(k, f.scaled_radius(k, r), calibration.quantile_regression);
                upper - lower
            })
        })
        .fold((0.0, 0usize), |(s, n), w| (s + w, n + 1));
    let interval = Interval {
        alpha: calibration.alpha,
        radii: Radii::PerWindow(&radii),
        quantile_regression: calibration.quantile_regression,
    };
    Ok(AdaptiveScores {
        gamma,
        mean_width: sum / n.max(1) as f64,
        scores: crate::score(forecasts, test, Some(interval), context),
    })
}

/// One model's row pair in [`interval_table`].
pub struct IntervalRow<'a> {
    /// Model name.
    pub name: &'a str,
    /// Nominal coverage `1 − α`.
    pub nominal: f64,
    /// The calibration's method (`split_conformal`, `normalized_split_conformal`).
    pub method: &'a str,
    /// Split-conformal scores and mean width.
    pub split: (&'a Scores, f64),
    /// The adaptive interval's.
    pub adaptive: &'a AdaptiveScores,
}

/// Split-conformal against adaptive intervals, per model: coverage, mean width, Winkler score
/// and the worst hour of day, in markdown.
pub fn interval_table(rows: &[IntervalRow<'_>]) -> String {
    let mut s = String::from(
        "| model | interval | coverage (nominal) | mean width | Winkler | worst hour coverage |\n|---|---|---:|---:|---:|---|\n",
    );
    for row in rows {
        let gamma = format!("adaptive (γ = {})", row.adaptive.gamma);
        let split = match row.method {
            "normalized_split_conformal" => "normalized conformal",
            "mondrian_hour_split_conformal" => "split conformal by hour",
            "mondrian_hour_normalized_split_conformal" => "normalized conformal by hour",
            "conformalized_quantile_regression" => "CQR",
            "normalized_conformalized_quantile_regression" => "normalized CQR",
            "mondrian_hour_conformalized_quantile_regression" => "CQR by hour",
            "mondrian_hour_normalized_conformalized_quantile_regression" => {
                "normalized CQR by hour"
            }
            _ => "split conformal",
        };
        for (method, scores, width) in [
            (split, row.split.0, row.split.1),
            (
                gamma.as_str(),
                &row.adaptive.scores,
                row.adaptive.mean_width,
            ),
        ] {
            let o = &scores.overall;
            s.push_str(&format!(
                "| {} | {method} | {} ({:.0}%) | {width:.3e} | {} | {} |\n",
                row.name,
                o.coverage
                    .map_or("—".into(), |c| format!("{:.1}%", 100.0 * c)),
                100.0 * row.nominal,
                o.winkler.map_or("—".into(), |w| format!("{w:.3}")),
                crate::scores::worst_hour(scores),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tns_data::WindowOrigin;

    fn forecast(prediction: Vec<f64>) -> Forecast {
        Forecast {
            prediction,
            base: vec![],
            covariance: None,
            correction: None,
            gate_steps: None,
            interval_scale: Vec::new(),
            step_hours: Vec::new(),
            interval_radii: Vec::new(),
            quantile_lower: Vec::new(),
            quantile_upper: Vec::new(),
        }
    }

    #[test]
    fn radii_move_only_after_the_truth_is_known() {
        // Two-step windows at every row, one target; every prediction misses by 10.
        let n = 6;
        let mut test = WindowSet::empty(1, 1, 2, 1);
        for row in 0..n {
            test.push(
                &[0.0],
                &[10.0, 10.0],
                WindowOrigin {
                    series: 0,
                    row,
                    time: row as f64,
                },
            );
        }
        let forecasts: Vec<Forecast> = (0..n).map(|_| forecast(vec![0.0, 0.0])).collect();
        let cal = ConformalCalibration {
            alpha: 0.1,
            n_calibration: 100,
            radii: vec![1.0, 1.0],
            scale: tns_certify::ScoreScale::Absolute,
            by_hour: None,
            quantile_regression: false,
        };
        let context = ScoreContext {
            dt: 1.0,
            lead: 1,
            series: vec![],
            mase_scale: None,
            adaptive_gamma: Some(0.5),
        };
        let radii = adaptive_radii(&forecasts, &test, &cal, 0.5, &context).unwrap();
        // Window 0 predicts rows 1 and 2. Its step-1 miss is known at window 1, its step-2
        // miss at window 2; each miss adds 0.5 · 1 · 0.9 = 0.45.
        assert_eq!(radii[0], vec![1.0, 1.0]);
        assert_eq!(radii[1], vec![1.45, 1.0]);
        assert!((radii[2][0] - 1.9).abs() < 1e-12 && (radii[2][1] - 1.45).abs() < 1e-12);
        let scores = adaptive_scores(&forecasts, &test, &cal, 0.5, &context).unwrap();
        assert_eq!(scores.scores.overall.coverage, Some(0.0));
        let mean: f64 = radii.iter().flatten().sum::<f64>() / 12.0;
        assert!((scores.mean_width - 2.0 * mean).abs() < 1e-12);
    }

    #[test]
    fn windows_are_replayed_in_time_order() {
        // The set lists a later window first; the earlier one must get the initial radii.
        let mut test = WindowSet::empty(1, 1, 1, 1);
        for time in [5.0, 0.0] {
            test.push(
                &[0.0],
                &[3.0],
                WindowOrigin {
                    series: 0,
                    row: time as usize,
                    time,
                },
            );
        }
        let forecasts = vec![forecast(vec![0.0]), forecast(vec![0.0])];
        let cal = ConformalCalibration {
            alpha: 0.2,
            n_calibration: 100,
            radii: vec![1.0],
            scale: tns_certify::ScoreScale::Absolute,
            by_hour: None,
            quantile_regression: false,
        };
        let context = ScoreContext {
            dt: 1.0,
            lead: 1,
            series: vec![],
            mase_scale: None,
            adaptive_gamma: None,
        };
        let radii = adaptive_radii(&forecasts, &test, &cal, 0.1, &context).unwrap();
        assert_eq!(radii[1], vec![1.0]);
        assert!((radii[0][0] - 1.08).abs() < 1e-12);
        assert!(adaptive_radii(&forecasts, &test, &cal, 1.5, &context).is_err());
    }
}

//! The Kalman prior of System B: a constant-velocity model per positional axis (state
//! `[p, v]`, position and optionally velocity observed) or a local linear trend per channel
//! (state `[level, slope]`, level observed), with discrete white-noise acceleration `Q` and
//! diagonal `R`.
//!
//! Axes are independent, so the filter runs per axis on 2×2 matrices. Observations of one
//! axis are processed one scalar at a time; with diagonal `R` this is exactly the joint
//! update (and the sum of the scalar `e²/s` is exactly the joint NIS). Updates use the
//! Joseph form and keep `P` symmetric.
//!
//! ```
//! use tns_kalman::{Axis, AxisParams, KalmanPrior, KalmanSpec};
//! // One axis observed through column 0 (position) and column 1 (velocity), dt = 0.1 s.
//! let spec = KalmanSpec { axes: vec![Axis { position: 0, velocity: Some(1) }], dt: 0.1 };
//! let params = vec![AxisParams { q: 0.01, r_position: 0.01, r_velocity: Some(0.01), initial_velocity_var: 1.0 }];
//! let prior = KalmanPrior::new(spec, params, 2, &[0], 1, 1).unwrap();
//! // A window moving at 1 m/s: the next position is about 0.4 m.
//! let window = [0.0, 1.0, 0.1, 1.0, 0.2, 1.0, 0.3, 1.0];
//! let mut mean = [0.0];
//! let mut cov = [0.0];
//! prior.predict_into(&window, &mut mean, &mut cov);
//! assert!((mean[0] - 0.4).abs() < 1e-9);
//! assert!(cov[0] > 0.01);
//! ```

mod filter;
mod fit;
mod structural;

pub use filter::{AxisFilter, SequenceStats};
pub use fit::fit_params;
pub use structural::{
    FilterOutput, MAX_STATES, RegressorColumns, SEASONS_SYNTAX, Season, StructuralModel,
    StructuralParams, StructuralPrior, StructuralSpec, StructuralStream, Trend, fit_structural,
    less_regression,
};

use serde::{Deserialize, Serialize};

/// Which feature columns observe one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// Column observing the position (or level).
    pub position: usize,
    /// Column observing the velocity (or slope), if any.
    pub velocity: Option<usize>,
}

/// The state-space layout: one `[p, v]` block per axis, sampled every `dt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KalmanSpec {
    /// The axes.
    pub axes: Vec<Axis>,
    /// Sampling interval (seconds for kinematic data; 1 for "per step" trends).
    pub dt: f64,
}

/// Noise parameters of one axis, fitted on the training split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AxisParams {
    /// Variance of the white-noise acceleration (`Q = q · [[dt⁴/4, dt³/2], [dt³/2, dt²]]`).
    pub q: f64,
    /// Measurement-noise variance of the position column.
    pub r_position: f64,
    /// Measurement-noise variance of the velocity column, when velocity is observed.
    pub r_velocity: Option<f64>,
    /// Prior variance of the velocity at the first row when it is not observed.
    pub initial_velocity_var: f64,
}

/// Errors building a prior.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum KalmanError {
    /// A target that no Kalman axis observes.
    #[error(
        "target column {0} is neither the position nor the velocity column of any Kalman axis; the prior can only forecast observed kinematic columns"
    )]
    UnmodelledTarget(usize),
    /// A noise parameter that is not positive and finite.
    #[error("axis {axis}: {what} must be positive and finite, got {value}")]
    BadParameter {
        /// 0-based axis.
        axis: usize,
        /// What was windowed.
        what: &'static str,
        /// The value as read.
        value: f64,
    },
    /// As many parameter sets as axes are needed.
    #[error("{0} parameter sets for {1} axes")]
    ParamCount(usize, usize),
    /// An invalid window specification.
    #[error("Kalman spec: {0}")]
    BadSpec(String),
}

/// 2×2 matrix, row-major.
pub type Mat2 = [[f64; 2]; 2];

/// Which axis component a target observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    /// Axis index.
    pub axis: usize,
    /// 0 = position, 1 = velocity.
    pub component: usize,
}

/// The state-transition power and accumulated process noise for one horizon step.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Transition {
    /// `k · dt`, where `F^k = [[1, k dt], [0, 1]]`.
    k_dt: f64,
    /// `Σ_{i<k} F^i Q₁ F^iᵀ` for unit `q` (scaled by each axis' `q`).
    q_sum: Mat2,
}

/// A configured prior: filters each window and predicts the targets `lead … lead+H-1`
/// steps after its last row, with the predictive observation covariance `S_h`.
#[derive(Debug, Clone, PartialEq)]
pub struct KalmanPrior {
    spec: KalmanSpec,
    params: Vec<AxisParams>,
    features: usize,
    targets: Vec<TargetRef>,
    transitions: Vec<Transition>,
    /// For each axis, the targets (index into `targets`) it feeds.
    axis_targets: Vec<Vec<usize>>,
    /// What filtering windows of one length always computes the same way.
    schedule: Option<GainSchedule>,
}

/// The data-independent part of filtering windows of one length: the covariance recursion
/// never reads an observation, so every update's gain and the predictive covariance the window
/// ends with are the same for every window. With them a window costs only its mean updates,
/// computed by the same expressions as the filter's (`filter::corrected`), so the results are
/// the same to the last bit. Windows of [`MAP_MIN_ROWS`] rows or more go further: the mean
/// updates are linear in the window, so each axis' final state is one precomputed
/// [`AxisMap`] of its observed columns.
#[derive(Debug, Clone, PartialEq)]
struct GainSchedule {
    rows: usize,
    /// Per axis, per row after the first: the gains of its position and velocity updates.
    gains: Vec<Vec<[[f64; 2]; 2]>>,
    /// Per axis with targets, for windows of at least [`MAP_MIN_ROWS`] rows: its final state
    /// as a linear map of the window.
    maps: Vec<Option<AxisMap>>,
    /// The predictive observation covariance `[H, T, T]`.
    cov: Vec<f64>,
}

/// From this many window rows on, a window's mean updates are replaced by one linear map
/// ([`AxisMap`]). The updates are a chain of dependent operations, one row after another
/// (about 6 µs for 256 rows and two axes), while the map's products are independent and run
/// at the core's throughput. Shorter windows keep the updates: they cost little there, and
/// they give the whole filter's bits, which golden model files written before the map (10
/// rows) are checked against bit for bit. The map equals the updates to rounding (1e-9
/// relative, tested).
pub const MAP_MIN_ROWS: usize = 32;

/// One axis' filtered state after a window, `[p, v]`, as a linear map of the window's
/// columns that observe the axis: `x = Σ_c Σ_t w_c[t] · window[t, c]`. The mean updates of
/// the filter (from `initial_state` on) are linear in the observations and never add a
/// constant, so the map is exact up to rounding; its weights are the states of windows with
/// a single 1. An axis that feeds a single forecast (one target, one step) maps straight to
/// that forecast, with half the weights.
#[derive(Debug, Clone, PartialEq)]
enum AxisMap {
    /// Per observed column (position, then velocity if observed): the column, and per
    /// window row the weights of its value in `p` and `v`.
    State(Vec<(usize, Vec<[f64; 2]>)>),
    /// The forecast's index in the mean, and per observed column the column and per window
    /// row the weight of its value in the forecast.
    Forecast(usize, Vec<(usize, Vec<[f64; 1]>)>),
}

impl AxisMap {
    /// Probes the scheduled updates of `axis` with unit windows.
    fn probe(prior: &KalmanPrior, axis: usize, gains: &[[[f64; 2]; 2]], rows: usize) -> Self {
        let a = prior.spec.axes[axis];
        let observed = a
            .velocity
            .filter(|_| prior.params[axis].r_velocity.is_some());
        let features = prior.features;
        let mut window = vec![0.0; rows * features];
        let columns: Vec<(usize, Vec<[f64; 2]>)> = std::iter::once(a.position)
            .chain(observed)
            .map(|column| {
                let weights = (0..rows)
                    .map(|t| {
                        window[t * features + column] = 1.0;
                        let x = prior.scheduled_state(axis, gains, &window);
                        window[t * features + column] = 0.0;
                        x
                    })
                    .collect();
                (column, weights)
            })
            .collect();
        match (
            prior.transitions.as_slice(),
            prior.axis_targets[axis].as_slice(),
        ) {
            ([only_step], [only_target]) => {
                let component = prior.targets[*only_target].component;
                let forecast = columns
                    .into_iter()
                    .map(|(column, states)| {
                        let weights = states
                            .iter()
                            .map(|&x| [filter::predicted(x, only_step.k_dt)[component]])
                            .collect();
                        (column, weights)
                    })
                    .collect();
                Self::Forecast(*only_target, forecast)
            }
            _ => Self::State(columns),
        }
    }
}

/// `Σ_c Σ_t w_c[t] · window[t, c]` for `LANES` weights per row (`[f64; LANES]`), four rows
/// at a time into independent sums: the products do not wait on each other, which is the
/// point of the map.
fn map_sums<const LANES: usize>(
    columns: &[(usize, Vec<[f64; LANES]>)],
    window: &[f64],
    features: usize,
) -> [f64; LANES] {
    let mut x = [0.0; LANES];
    for (column, weights) in columns {
        let mut sums = [[0.0; LANES]; 4];
        let mut blocks = weights.chunks_exact(4);
        for (w, block) in (&mut blocks).zip(window.chunks_exact(4 * features)) {
            for (lane, (w, row)) in w.iter().zip(block.chunks_exact(features)).enumerate() {
                let y = row[*column];
                for (s, w) in sums[lane].iter_mut().zip(w) {
                    *s += w * y;
                }
            }
        }
        let done = weights.len() - blocks.remainder().len();
        let rows = window.chunks_exact(features).skip(done);
        for (w, row) in blocks.remainder().iter().zip(rows) {
            for (s, w) in sums[0].iter_mut().zip(w) {
                *s += w * row[*column];
            }
        }
        for (c, xc) in x.iter_mut().enumerate() {
            *xc += (sums[0][c] + sums[1][c]) + (sums[2][c] + sums[3][c]);
        }
    }
    x
}

impl KalmanPrior {
    /// Builds a prior for windows of `features` columns forecasting the `targets` columns
    /// at `lead, …, lead + horizon - 1` steps ahead.
    pub fn new(
        spec: KalmanSpec,
        params: Vec<AxisParams>,
        features: usize,
        targets: &[usize],
        lead: usize,
        horizon: usize,
    ) -> Result<Self, KalmanError> {
        if params.len() != spec.axes.len() {
            return Err(KalmanError::ParamCount(params.len(), spec.axes.len()));
        }
        if !(spec.dt.is_finite() && spec.dt > 0.0) {
            return Err(KalmanError::BadSpec(format!(
                "dt must be positive, got {}",
                spec.dt
            )));
        }
        if lead == 0 || horizon == 0 {
            return Err(KalmanError::BadSpec(
                "lead and horizon must be at least 1".into(),
            ));
        }
        for (i, axis) in spec.axes.iter().enumerate() {
            let cols = [Some(axis.position), axis.velocity];
            if cols.iter().flatten().any(|&c| c >= features) {
                return Err(KalmanError::BadSpec(format!(
                    "axis {i} names a column ≥ the {features} features"
                )));
            }
        }
        for (axis, p) in params.iter().enumerate() {
            let mut checks = vec![
                ("q", p.q),
                ("r_position", p.r_position),
                ("initial_velocity_var", p.initial_velocity_var),
            ];
            if let Some(rv) = p.r_velocity {
                checks.push(("r_velocity", rv));
            }
            for (what, value) in checks {
                if !(value.is_finite() && value > 0.0) {
                    return Err(KalmanError::BadParameter { axis, what, value });
                }
            }
            if p.r_velocity.is_some() != spec.axes[axis].velocity.is_some() {
                return Err(KalmanError::BadSpec(format!(
                    "axis {axis}: r_velocity must be given exactly when velocity is observed"
                )));
            }
        }
        let targets: Vec<TargetRef> = targets
            .iter()
            .map(|&c| {
                spec.axes
                    .iter()
                    .enumerate()
                    .find_map(|(axis, a)| {
                        if a.position == c {
                            Some(TargetRef { axis, component: 0 })
                        } else if a.velocity == Some(c) {
                            Some(TargetRef { axis, component: 1 })
                        } else {
                            None
                        }
                    })
                    .ok_or(KalmanError::UnmodelledTarget(c))
            })
            .collect::<Result<_, _>>()?;
        let axis_targets = (0..spec.axes.len())
            .map(|a| {
                (0..targets.len())
                    .filter(|&j| targets[j].axis == a)
                    .collect()
            })
            .collect();
        let transitions = transitions(spec.dt, lead, horizon);
        Ok(Self {
            spec,
            params,
            features,
            targets,
            transitions,
            axis_targets,
            schedule: None,
        })
    }

    /// This prior with the gains and covariance of windows of `rows` rows computed once:
    /// `predict_into` on such windows then runs only the mean updates (the same bits as the
    /// whole filter), or from [`MAP_MIN_ROWS`] rows on one precomputed linear map per axis
    /// (the same to rounding); windows of other lengths run the whole filter.
    pub fn with_window_rows(mut self, rows: usize) -> Self {
        self.schedule = None;
        if rows == 0 {
            return self;
        }
        let zeros = vec![0.0; rows * self.features];
        let gains: Vec<Vec<_>> = self
            .spec
            .axes
            .iter()
            .zip(&self.params)
            .map(|(axis, &p)| {
                let mut f = AxisFilter::start(*axis, p, self.spec.dt, &zeros[..self.features]);
                zeros
                    .chunks_exact(self.features)
                    .skip(1)
                    .map(|row| f.step_with_gains(row))
                    .collect()
            })
            .collect();
        let maps = (0..self.spec.axes.len())
            .map(|a| {
                (rows >= MAP_MIN_ROWS && !self.axis_targets[a].is_empty())
                    .then(|| AxisMap::probe(&self, a, &gains[a], rows))
            })
            .collect();
        let (t, h) = (self.targets.len(), self.transitions.len());
        let (mut mean, mut cov) = (vec![0.0; h * t], vec![0.0; h * t * t]);
        self.filter_into(&zeros, &mut mean, &mut cov);
        self.schedule = Some(GainSchedule {
            rows,
            gains,
            maps,
            cov,
        });
        self
    }

    /// The layout.
    pub fn spec(&self) -> &KalmanSpec {
        &self.spec
    }

    /// The fitted parameters, one per axis.
    pub fn params(&self) -> &[AxisParams] {
        &self.params
    }

    /// Number of targets `T`.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Number of horizon steps `H`.
    pub fn horizon(&self) -> usize {
        self.transitions.len()
    }

    /// Filters `window` (`[L, features]` row-major, `L ≥ 1`) and writes the predictive mean
    /// `[H, T]` and observation covariance `S_h` (`[H, T, T]`, symmetric positive definite)
    /// of the targets. Allocates nothing.
    pub fn predict_into(&self, window: &[f64], mean: &mut [f64], cov: &mut [f64]) {
        let (t, h) = (self.targets.len(), self.transitions.len());
        assert_eq!(
            window.len() % self.features,
            0,
            "window length is not a multiple of the feature count"
        );
        assert!(!window.is_empty(), "empty window");
        assert_eq!(mean.len(), h * t, "mean buffer shape");
        assert_eq!(cov.len(), h * t * t, "covariance buffer shape");
        match &self.schedule {
            Some(s) if window.len() == s.rows * self.features => {
                self.scheduled_into(s, window, mean, cov)
            }
            _ => self.filter_into(window, mean, cov),
        }
    }

    /// The means by the gain schedule; the covariance is the schedule's.
    fn scheduled_into(
        &self,
        schedule: &GainSchedule,
        window: &[f64],
        mean: &mut [f64],
        cov: &mut [f64],
    ) {
        let t = self.targets.len();
        cov.copy_from_slice(&schedule.cov);
        for a in 0..self.spec.axes.len() {
            if self.axis_targets[a].is_empty() {
                continue;
            }
            let x = match &schedule.maps[a] {
                Some(AxisMap::Forecast(i, columns)) => {
                    // One step, so the forecast's index is its target's.
                    let [forecast] = map_sums(columns, window, self.features);
                    mean[*i] = forecast;
                    continue;
                }
                Some(AxisMap::State(columns)) => map_sums(columns, window, self.features),
                None => self.scheduled_state(a, &schedule.gains[a], window),
            };
            for (step, tr) in self.transitions.iter().enumerate() {
                let forecast = filter::predicted(x, tr.k_dt);
                for &i in &self.axis_targets[a] {
                    mean[step * t + i] = forecast[self.targets[i].component];
                }
            }
        }
    }

    /// Axis `a`'s state after the mean updates of `window` with the scheduled `gains`.
    fn scheduled_state(&self, a: usize, gains: &[[[f64; 2]; 2]], window: &[f64]) -> [f64; 2] {
        let (axis, p) = (self.spec.axes[a], self.params[a]);
        let mut x = filter::initial_state(axis, p, &window[..self.features]);
        let velocity = axis.velocity.filter(|_| p.r_velocity.is_some());
        for (row, [kp, kv]) in window.chunks_exact(self.features).skip(1).zip(gains) {
            x = filter::predicted(x, self.spec.dt);
            x = filter::corrected(x, *kp, row[axis.position] - x[0]);
            if let Some(c) = velocity {
                x = filter::corrected(x, *kv, row[c] - x[1]);
            }
        }
        x
    }

    /// The whole filter over `window`.
    fn filter_into(&self, window: &[f64], mean: &mut [f64], cov: &mut [f64]) {
        let t = self.targets.len();
        cov.fill(0.0);
        for (a, axis) in self.spec.axes.iter().enumerate() {
            if self.axis_targets[a].is_empty() {
                continue;
            }
            let p = self.params[a];
            let mut f = AxisFilter::start(*axis, p, self.spec.dt, &window[..self.features]);
            for row in window.chunks_exact(self.features).skip(1) {
                f.step(row);
            }
            for (step, tr) in self.transitions.iter().enumerate() {
                let (x, pk) = f.forecast(tr.k_dt, &tr.q_sum);
                let r = [p.r_position, p.r_velocity.unwrap_or(0.0)];
                for &i in &self.axis_targets[a] {
                    let ci = self.targets[i].component;
                    mean[step * t + i] = x[ci];
                    for &j in &self.axis_targets[a] {
                        let cj = self.targets[j].component;
                        let noise = if ci == cj { r[ci] } else { 0.0 };
                        cov[(step * t + i) * t + j] = pk[ci][cj] + noise;
                    }
                }
            }
        }
    }
}

/// `F^k` and `Σ_{i<k} F^i Q₁ F^iᵀ` (unit `q`) for `k = lead … lead + horizon - 1`, built with
/// the recursion `Qsum_{k+1} = Q₁ + F Qsum_k Fᵀ`.
fn transitions(dt: f64, lead: usize, horizon: usize) -> Vec<Transition> {
    let q1 = unit_process_noise(dt);
    let mut q_sum = [[0.0; 2]; 2];
    let mut out = Vec::with_capacity(horizon);
    for k in 1..lead + horizon {
        q_sum = add(&q1, &propagate(&q_sum, dt));
        if k >= lead {
            out.push(Transition {
                k_dt: k as f64 * dt,
                q_sum,
            });
        }
    }
    out
}

/// Discrete white-noise acceleration for `q = 1`.
pub fn unit_process_noise(dt: f64) -> Mat2 {
    let (d2, d3, d4) = (dt * dt, dt * dt * dt, dt * dt * dt * dt);
    [[d4 / 4.0, d3 / 2.0], [d3 / 2.0, d2]]
}

/// `F P Fᵀ` with `F = [[1, dt], [0, 1]]`.
pub fn propagate(p: &Mat2, dt: f64) -> Mat2 {
    let p00 = p[0][0] + dt * (p[0][1] + p[1][0]) + dt * dt * p[1][1];
    let p01 = p[0][1] + dt * p[1][1];
    [[p00, p01], [p01, p[1][1]]]
}

fn add(a: &Mat2, b: &Mat2) -> Mat2 {
    [
        [a[0][0] + b[0][0], a[0][1] + b[0][1]],
        [a[1][0] + b[1][0], a[1][1] + b[1][1]],
    ]
}

#[cfg(test)]
mod tests;

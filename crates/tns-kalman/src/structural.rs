//! A structural time-series prior (Harvey's basic structural model, as statsmodels'
//! `UnobservedComponents` writes it): a local level (optionally with a slope) plus
//! trigonometric seasonal components, `K` harmonics per period, each a pair of states rotating
//! by `λ_j = 2πj / period`, observed through the level and the first state of every pair with
//! white noise. Variances (level, slope, one per season, observation) are fitted by maximum
//! likelihood on the training rows, one model per target.
//!
//! On a window the filter starts from an approximately diffuse state (mean 0, variance `κ I`)
//! on the window taken relative to its last value, so the prior is a linear map of the
//! window whose gains do not depend on the data: they are computed once per model, and a
//! prediction costs `O(L · n)` for `n` states.

use serde::{Deserialize, Serialize};

use crate::KalmanError;

/// Largest state dimension of a structural model.
pub const MAX_STATES: usize = 256;

/// The stochastic trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trend {
    /// A random-walk level.
    Level,
    /// A level with a random-walk slope (local linear trend).
    LocalLinear,
    /// A level with a damped slope: `μ_{t+1} = μ_t + φ ν_t + η_t`, `ν_{t+1} = φ ν_t + ζ_t`,
    /// `0 < φ < 1` fitted by maximum likelihood with the variances. The slope's forecast
    /// decays geometrically, so a day ahead it no longer extrapolates the last hours' slope
    /// as the local linear trend does (Gardner & McKenzie's damped trend, in state-space
    /// form).
    Damped,
}

/// One seasonal component.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Season {
    /// Period in rows (24 for a day of hourly rows).
    pub period: f64,
    /// Harmonics `K` (each adds two states).
    pub harmonics: usize,
}

/// The components of a structural prior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuralSpec {
    /// The trend.
    pub trend: Trend,
    /// The seasonal components.
    pub seasons: Vec<Season>,
    /// Variance of the approximately diffuse initial state (statsmodels' default is 1e6).
    pub initial_variance: f64,
    /// Regression columns: `y_t = β·x_t + (level + seasons)_t + ε_t`, with `β` fitted by
    /// maximum likelihood beside the variances (statsmodels' `exog` with
    /// `mle_regression=True`). Each is a window column in the past and a known-future input
    /// over the horizon, so the forecast adds `β·x` of the predicted rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regressors: Vec<String>,
}

/// The forms `--seasons` accepts.
pub const SEASONS_SYNTAX: &str = "PERIOD:HARMONICS[,PERIOD:HARMONICS…], e.g. 24:4,168:2";

impl StructuralSpec {
    /// Parses `--seasons 24:4,168:2`.
    pub fn parse_seasons(list: &str) -> Result<Vec<Season>, KalmanError> {
        list.split(',')
            .map(|item| {
                let bad = || {
                    KalmanError::BadSpec(format!(
                        "cannot read season {item:?}; use {SEASONS_SYNTAX}"
                    ))
                };
                let (p, k) = item.trim().split_once(':').ok_or_else(bad)?;
                Ok(Season {
                    period: p.trim().parse().map_err(|_| bad())?,
                    harmonics: k.trim().parse().map_err(|_| bad())?,
                })
            })
            .collect()
    }

    /// Checks periods, harmonics and the initial variance.
    pub fn validate(&self) -> Result<(), KalmanError> {
        for s in &self.seasons {
            if !(s.period.is_finite() && s.period >= 2.0) || s.harmonics == 0 {
                return Err(KalmanError::BadSpec(format!(
                    "a season needs a period of at least 2 rows and at least one harmonic, got {s:?}"
                )));
            }
            if 2 * s.harmonics > s.period as usize {
                return Err(KalmanError::BadSpec(format!(
                    "period {} has at most {} harmonics, got {}",
                    s.period,
                    s.period as usize / 2,
                    s.harmonics
                )));
            }
        }
        if !(self.initial_variance.is_finite() && self.initial_variance > 0.0) {
            return Err(KalmanError::BadSpec(
                "the initial variance must be positive".into(),
            ));
        }
        if self.states() > MAX_STATES {
            return Err(KalmanError::BadSpec(format!(
                "{} states exceed the limit of {MAX_STATES}",
                self.states()
            )));
        }
        Ok(())
    }

    /// State dimension `n`.
    pub fn states(&self) -> usize {
        self.trend_states() + self.seasons.iter().map(|s| 2 * s.harmonics).sum::<usize>()
    }

    fn trend_states(&self) -> usize {
        match self.trend {
            Trend::Level => 1,
            Trend::LocalLinear | Trend::Damped => 2,
        }
    }

    fn has_slope(&self) -> bool {
        self.trend != Trend::Level
    }

    /// Variances the model has: level, (slope), one per season, observation.
    pub fn parameter_count(&self) -> usize {
        self.trend_states() + self.seasons.len() + 1
    }
}

/// The fitted variances of one target's structural model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuralParams {
    /// Level disturbance variance.
    pub level: f64,
    /// Slope disturbance variance (local linear trend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    /// One disturbance variance per season (shared by its states).
    pub seasonal: Vec<f64>,
    /// Observation noise variance.
    pub observation: f64,
    /// Regression coefficients, one per [`StructuralSpec::regressors`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regression: Vec<f64>,
    /// The slope's damping factor `φ` ([`Trend::Damped`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping: Option<f64>,
    /// Log-likelihood at these parameters on the fitting rows (burn-in excluded).
    pub log_likelihood: f64,
}

impl StructuralParams {
    fn from_vector(spec: &StructuralSpec, v: &[f64]) -> Self {
        let slope = spec.has_slope().then(|| v[1]);
        let first = spec.trend_states();
        Self {
            level: v[0],
            slope,
            seasonal: v[first..first + spec.seasons.len()].to_vec(),
            observation: v[spec.parameter_count() - 1],
            regression: Vec::new(),
            damping: None,
            log_likelihood: f64::NAN,
        }
    }

    fn check(&self, spec: &StructuralSpec) -> Result<(), KalmanError> {
        let values = std::iter::once(self.level)
            .chain(self.slope)
            .chain(self.seasonal.iter().copied())
            .chain(std::iter::once(self.observation));
        if self.seasonal.len() != spec.seasons.len()
            || self.slope.is_some() != spec.has_slope()
            || self.damping.is_some() != (spec.trend == Trend::Damped)
            || self.regression.len() != spec.regressors.len()
        {
            return Err(KalmanError::BadSpec(
                "structural parameters do not match the components".into(),
            ));
        }
        for (i, v) in values.enumerate() {
            if !(v.is_finite() && v >= 0.0) {
                return Err(KalmanError::BadParameter {
                    axis: i,
                    what: "structural variance",
                    value: v,
                });
            }
        }
        if let Some((i, &b)) = self
            .regression
            .iter()
            .enumerate()
            .find(|(_, b)| !b.is_finite())
        {
            return Err(KalmanError::BadParameter {
                axis: i,
                what: "regression coefficient",
                value: b,
            });
        }
        if let Some(phi) = self.damping.filter(|phi| !(*phi > 0.0 && *phi < 1.0)) {
            return Err(KalmanError::BadParameter {
                axis: 0,
                what: "damping factor (must lie in (0, 1))",
                value: phi,
            });
        }
        if self.observation <= 0.0 {
            return Err(KalmanError::BadParameter {
                axis: 0,
                what: "observation variance",
                value: self.observation,
            });
        }
        Ok(())
    }
}

/// The state-space matrices of one model: block-diagonal transition, observation vector,
/// diagonal state noise.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuralModel {
    n: usize,
    /// 2×2 blocks (or 1×1 for a level) along the diagonal: `(first state, [[a, b], [c, d]],
    /// size)`.
    blocks: Vec<(usize, [[f64; 2]; 2], usize)>,
    z: Vec<f64>,
    q: Vec<f64>,
    h: f64,
    kappa: f64,
}

/// What [`StructuralModel::filter`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOutput {
    /// Log-likelihood of the observations after the first `n` (the approximate diffuse
    /// burn-in, as statsmodels counts it).
    pub log_likelihood: f64,
    /// Filtered state means `a_{t|t}`, `[rows, n]`.
    pub filtered: Vec<f64>,
}

impl StructuralModel {
    /// The matrices of `spec` with `params`.
    pub fn new(spec: &StructuralSpec, params: &StructuralParams) -> Self {
        let n = spec.states();
        let mut blocks = Vec::new();
        let mut q = Vec::with_capacity(n);
        let mut z = vec![0.0; n];
        z[0] = 1.0;
        match spec.trend {
            Trend::Level => {
                blocks.push((0, [[1.0, 0.0], [0.0, 0.0]], 1));
                q.push(params.level);
            }
            Trend::LocalLinear | Trend::Damped => {
                let phi = params.damping.unwrap_or(1.0);
                blocks.push((0, [[1.0, phi], [0.0, phi]], 2));
                q.push(params.level);
                q.push(params.slope.unwrap_or(0.0));
            }
        }
        let mut at = spec.trend_states();
        for (s, var) in spec.seasons.iter().zip(&params.seasonal) {
            for j in 1..=s.harmonics {
                let lambda = std::f64::consts::TAU * j as f64 / s.period;
                let (sin, cos) = lambda.sin_cos();
                blocks.push((at, [[cos, sin], [-sin, cos]], 2));
                z[at] = 1.0;
                q.push(*var);
                q.push(*var);
                at += 2;
            }
        }
        Self {
            n,
            blocks,
            z,
            q,
            h: params.observation,
            kappa: spec.initial_variance,
        }
    }

    /// State dimension.
    pub fn states(&self) -> usize {
        self.n
    }

    /// The observed value of state `a`, `Z a`.
    fn observe(&self, a: &[f64]) -> f64 {
        self.z.iter().zip(a).map(|(z, x)| z * x).sum()
    }

    /// The variance of an observation under state covariance `p`, `Z P Zᵀ + h`.
    fn observed_variance(&self, p: &[f64]) -> f64 {
        let n = self.n;
        let zpz: f64 = (0..n)
            .map(|r| self.z[r] * (0..n).map(|c| p[r * n + c] * self.z[c]).sum::<f64>())
            .sum();
        zpz + self.h
    }

    /// `x ← T x`.
    fn transition(&self, x: &mut [f64]) {
        self.apply_blocks(x, false);
    }

    /// `x ← T x`, or `x ← Tᵀ x` when `transposed`.
    fn apply_blocks(&self, x: &mut [f64], transposed: bool) {
        for &(i, m, size) in &self.blocks {
            if size == 1 {
                x[i] *= m[0][0];
                continue;
            }
            let m = if transposed {
                [[m[0][0], m[1][0]], [m[0][1], m[1][1]]]
            } else {
                m
            };
            let (a, b) = (x[i], x[i + 1]);
            x[i] = m[0][0] * a + m[0][1] * b;
            x[i + 1] = m[1][0] * a + m[1][1] * b;
        }
    }

    /// `P ← T P Tᵀ + Q` (P dense `n × n`, row-major).
    fn predict_covariance(&self, p: &mut [f64], column: &mut [f64]) {
        let n = self.n;
        // Rows: P ← T P.
        for c in 0..n {
            for r in 0..n {
                column[r] = p[r * n + c];
            }
            self.transition(column);
            for r in 0..n {
                p[r * n + c] = column[r];
            }
        }
        // Columns: P ← P Tᵀ.
        for r in 0..n {
            self.transition(&mut p[r * n..(r + 1) * n]);
        }
        for (i, q) in self.q.iter().enumerate() {
            p[i * n + i] += q;
        }
    }

    /// The scalar update with observation `y` (NaN: skipped). Returns the innovation `v`,
    /// its variance `F` and leaves the gain in `gain`.
    fn update(&self, a: &mut [f64], p: &mut [f64], y: f64, gain: &mut [f64]) -> (f64, f64) {
        let n = self.n;
        // P Zᵀ.
        for (r, g) in gain.iter_mut().enumerate() {
            *g = (0..n).map(|c| p[r * n + c] * self.z[c]).sum();
        }
        let f: f64 = self
            .z
            .iter()
            .zip(gain.iter())
            .map(|(z, g)| z * g)
            .sum::<f64>()
            + self.h;
        let v = y - self.observe(a);
        for (x, g) in a.iter_mut().zip(gain.iter()) {
            *x += g / f * v;
        }
        // P ← P − P Zᵀ Z P / F, kept symmetric.
        for r in 0..n {
            for c in r..n {
                let value = p[r * n + c] - gain[r] * gain[c] / f;
                p[r * n + c] = value;
                p[c * n + r] = value;
            }
        }
        for g in gain.iter_mut() {
            *g /= f;
        }
        (v, f)
    }

    /// Filters `y` from the approximately diffuse start: the log-likelihood (burn-in of `n`
    /// observations excluded) and the filtered means.
    pub fn filter(&self, y: &[f64]) -> FilterOutput {
        let n = self.n;
        let (mut a, mut p) = (vec![0.0; n], self.initial_covariance());
        let (mut gain, mut column) = (vec![0.0; n], vec![0.0; n]);
        let mut log_likelihood = 0.0;
        let mut filtered = Vec::with_capacity(y.len() * n);
        for (t, &value) in y.iter().enumerate() {
            let (v, f) = self.update(&mut a, &mut p, value, &mut gain);
            if t >= n {
                log_likelihood -= 0.5 * ((std::f64::consts::TAU).ln() + f.ln() + v * v / f);
            }
            filtered.extend_from_slice(&a);
            self.transition(&mut a);
            self.predict_covariance(&mut p, &mut column);
        }
        FilterOutput {
            log_likelihood,
            filtered,
        }
    }

    fn initial_covariance(&self) -> Vec<f64> {
        let n = self.n;
        let mut p = vec![0.0; n * n];
        for i in 0..n {
            p[i * n + i] = self.kappa;
        }
        p
    }
}

/// Per-window forecasts of one target: the gains of every window row (they do not depend on
/// the data), the rows `Z Tᵏ` of each forecast step and its predictive variance.
#[derive(Debug, Clone, PartialEq)]
struct WindowPlan {
    model: StructuralModel,
    /// `[L, n]`: the gain applied at each window row.
    gains: Vec<f64>,
    /// `[H, n]`: `Z Tᵏ` for each forecast step.
    readout: Vec<f64>,
    /// `Z P_{L+k} Zᵀ + h` per forecast step.
    variance: Vec<f64>,
}

impl WindowPlan {
    fn new(model: StructuralModel, lookback: usize, lead: usize, horizon: usize) -> Self {
        let n = model.n;
        let mut p = model.initial_covariance();
        let (mut a, mut gain, mut column) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let mut gains = Vec::with_capacity(lookback * n);
        for t in 0..lookback {
            model.update(&mut a, &mut p, 0.0, &mut gain);
            gains.extend_from_slice(&gain);
            if t + 1 < lookback {
                model.predict_covariance(&mut p, &mut column);
            }
        }
        let (mut readout, mut variance) = (Vec::new(), Vec::new());
        for k in 1..lead + horizon {
            model.predict_covariance(&mut p, &mut column);
            if k >= lead {
                // Z Tᵏ: the transposed transition applied k times to Z.
                let mut row = model.z.clone();
                for _ in 0..k {
                    model.apply_blocks(&mut row, true);
                }
                readout.extend_from_slice(&row);
                variance.push(model.observed_variance(&p));
            }
        }
        Self {
            model,
            gains,
            readout,
            variance,
        }
    }

    /// Filters a window column `y` (`[L]`, strided by `stride` in `window`) less its
    /// regression `β·x` (`x`: the `regressors` columns of the same rows) into `state`, and
    /// returns the last row's value less its regression, the level the forecast builds on.
    fn forecast(
        &self,
        window: &[f64],
        stride: usize,
        column: usize,
        (beta, regressors): (&[f64], &[usize]),
        state: &mut [f64],
    ) -> f64 {
        let n = self.model.n;
        let adjusted = |row: &[f64]| row[column] - regression(beta, regressors, row);
        let last = adjusted(&window[window.len() - stride..]);
        state.fill(0.0);
        let rows = window.len() / stride;
        for (t, gain) in self.gains.chunks_exact(n).enumerate().take(rows) {
            let y = adjusted(&window[t * stride..(t + 1) * stride]) - last;
            let v = y - self.model.observe(state);
            for (x, g) in state.iter_mut().zip(gain) {
                *x += g * v;
            }
            if t + 1 < rows {
                self.model.transition(state);
            }
        }
        last
    }
}

/// The structural prior of a model: one fitted model per target, filtered over each window.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuralPrior {
    features: usize,
    targets: Vec<usize>,
    lead: usize,
    horizon: usize,
    plans: Vec<WindowPlan>,
    /// `β` per target.
    betas: Vec<Vec<f64>>,
    /// Where each regressor is: its window column, and its column in a row of the future
    /// block (`future_width` values per predicted row).
    regressors: Vec<usize>,
    future_regressors: Vec<usize>,
    future_width: usize,
}

/// Where a structural prior's regressors are found: window columns, and columns of a row of
/// the known-future block (`width` values per predicted row).
#[derive(Debug, Clone, Default)]
pub struct RegressorColumns {
    /// Window column of each regressor.
    pub past: Vec<usize>,
    /// Column of each regressor in a future-block row.
    pub future: Vec<usize>,
    /// Values per future-block row.
    pub width: usize,
}

impl StructuralPrior {
    /// A prior for windows of `lookback` rows of `features` columns forecasting the
    /// `targets` columns `lead … lead + horizon − 1` rows after the last one.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &StructuralSpec,
        params: &[StructuralParams],
        features: usize,
        targets: &[usize],
        lookback: usize,
        lead: usize,
        horizon: usize,
        regressors: &RegressorColumns,
    ) -> Result<Self, KalmanError> {
        spec.validate()?;
        if params.len() != targets.len() {
            return Err(KalmanError::ParamCount(params.len(), targets.len()));
        }
        if lookback == 0 || lead == 0 || horizon == 0 {
            return Err(KalmanError::BadSpec(
                "lookback, lead and horizon must be at least 1".into(),
            ));
        }
        if let Some(&c) = targets.iter().find(|&&c| c >= features) {
            return Err(KalmanError::UnmodelledTarget(c));
        }
        for p in params {
            p.check(spec)?;
        }
        let k = spec.regressors.len();
        if regressors.past.len() != k
            || regressors.future.len() != k
            || regressors.past.iter().any(|&c| c >= features)
            || regressors.future.iter().any(|&c| c >= regressors.width)
        {
            return Err(KalmanError::BadSpec(format!(
                "the {k} regressors need a window column and a future column each"
            )));
        }
        let plans = params
            .iter()
            .map(|p| WindowPlan::new(StructuralModel::new(spec, p), lookback, lead, horizon))
            .collect();
        Ok(Self {
            features,
            targets: targets.to_vec(),
            lead,
            horizon,
            plans,
            betas: params.iter().map(|p| p.regression.clone()).collect(),
            regressors: regressors.past.clone(),
            future_regressors: regressors.future.clone(),
            future_width: regressors.width,
        })
    }

    /// State dimension of each target's model.
    pub fn states(&self) -> usize {
        self.plans.first().map_or(0, |p| p.model.n)
    }

    /// Filters `window` (`[L, features]`) and writes the predictive mean `[H, T]` and the
    /// (diagonal: targets are modelled apart) covariance `[H, T, T]`; `future` is the
    /// known-future block (`[H, width]`, read for the regressors only). No allocation: the
    /// state lives on the stack ([`MAX_STATES`] at most).
    pub fn predict_into(&self, window: &[f64], future: &[f64], mean: &mut [f64], cov: &mut [f64]) {
        let t = self.targets.len();
        let mut buffer = [0.0; MAX_STATES];
        cov.fill(0.0);
        for (j, (plan, &column)) in self.plans.iter().zip(&self.targets).enumerate() {
            let n = plan.model.n;
            let state = &mut buffer[..n];
            let beta = &self.betas[j];
            let last = plan.forecast(
                window,
                self.features,
                column,
                (beta, &self.regressors),
                state,
            );
            for k in 0..self.horizon {
                let row = &plan.readout[k * n..(k + 1) * n];
                let future_row = &future[k * self.future_width..];
                mean[k * t + j] = last
                    + regression(beta, &self.future_regressors, future_row)
                    + row
                        .iter()
                        .zip(state.iter())
                        .map(|(r, x)| r * x)
                        .sum::<f64>();
                cov[(k * t + j) * t + j] = plan.variance[k];
            }
        }
    }
}

/// A structural prior's filter carried along a stream: one state mean and covariance per
/// target, advanced by one time update and one observation update per row — `O(n²)` per
/// target (the transition is block-diagonal), whatever the number of rows seen. Unlike the
/// windowed prior ([`StructuralPrior::predict_into`], a fresh diffuse start on every window
/// taken relative to its last value) it filters the values themselves from the stream's
/// first row, as [`StructuralModel::filter`] does: after many rows its state holds more
/// history than any calibration window.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuralStream {
    /// Per target: its model, its column and its regression coefficients.
    models: Vec<StructuralModel>,
    targets: Vec<usize>,
    betas: Vec<Vec<f64>>,
    /// Regressors' window columns and their columns in a future-block row.
    regressors: Vec<usize>,
    future_regressors: Vec<usize>,
    future_width: usize,
    lead: usize,
    horizon: usize,
    /// Per target: the filtered mean `a_{t|t}` `[n]` and covariance `P_{t|t}` `[n, n]`.
    means: Vec<Vec<f64>>,
    covariances: Vec<Vec<f64>>,
    /// Scratch: a mean, a covariance, the gain and a column.
    mean: Vec<f64>,
    covariance: Vec<f64>,
    gain: Vec<f64>,
    column: Vec<f64>,
    rows: u64,
}

impl StructuralPrior {
    /// A stream filter from the diffuse start, before any row.
    pub fn stream(&self) -> StructuralStream {
        let n = self.states();
        let t = self.plans.len();
        StructuralStream {
            models: self.plans.iter().map(|p| p.model.clone()).collect(),
            targets: self.targets.clone(),
            betas: self.betas.clone(),
            regressors: self.regressors.clone(),
            future_regressors: self.future_regressors.clone(),
            future_width: self.future_width,
            lead: self.lead,
            horizon: self.horizon,
            means: vec![vec![0.0; n]; t],
            covariances: self
                .plans
                .iter()
                .map(|p| p.model.initial_covariance())
                .collect(),
            mean: vec![0.0; n],
            covariance: vec![0.0; n * n],
            gain: vec![0.0; n],
            column: vec![0.0; n],
            rows: 0,
        }
    }
}

impl StructuralStream {
    /// Bytes its buffers (and its copy of the models) hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        let f64s = |v: &Vec<f64>| size_of::<f64>() * v.capacity();
        let models: usize = self
            .models
            .iter()
            .map(|m| {
                f64s(&m.z)
                    + f64s(&m.q)
                    + size_of::<(usize, [[f64; 2]; 2], usize)>() * m.blocks.capacity()
            })
            .sum();
        models
            + self.betas.iter().map(f64s).sum::<usize>()
            + self
                .means
                .iter()
                .chain(&self.covariances)
                .map(f64s)
                .sum::<usize>()
            + f64s(&self.mean)
            + f64s(&self.covariance)
            + f64s(&self.gain)
            + f64s(&self.column)
    }

    /// Rows filtered so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Filters one row (`features` values, finite): the time update from the previous row,
    /// then each target's value less its regression. No allocation.
    pub fn push(&mut self, row: &[f64]) {
        for (j, (model, &column)) in self.models.iter().zip(&self.targets).enumerate() {
            let (a, p) = (&mut self.means[j], &mut self.covariances[j]);
            if self.rows > 0 {
                model.transition(a);
                model.predict_covariance(p, &mut self.column);
            }
            let y = row[column] - regression(&self.betas[j], &self.regressors, row);
            model.update(a, p, y, &mut self.gain);
        }
        self.rows += 1;
    }

    /// Writes the predictive mean `[H, T]` and (diagonal) covariance `[H, T, T]` of the steps
    /// `lead … lead + H − 1` rows after the last pushed one, as
    /// [`StructuralPrior::predict_into`] lays them out; `future` is the known-future block.
    /// No allocation.
    pub fn predict_into(&mut self, future: &[f64], mean: &mut [f64], cov: &mut [f64]) {
        let (t, lead) = (self.targets.len(), self.lead);
        cov.fill(0.0);
        for (j, model) in self.models.iter().enumerate() {
            self.mean.copy_from_slice(&self.means[j]);
            self.covariance.copy_from_slice(&self.covariances[j]);
            for k in 1..lead + self.horizon {
                model.transition(&mut self.mean);
                model.predict_covariance(&mut self.covariance, &mut self.column);
                if k < lead {
                    continue;
                }
                let step = k - lead;
                let future_row = &future[step * self.future_width..];
                mean[step * t + j] = model.observe(&self.mean)
                    + regression(&self.betas[j], &self.future_regressors, future_row);
                cov[(step * t + j) * t + j] = model.observed_variance(&self.covariance);
            }
        }
    }
}

/// `β · x` of one row: `x` the values at `columns` of `row`.
fn regression(beta: &[f64], columns: &[usize], row: &[f64]) -> f64 {
    beta.iter().zip(columns).map(|(b, &c)| b * row[c]).sum()
}

/// Fits the variances (and regression coefficients) of one target's model by maximum
/// likelihood on `segments` (each a gap-free run of the target's values; the likelihood sums
/// over them), with `exog[s]` the segment's regressor values (`[rows, k]`, `k` =
/// [`StructuralSpec::regressors`]; empty when there are none): Nelder–Mead on the
/// log-variances and the coefficients, started from a share of the variance of the first
/// differences and the least-squares coefficients of the first differences.
pub fn fit_structural(
    spec: &StructuralSpec,
    segments: &[Vec<f64>],
    exog: &[Vec<f64>],
) -> Result<StructuralParams, KalmanError> {
    spec.validate()?;
    let k = spec.regressors.len();
    if k > 0
        && (exog.len() != segments.len()
            || exog
                .iter()
                .zip(segments)
                .any(|(x, y)| x.len() != y.len() * k))
    {
        return Err(KalmanError::BadSpec(format!(
            "{k} regressors need {k} values for every row of every segment"
        )));
    }
    let diffs: Vec<f64> = segments
        .iter()
        .flat_map(|s| s.windows(2).map(|w| w[1] - w[0]))
        .collect();
    if diffs.len() < 2 * spec.states() + k {
        return Err(KalmanError::BadSpec(format!(
            "{} training rows are too few to fit {} states",
            diffs.len(),
            spec.states()
        )));
    }
    let var = diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64;
    let var = if var > 0.0 && var.is_finite() {
        var
    } else {
        1.0
    };
    let m = spec.parameter_count();
    // Coefficients are searched in units of sd(Δy)/sd(Δxᵢ), so one simplex step means the
    // same for every regressor whatever its scale.
    let (start_beta, scales) = difference_least_squares(segments, exog, k, var);
    let start: Vec<f64> = (0..m)
        .map(|_| (var / m as f64).ln())
        .chain(start_beta.iter().zip(&scales).map(|(b, s)| b / s))
        .collect();
    let damped = spec.trend == Trend::Damped;
    // The search vector: log-variances, then (a free damping factor's logit,) then the
    // scaled coefficients. `phi` fixes the damping factor instead (the profile search).
    let params_at = |x: &[f64], phi: Option<f64>| {
        let v: Vec<f64> = x[..m].iter().map(|l| l.clamp(-40.0, 40.0).exp()).collect();
        let mut p = StructuralParams::from_vector(spec, &v);
        let free = usize::from(damped && phi.is_none());
        p.damping = damped.then(|| {
            // Kept inside (0, 1) whatever the simplex tries.
            phi.unwrap_or_else(|| (1.0 / (1.0 + (-x[m]).exp())).clamp(1e-6, 1.0 - 1e-9))
        });
        p.regression = x[m + free..]
            .iter()
            .zip(&scales)
            .map(|(b, s)| b * s)
            .collect();
        p
    };
    let negative = |x: &[f64], phi: Option<f64>| -> f64 {
        let p = params_at(x, phi);
        let model = StructuralModel::new(spec, &p);
        let ll: f64 = segments
            .iter()
            .enumerate()
            .map(|(s, y)| {
                if k == 0 {
                    model.filter(y).log_likelihood
                } else {
                    model
                        .filter(&less_regression(y, &exog[s], &p.regression))
                        .log_likelihood
                }
            })
            .sum();
        if ll.is_finite() { -ll } else { f64::INFINITY }
    };
    let iterations = 400 + 200 * (k + usize::from(damped));
    let (best, phi) = if damped {
        // The likelihood in φ has poor optima (a variance that runs off to a bound, φ → 1)
        // in which a joint search from one start gets stuck: profile it over a grid of φ
        // first, each fit from the same start (a warm start inherits a collapsed variance),
        // then search jointly from the best.
        let mut profile = (Vec::new(), f64::INFINITY, 0.0);
        for phi in [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98] {
            let (x, value) = minimize(&|x: &[f64]| negative(x, Some(phi)), &start, iterations);
            if value < profile.1 {
                profile = (x, value, phi);
            }
        }
        let (x, value, phi) = profile;
        let joint: Vec<f64> = x[..m]
            .iter()
            .copied()
            .chain(std::iter::once((phi / (1.0 - phi)).ln()))
            .chain(x[m..].iter().copied())
            .collect();
        let (polished, after) = minimize(&|x: &[f64]| negative(x, None), &joint, iterations);
        if after <= value {
            (polished, None)
        } else {
            (x, Some(phi))
        }
    } else {
        (
            minimize(&|x: &[f64]| negative(x, None), &start, iterations).0,
            None,
        )
    };
    let mut params = params_at(&best, phi);
    params.log_likelihood = -negative(&best, phi);
    Ok(params)
}

/// Nelder–Mead from `start`, restarted from its best point with a fresh simplex (at most
/// three times, until `f` stops improving: a collapsed simplex can stall short of the
/// optimum). Returns the best point and its value.
fn minimize(f: &dyn Fn(&[f64]) -> f64, start: &[f64], iterations: usize) -> (Vec<f64>, f64) {
    let mut best = nelder_mead(f, start, 1.0, iterations);
    let mut value = f(&best);
    for _ in 0..3 {
        let again = nelder_mead(f, &best, 0.5, iterations);
        let after = f(&again);
        let gain = value - after;
        if after < value {
            (best, value) = (again, after);
        }
        // A gain that is NaN (an infinite value) also stops.
        let improving = gain > 1e-7 * value.abs().max(1.0);
        if !improving {
            break;
        }
    }
    (best, value)
}

/// `y − X β` (`X`: `[rows, k]`).
pub fn less_regression(y: &[f64], x: &[f64], beta: &[f64]) -> Vec<f64> {
    let k = beta.len();
    y.iter()
        .enumerate()
        .map(|(t, v)| v - (0..k).map(|i| beta[i] * x[t * k + i]).sum::<f64>())
        .collect()
}

/// Least-squares coefficients of `Δy` on `Δx` (a start for the likelihood search), and the
/// scale `sd(Δy)/sd(Δxᵢ)` of each coefficient. Singular or constant regressors start at 0.
fn difference_least_squares(
    segments: &[Vec<f64>],
    exog: &[Vec<f64>],
    k: usize,
    dy_var: f64,
) -> (Vec<f64>, Vec<f64>) {
    if k == 0 {
        return (Vec::new(), Vec::new());
    }
    // Normal equations of Δy on Δx: A β = c.
    let (mut a, mut c) = (vec![0.0; k * k], vec![0.0; k]);
    for (y, x) in segments.iter().zip(exog) {
        for t in 1..y.len() {
            let dx: Vec<f64> = (0..k).map(|i| x[t * k + i] - x[(t - 1) * k + i]).collect();
            let dy = y[t] - y[t - 1];
            for i in 0..k {
                c[i] += dx[i] * dy;
                for j in 0..k {
                    a[i * k + j] += dx[i] * dx[j];
                }
            }
        }
    }
    let rows = segments
        .iter()
        .map(|s| s.len().saturating_sub(1))
        .sum::<usize>()
        .max(1) as f64;
    let scales: Vec<f64> = (0..k)
        .map(|i| {
            let dx_var = a[i * k + i] / rows;
            if dx_var > 0.0 && dx_var.is_finite() {
                (dy_var / dx_var).sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let beta = solve(&mut a, &mut c, k).unwrap_or_else(|| vec![0.0; k]);
    (beta, scales)
}

/// Solves `A x = c` (`A`: `k × k`) by Gaussian elimination with partial pivoting; `None`
/// when `A` is singular.
fn solve(a: &mut [f64], c: &mut [f64], k: usize) -> Option<Vec<f64>> {
    for col in 0..k {
        let pivot =
            (col..k).max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-12 * (1.0 + a[col * k + col].abs()) {
            return None;
        }
        for j in 0..k {
            a.swap(col * k + j, pivot * k + j);
        }
        c.swap(col, pivot);
        for row in col + 1..k {
            let f = a[row * k + col] / a[col * k + col];
            for j in col..k {
                a[row * k + j] -= f * a[col * k + j];
            }
            c[row] -= f * c[col];
        }
    }
    let mut x = vec![0.0; k];
    for row in (0..k).rev() {
        let s: f64 = (row + 1..k).map(|j| a[row * k + j] * x[j]).sum();
        x[row] = (c[row] - s) / a[row * k + row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Minimizes `f` from `start` by Nelder–Mead (standard coefficients), `iterations` steps.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, start: &[f64], step: f64, iterations: usize) -> Vec<f64> {
    let m = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=m)
        .map(|i| {
            let mut x = start.to_vec();
            if i > 0 {
                x[i - 1] += step;
            }
            let fx = f(&x);
            (x, fx)
        })
        .collect();
    for _ in 0..iterations {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let spread = simplex[m].1 - simplex[0].1;
        if spread.abs() < 1e-10 * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let centroid: Vec<f64> = (0..m)
            .map(|k| simplex[..m].iter().map(|(x, _)| x[k]).sum::<f64>() / m as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[m].0)
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let reflected = along(-1.0);
        let fr = f(&reflected);
        if fr < simplex[0].1 {
            let expanded = along(-2.0);
            let fe = f(&expanded);
            simplex[m] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[m - 1].1 {
            simplex[m] = (reflected, fr);
        } else {
            let contracted = along(0.5);
            let fc = f(&contracted);
            if fc < simplex[m].1 {
                simplex[m] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for entry in simplex.iter_mut().skip(1) {
                    let x: Vec<f64> = best
                        .iter()
                        .zip(&entry.0)
                        .map(|(b, x)| b + 0.5 * (x - b))
                        .collect();
                    let fx = f(&x);
                    *entry = (x, fx);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(trend: Trend) -> StructuralSpec {
        StructuralSpec {
            trend,
            seasons: vec![Season {
                period: 24.0,
                harmonics: 3,
            }],
            initial_variance: 1e6,
            regressors: Vec::new(),
        }
    }

    fn series(rows: usize) -> Vec<f64> {
        // A level drifting slowly plus a daily cycle and a little noise (deterministic).
        (0..rows)
            .map(|t| {
                let t = t as f64;
                50.0 + 0.01 * t
                    + 8.0 * (std::f64::consts::TAU * t / 24.0).sin()
                    + 3.0 * (std::f64::consts::TAU * 2.0 * t / 24.0).cos()
                    + 0.5 * (t * 12.9898).sin()
            })
            .collect()
    }

    #[test]
    fn the_window_plan_equals_the_filter_run_on_the_window() {
        for (trend, damping) in [(Trend::LocalLinear, None), (Trend::Damped, Some(0.8))] {
            let spec = daily(trend);
            let params = StructuralParams {
                level: 0.1,
                slope: Some(0.001),
                seasonal: vec![0.01],
                observation: 0.3,
                regression: Vec::new(),
                damping,
                log_likelihood: 0.0,
            };
            let y = series(72);
            let prior = StructuralPrior::new(
                &spec,
                std::slice::from_ref(&params),
                1,
                &[0],
                72,
                1,
                3,
                &RegressorColumns::default(),
            )
            .unwrap();
            let (mut mean, mut cov) = (vec![0.0; 3], vec![0.0; 3]);
            prior.predict_into(&y, &[], &mut mean, &mut cov);
            // Reference: the plain filter on the window relative to its last value, then T^k.
            let model = StructuralModel::new(&spec, &params);
            let last = y[71];
            let centred: Vec<f64> = y.iter().map(|v| v - last).collect();
            let out = model.filter(&centred);
            let n = model.states();
            let mut a = out.filtered[71 * n..].to_vec();
            let slope = a[1];
            for (k, m) in mean.iter().enumerate() {
                model.transition(&mut a);
                let want = last + model.z.iter().zip(&a).map(|(z, x)| z * x).sum::<f64>();
                assert!((m - want).abs() < 1e-9, "{trend:?} step {k}: {m} vs {want}");
                assert!(cov[k] > params.observation);
                // The slope state decays by φ per step (or stays, undamped).
                let phi = damping.unwrap_or(1.0);
                assert!((a[1] - slope * phi.powi(k as i32 + 1)).abs() < 1e-12);
            }
            // A day-ahead forecast follows the cycle, unlike the last value.
            let truth = series(75);
            for (k, m) in mean.iter().enumerate() {
                assert!((m - truth[72 + k]).abs() < 1.5, "{m} vs {}", truth[72 + k]);
            }
        }
    }

    /// The carried stream filter is the plain filter run on the stream (means to 1e-9, the
    /// predictive variance from `P` propagated), costs the same per row whatever the rows
    /// seen, and after exactly one window of rows forecasts as the windowed prior does, up to
    /// the diffuse start's finite κ (the window is taken relative to its last value, the
    /// stream is not).
    #[test]
    fn the_stream_filter_equals_the_filter_and_the_window_after_one_window() {
        let spec = daily(Trend::Damped);
        let params = StructuralParams {
            level: 0.1,
            slope: Some(0.001),
            seasonal: vec![0.01],
            observation: 0.3,
            regression: Vec::new(),
            damping: Some(0.8),
            log_likelihood: 0.0,
        };
        let (lookback, lead, horizon) = (72, 2, 3);
        let prior = StructuralPrior::new(
            &spec,
            std::slice::from_ref(&params),
            1,
            &[0],
            lookback,
            lead,
            horizon,
            &RegressorColumns::default(),
        )
        .unwrap();
        let y = series(200);
        let model = StructuralModel::new(&spec, &params);
        let n = model.states();
        let reference = model.filter(&y);
        let mut stream = prior.stream();
        let (mut mean, mut cov) = (vec![0.0; horizon], vec![0.0; horizon]);
        let (mut windowed, mut windowed_cov) = (vec![0.0; horizon], vec![0.0; horizon]);
        for (t, &v) in y.iter().enumerate() {
            stream.push(&[v]);
            assert_eq!(stream.rows(), t as u64 + 1);
            for (a, b) in stream.means[0].iter().zip(&reference.filtered[t * n..]) {
                assert!(
                    (a - b).abs() < 1e-9 * b.abs().max(1.0),
                    "row {t}: {a} vs {b}"
                );
            }
            stream.predict_into(&[], &mut mean, &mut cov);
            // The mean is Z T^k of the filtered state.
            let mut a = reference.filtered[t * n..(t + 1) * n].to_vec();
            for k in 1..lead + horizon {
                model.transition(&mut a);
                if k >= lead {
                    let want: f64 = model.z.iter().zip(&a).map(|(z, x)| z * x).sum();
                    let got = mean[k - lead];
                    assert!((got - want).abs() < 1e-9 * want.abs().max(1.0));
                }
            }
            if t + 1 == lookback {
                prior.predict_into(&y[..lookback], &[], &mut windowed, &mut windowed_cov);
                for k in 0..horizon {
                    assert!(
                        (mean[k] - windowed[k]).abs() < 1e-3,
                        "step {k}: stream {} vs window {}",
                        mean[k],
                        windowed[k]
                    );
                    assert!((cov[k] - windowed_cov[k]).abs() < 1e-6 * windowed_cov[k]);
                }
            }
        }
    }

    #[test]
    fn a_damped_trend_is_fitted_and_checked() {
        // A slope that mean-reverts with φ = 0.7 on hourly rows with a daily cycle.
        let (mut slope, mut level, mut state) = (0.0, 10.0, 7u64);
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f64 / 10_000.0 - 0.5
        };
        let y: Vec<f64> = (0..24 * 60)
            .map(|t| {
                slope = 0.7 * slope + 0.5 * noise();
                level += slope;
                level + 4.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin() + 0.2 * noise()
            })
            .collect();
        let spec = daily(Trend::Damped);
        let fitted = fit_structural(&spec, std::slice::from_ref(&y), &[]).unwrap();
        let phi = fitted.damping.unwrap();
        assert!((phi - 0.7).abs() < 0.1, "{fitted:?}");
        // Fitting φ beats fixing it at 1 (the local linear trend) on this series.
        let undamped = fit_structural(&daily(Trend::LocalLinear), &[y], &[]).unwrap();
        assert!(fitted.log_likelihood > undamped.log_likelihood + 1.0);
        // φ outside (0, 1), or a damping without a damped trend, is refused.
        for bad in [0.0, 1.0, 1.5, f64::NAN] {
            let mut p = fitted.clone();
            p.damping = Some(bad);
            assert!(p.check(&spec).is_err(), "{bad}");
        }
        assert!(undamped.check(&daily(Trend::LocalLinear)).is_ok());
        let mut p = undamped;
        p.damping = Some(0.9);
        assert!(p.check(&daily(Trend::LocalLinear)).is_err());
    }

    #[test]
    fn maximum_likelihood_beats_the_starting_point_and_forecasts_a_day_ahead() {
        let spec = daily(Trend::Level);
        let y = series(24 * 30);
        let fitted = fit_structural(&spec, std::slice::from_ref(&y), &[]).unwrap();
        let start = StructuralParams {
            level: 1.0,
            slope: None,
            seasonal: vec![1.0],
            observation: 1.0,
            regression: Vec::new(),
            damping: None,
            log_likelihood: 0.0,
        };
        let ll_start = StructuralModel::new(&spec, &start)
            .filter(&y)
            .log_likelihood;
        assert!(fitted.log_likelihood > ll_start, "{fitted:?}");
        let prior = StructuralPrior::new(
            &spec,
            &[fitted],
            1,
            &[0],
            168,
            1,
            24,
            &RegressorColumns::default(),
        )
        .unwrap();
        let (mut mean, mut cov) = (vec![0.0; 24], vec![0.0; 24]);
        let window = &y[24 * 20..24 * 27];
        prior.predict_into(window, &[], &mut mean, &mut cov);
        let mae: f64 = mean
            .iter()
            .zip(&y[24 * 27..24 * 28])
            .map(|(m, t)| (m - t).abs())
            .sum::<f64>()
            / 24.0;
        let persistence: f64 = y[24 * 27..24 * 28]
            .iter()
            .map(|t| (t - window[window.len() - 1]).abs())
            .sum::<f64>()
            / 24.0;
        assert!(
            mae < 0.2 * persistence,
            "MAE {mae} vs persistence {persistence}"
        );
    }

    #[test]
    fn bad_components_are_refused() {
        assert!(StructuralSpec::parse_seasons("24:4,168:2").is_ok());
        for bad in ["24", "x:2", "24:y", ""] {
            assert!(StructuralSpec::parse_seasons(bad).is_err(), "{bad:?}");
        }
        let mut spec = daily(Trend::Level);
        spec.seasons[0].harmonics = 13;
        assert!(spec.validate().is_err());
        spec.seasons[0].harmonics = 0;
        assert!(spec.validate().is_err());
    }

    #[test]
    fn regression_is_fitted_and_forecast_with_the_known_future_values() {
        // y = 2·x + daily series; x a slow, irregular driver known in advance.
        let x: Vec<f64> = (0..24 * 30)
            .map(|t| (t as f64 * 0.07).sin() * 5.0 + (t as f64 * 0.013).cos() * 3.0)
            .collect();
        let base = series(x.len());
        let y: Vec<f64> = base.iter().zip(&x).map(|(b, x)| b + 2.0 * x).collect();
        let mut spec = daily(Trend::Level);
        spec.regressors = vec!["x".into()];
        let fitted =
            fit_structural(&spec, std::slice::from_ref(&y), std::slice::from_ref(&x)).unwrap();
        assert!((fitted.regression[0] - 2.0).abs() < 0.05, "{fitted:?}");
        // Window columns [y, x]; the future block holds x of the predicted rows.
        let columns = RegressorColumns {
            past: vec![1],
            future: vec![0],
            width: 1,
        };
        let prior = StructuralPrior::new(
            &spec,
            std::slice::from_ref(&fitted),
            2,
            &[0],
            168,
            1,
            24,
            &columns,
        )
        .unwrap();
        let from = 24 * 20;
        let window: Vec<f64> = (from..from + 168).flat_map(|t| [y[t], x[t]]).collect();
        let future = &x[from + 168..from + 192];
        let (mut mean, mut cov) = (vec![0.0; 24], vec![0.0; 24]);
        prior.predict_into(&window, future, &mut mean, &mut cov);
        // The reference: the plain prior on y − βx, plus βx of the predicted rows.
        let beta = fitted.regression[0];
        let adjusted: Vec<f64> = (from..from + 168).map(|t| y[t] - beta * x[t]).collect();
        let mut plain_spec = spec.clone();
        plain_spec.regressors.clear();
        let mut plain_params = fitted.clone();
        plain_params.regression.clear();
        let plain = StructuralPrior::new(
            &plain_spec,
            &[plain_params],
            1,
            &[0],
            168,
            1,
            24,
            &RegressorColumns::default(),
        )
        .unwrap();
        let (mut want, mut want_cov) = (vec![0.0; 24], vec![0.0; 24]);
        plain.predict_into(&adjusted, &[], &mut want, &mut want_cov);
        for k in 0..24 {
            let expected = want[k] + beta * future[k];
            assert!((mean[k] - expected).abs() < 1e-9, "step {k}");
            assert_eq!(cov[k], want_cov[k]);
        }
        // Knowing the driver's future pays: far closer than ignoring it.
        let mae = |m: &[f64]| {
            m.iter()
                .zip(&y[from + 168..from + 192])
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 24.0
        };
        let without = fit_structural(&plain_spec, std::slice::from_ref(&y), &[]).unwrap();
        let blind = StructuralPrior::new(
            &plain_spec,
            &[without],
            2,
            &[0],
            168,
            1,
            24,
            &RegressorColumns::default(),
        )
        .unwrap();
        let mut blind_mean = vec![0.0; 24];
        blind.predict_into(&window, &[], &mut blind_mean, &mut want_cov);
        assert!(
            mae(&mean) < 0.5 * mae(&blind_mean),
            "{} vs {}",
            mae(&mean),
            mae(&blind_mean)
        );
    }
}

//! Everything around the network, driven by the manifest: input checks, normalization, the
//! base forecast (last value or Kalman prior), de-normalization of the network output, the
//! gate and the certificate. The training side and the inference engine both call this,
//! so they cannot disagree about anything but the network itself.

use tns_certify::{
    Certificate, CertificateInputs, ConformalCalibration, Gate, GateScratch, GateStep,
    ModelIdentity,
};
use tns_kalman::{KalmanError, KalmanPrior, StructuralPrior};

use crate::{Base, ConfigError, InputNormalization, KalmanParameters, ModelConfig, ModelKind};

/// A window that cannot be predicted from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The input has the wrong number of values.
    #[error(
        "input has {found} values; expected lookback × features = {lookback} × {features}{}",
        shape_tail(*lookback, *features, *horizon, *future)
    )]
    Shape {
        /// Values given.
        found: usize,
        /// The model's lookback.
        lookback: usize,
        /// The model's feature count.
        features: usize,
        /// The model's horizon.
        horizon: usize,
        /// Values per predicted step of the future block (0: none).
        future: usize,
    },
    /// The known-future columns given for a forecast have the wrong number of values.
    #[error(
        "future inputs have {found} values; expected horizon × future columns = {horizon} × {columns} = {}",
        horizon * columns
    )]
    FutureShape {
        /// Values given.
        found: usize,
        /// The model's horizon.
        horizon: usize,
        /// The model's future columns (calendar features excluded: they are computed).
        columns: usize,
    },
    /// A future value is NaN, infinite or beyond ±[`INPUT_LIMIT`].
    #[error(
        "future step {step}, column {column:?}: {value} is not a finite value within ±1e30 (larger values overflow the model's arithmetic)"
    )]
    FutureNotFinite {
        /// 0-based predicted step.
        step: usize,
        /// Column name.
        column: String,
        /// The value.
        value: f64,
    },
    /// A model with calendar features asked to forecast without the origin's time.
    #[error(
        "this model takes calendar features: give the time of the last window row (seconds since 1970 or a date-time)"
    )]
    MissingTime,
    /// A model with future inputs asked to forecast without them.
    #[error("this model takes known-future inputs {0:?} over the horizon: give them")]
    MissingFuture(Vec<String>),
    /// The calendar features of the origin's time cannot be computed.
    #[error("calendar: {0}")]
    Calendar(#[source] tns_calendar::CalendarError),
    /// A value is NaN, infinite or beyond ±[`INPUT_LIMIT`].
    #[error(
        "window row {row}, feature {feature:?}: {value} is not a finite value within ±1e30 (larger values overflow the model's arithmetic)"
    )]
    NotFinite {
        /// 0-based row.
        row: usize,
        /// Column name.
        feature: String,
        /// The value.
        value: f64,
    },
    /// The gate could not be evaluated on this window.
    #[error("the gate cannot be evaluated on this window: {0}")]
    Gate(#[source] tns_certify::GateError),
}

/// The largest input magnitude a pipeline accepts. Beyond it, squares in the Kalman filter
/// and the f32 network arithmetic overflow, and the forecast would not be finite: such
/// inputs are refused as the client's error rather than answered with infinities.
pub const INPUT_LIMIT: f64 = 1e30;

/// Whether a pipeline accepts `value` as an input: finite and within ±[`INPUT_LIMIT`].
pub fn accepts_input(value: f64) -> bool {
    value.is_finite() && value.abs() <= INPUT_LIMIT
}

/// Hours in a day, as the float the hour arithmetic uses.
const HOURS_F: f64 = tns_certify::HOURS as f64;

/// The end of the shape error: the total, and the future block when there is one.
fn shape_tail(lookback: usize, features: usize, horizon: usize, future: usize) -> String {
    let past = lookback * features;
    if future == 0 {
        format!(" = {past}")
    } else {
        format!(
            " plus horizon × future = {horizon} × {future}, {} in all",
            past + horizon * future
        )
    }
}

/// Why the parts of a model do not make a runnable pipeline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    /// The description itself is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A fitted vector has the wrong length.
    #[error("{what} has {found} entries, the description needs {expected}")]
    Length {
        /// Which vector.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length the description derives.
        expected: usize,
    },
    /// A normalization or residual scale is zero, negative or not finite.
    #[error("normalization and residual scales must be positive and finite")]
    Scale,
    /// A normalization mean is not finite.
    #[error("{what}[{index}] is not finite")]
    Mean {
        /// Which vector.
        what: &'static str,
        /// 0-based index.
        index: usize,
    },
    /// The conformal calibration is invalid.
    #[error("the conformal calibration is invalid: {0}")]
    Conformal(#[source] tns_certify::ConformalError),
    /// A Kalman-based kind without its fitted parameters.
    #[error("Kalman-based model without Kalman parameters")]
    MissingKalman,
    /// The Kalman parameters do not make a prior.
    #[error("the Kalman prior is invalid: {0}")]
    Kalman(#[source] KalmanError),
    /// The gate's settings are invalid.
    #[error("the gate is invalid: {0}")]
    Gate(#[source] tns_certify::GateError),
    /// Intervals calibrated by hour of day for a model that does not know the hour of the
    /// predicted steps.
    #[error(
        "the interval is calibrated by hour of day, but the model has no `hour` calendar feature to read the predicted steps' hour from; train with --calendar hour"
    )]
    NoHour,
    /// An interval calibrated by conformalized quantile regression for a network without
    /// quantile heads.
    #[error(
        "the interval is conformalized quantile regression, but the network has no quantile heads; train with --quantile-heads"
    )]
    NoQuantileHeads,
}

/// The fitted parts of a model that the pipeline runs with (a model file's manifest holds
/// them).
#[derive(Debug, Clone, Copy)]
pub struct PipelineParts<'a> {
    /// The description.
    pub config: &'a ModelConfig,
    /// Input normalization.
    pub normalization: &'a InputNormalization,
    /// Scale of the network output per `[horizon, target]`.
    pub residual_scale: &'a [f64],
    /// The Kalman prior, for Kalman-based kinds.
    pub kalman: Option<&'a KalmanParameters>,
    /// Conformal radii.
    pub conformal: Option<&'a ConformalCalibration>,
    /// Version of TNS that wrote the model (for certificates).
    pub version: &'a str,
    /// The model's checksum (for certificates).
    pub sha256: &'a str,
}

/// The manifest's pre- and post-processing, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    kind: ModelKind,
    has_network: bool,
    features: Vec<String>,
    lookback: usize,
    /// Rows of the window the network reads (the last ones).
    network_rows: usize,
    targets: Vec<usize>,
    horizon: usize,
    lead: usize,
    /// Names of the future block's columns (covariates, then calendar).
    future_names: Vec<String>,
    /// Known-future covariate columns (the caller gives them).
    future_columns: usize,
    calendar: Option<tns_calendar::ResolvedCalendar>,
    /// For bases read off the window: the window row each horizon step repeats.
    base_rows: Vec<usize>,
    normalization: InputNormalization,
    residual_scale: Vec<f64>,
    /// Network outputs per predicted value: 1, or 3 with quantile heads.
    outputs_per_value: usize,
    prior: Option<Prior>,
    gate: Option<Gate>,
    conformal: Option<ConformalCalibration>,
    /// Where the `hour` calendar pair (`sin`, `cos`) sits in a future-block row.
    hour_column: Option<usize>,
    identity: ModelIdentity,
}

/// The Kalman prior of a model: kinematic axes or a structural model per target.
#[derive(Debug, Clone)]
pub enum Prior {
    /// Constant velocity or local linear trend per axis.
    Kinematic(KalmanPrior),
    /// Level or trend plus seasonal components per target.
    Structural(StructuralPrior),
}

impl Prior {
    /// Filters a window and writes the predictive mean `[H, T]` and covariance `[H, T, T]`;
    /// `future` is the known-future block (a structural prior's regressors read it).
    pub fn predict_into(&self, window: &[f64], future: &[f64], mean: &mut [f64], cov: &mut [f64]) {
        match self {
            Self::Kinematic(p) => p.predict_into(window, mean, cov),
            Self::Structural(p) => p.predict_into(window, future, mean, cov),
        }
    }
}

/// One prediction and what it was made of, as flat `[horizon, targets]` vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The output.
    pub prediction: Vec<f64>,
    /// The base forecast (last value or Kalman prior mean).
    pub base: Vec<f64>,
    /// The prior's predictive covariance `[horizon, T, T]` (Kalman-based kinds).
    pub covariance: Option<Vec<f64>>,
    /// The network's proposed correction in data units (learned kinds).
    pub correction: Option<Vec<f64>>,
    /// Gate outcome per step (System B).
    pub gate_steps: Option<Vec<GateStep>>,
    /// The window's conformal score scale per target (models calibrated with normalized
    /// scores; empty otherwise).
    pub interval_scale: Vec<f64>,
    /// The hour of day of each predicted step (models whose intervals are calibrated by
    /// hour; empty otherwise).
    pub step_hours: Vec<u8>,
    /// The conformal radius of each output for this forecast's hours, in score units
    /// (models calibrated by hour; empty otherwise: the pooled radii).
    pub interval_radii: Vec<f64>,
    /// The lower quantile forecast of each output, base + scaled quantile head (models with
    /// quantile heads; empty otherwise).
    pub quantile_lower: Vec<f64>,
    /// The upper quantile forecast of each output (models with quantile heads; empty
    /// otherwise).
    pub quantile_upper: Vec<f64>,
}

impl Forecast {
    /// A conformal radius `r` of output `position` (`[horizon, targets]` flat) in data
    /// units: `r` times the window's score scale of that output's target for normalized
    /// calibrations, `r` itself otherwise.
    pub fn scaled_radius(&self, position: usize, r: f64) -> f64 {
        match self.interval_scale.len() {
            0 => r,
            t => r * self.interval_scale[position % t],
        }
    }

    /// The calibrated conformal radius of output `position` in data units: this forecast's
    /// radius for its predicted step's hour when calibrated by hour, else `pooled` (the
    /// calibration's radius of that output), scaled as [`Forecast::scaled_radius`].
    pub fn radius(&self, position: usize, pooled: f64) -> f64 {
        let r = self.interval_radii.get(position).copied().unwrap_or(pooled);
        self.scaled_radius(position, r)
    }

    /// The quantile forecasts `(lower, upper)`, for models with quantile heads.
    pub fn quantiles(&self) -> tns_certify::Quantiles<'_> {
        (!self.quantile_lower.is_empty()).then_some((
            self.quantile_lower.as_slice(),
            self.quantile_upper.as_slice(),
        ))
    }

    /// The interval of output `position` for a conformal radius `radius` in data units
    /// ([`tns_certify::conformal_bounds`]): `ŷ ∓ radius`, or grown from the quantile
    /// forecasts of a model with quantile heads when `quantile_regression`.
    pub fn bounds(&self, position: usize, radius: f64, quantile_regression: bool) -> (f64, f64) {
        let p = self.prediction[position];
        let (lo, hi) = match self.quantiles() {
            Some((l, u)) if quantile_regression => (l[position], u[position]),
            _ => (p, p),
        };
        tns_certify::conformal_bounds(p, lo, hi, radius)
    }

    /// Bytes its buffers hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        let f64s = |v: &Vec<f64>| size_of::<f64>() * v.capacity();
        f64s(&self.prediction)
            + f64s(&self.quantile_lower)
            + f64s(&self.quantile_upper)
            + f64s(&self.base)
            + self.covariance.as_ref().map_or(0, f64s)
            + self.correction.as_ref().map_or(0, f64s)
            + self
                .gate_steps
                .as_ref()
                .map_or(0, |s| size_of::<GateStep>() * s.capacity())
            + f64s(&self.interval_scale)
            + f64s(&self.interval_radii)
            + self.step_hours.capacity()
    }
}

/// The window row a base read off the window repeats for the row `ahead` rows after the
/// last one: the last row (last value), or the row one season before (seasonal naive).
/// The description's validation guarantees `season ≤ lookback`, so the row is inside.
fn base_row(base: Base, lookback: usize, ahead: usize, season: Option<usize>) -> usize {
    match (base, season) {
        (Base::SeasonalNaive, Some(s)) if s >= 1 => lookback - 1 + ahead - s * ahead.div_ceil(s),
        _ => lookback - 1,
    }
}

impl Pipeline {
    /// Builds the pipeline from a model's parts, checking that they fit the description.
    pub fn new(parts: PipelineParts<'_>) -> Result<Self, PipelineError> {
        let c = parts.config;
        c.validate()?;
        let targets = c.target_indices()?;
        let width = c.output_width();
        let f = c.features.len();
        let n = parts.normalization;
        let conformal_len = parts.conformal.map_or(width, |cal| cal.radii.len());
        let future = c.future_width();
        for (what, found, expected) in [
            ("residual_scale", parts.residual_scale.len(), width),
            ("normalization.mean", n.mean.len(), f),
            ("normalization.std", n.std.len(), f),
            ("normalization.relative", n.relative.len(), f),
            ("normalization.future_mean", n.future_mean.len(), future),
            ("normalization.future_std", n.future_std.len(), future),
            ("conformal radii", conformal_len, width),
        ] {
            if found != expected {
                return Err(PipelineError::Length {
                    what,
                    found,
                    expected,
                });
            }
        }
        if n.std
            .iter()
            .chain(&n.future_std)
            .chain(parts.residual_scale)
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(PipelineError::Scale);
        }
        for (what, values) in [
            ("normalization.mean", &n.mean),
            ("normalization.future_mean", &n.future_mean),
        ] {
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(PipelineError::Mean { what, index });
            }
        }
        let hour_column = c
            .future
            .as_ref()
            .and_then(|fut| fut.names().iter().position(|n| n == "hour_sin"));
        if let Some(cal) = parts.conformal {
            cal.validate().map_err(PipelineError::Conformal)?;
            if cal.by_hour.is_some() && hour_column.is_none() {
                return Err(PipelineError::NoHour);
            }
            if cal.quantile_regression && c.quantile_heads.is_none() {
                return Err(PipelineError::NoQuantileHeads);
            }
            if let tns_certify::ScoreScale::WindowVolatility { rows, floor } = &cal.scale
                && (floor.len() != targets.len() || *rows > c.lookback)
            {
                return Err(PipelineError::Conformal(
                    tns_certify::ConformalError::BadScale {
                        rows: *rows,
                        floor: floor.clone(),
                    },
                ));
            }
        }
        let prior = match (parts.kalman, c.kind.base(), &c.structural) {
            (Some(k), Base::KalmanPrior, Some(spec)) => Some(Prior::Structural(
                StructuralPrior::new(
                    spec,
                    &k.structural,
                    f,
                    &targets,
                    c.lookback,
                    c.lead,
                    c.horizon,
                    &c.structural_regressors()?,
                )
                .map_err(PipelineError::Kalman)?,
            )),
            (Some(k), Base::KalmanPrior, None) => Some(Prior::Kinematic(
                KalmanPrior::new(
                    k.spec.clone(),
                    k.params.clone(),
                    f,
                    &targets,
                    c.lead,
                    c.horizon,
                )
                .map_err(PipelineError::Kalman)?
                // Every window the pipeline filters has the lookback's rows.
                .with_window_rows(c.lookback),
            )),
            (None, Base::KalmanPrior, _) => return Err(PipelineError::MissingKalman),
            _ => None,
        };
        let gate = c
            .gate
            .map(|g| Gate::from_config(&g, targets.len()))
            .transpose()
            .map_err(PipelineError::Gate)?;
        Ok(Self {
            kind: c.kind,
            has_network: c.network.is_some(),
            features: c.features.clone(),
            lookback: c.lookback,
            network_rows: c.network_rows(),
            targets,
            horizon: c.horizon,
            lead: c.lead,
            future_names: c.future.as_ref().map_or_else(Vec::new, |f| f.names()),
            future_columns: c.future.as_ref().map_or(0, |f| f.columns.len()),
            calendar: c
                .future
                .as_ref()
                .and_then(|f| f.calendar.as_ref())
                .map(tns_calendar::Calendar::resolve)
                .transpose()
                .map_err(|e| PipelineError::Config(ConfigError::Calendar(e)))?,
            base_rows: (0..c.horizon)
                .map(|h| base_row(c.kind.base(), c.lookback, c.lead + h, c.season))
                .collect(),
            normalization: parts.normalization.clone(),
            residual_scale: parts.residual_scale.to_vec(),
            outputs_per_value: c.outputs_per_value(),
            prior,
            gate,
            conformal: parts.conformal.cloned(),
            hour_column,
            identity: ModelIdentity {
                name: c.name.clone(),
                version: parts.version.to_string(),
                sha256: parts.sha256.to_string(),
            },
        })
    }

    /// The targets' feature columns, in target order.
    pub fn target_columns(&self) -> &[usize] {
        &self.targets
    }

    /// Values of the past window (`lookback × features`).
    pub fn past_len(&self) -> usize {
        self.lookback * self.features.len()
    }

    /// Values per predicted step of the future block (0 without future inputs).
    pub fn future_width(&self) -> usize {
        self.future_names.len()
    }

    /// Rows of the past window.
    pub fn lookback(&self) -> usize {
        self.lookback
    }

    /// Predicted steps.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// Values of one model input: the past window, then the future block
    /// (`horizon × future width`).
    pub fn input_len(&self) -> usize {
        self.past_len() + self.horizon * self.future_width()
    }

    /// Values of the network's input ([`Pipeline::normalize_into`] writes them): the window's
    /// last network rows, then the future block.
    pub fn network_input_len(&self) -> usize {
        self.network_rows * self.features.len() + self.horizon * self.future_width()
    }

    /// Names of the future block's columns: the covariates, then the calendar pairs.
    pub fn future_names(&self) -> &[String] {
        &self.future_names
    }

    /// The known-future covariate columns a caller gives per step (calendar excluded).
    pub fn future_columns(&self) -> &[String] {
        &self.future_names[..self.future_columns]
    }

    /// Whether the model takes calendar features (and so needs the origin's time).
    pub fn has_calendar(&self) -> bool {
        self.calendar.is_some()
    }

    /// Writes a model input's future block (`[horizon, future width]`) from the caller's
    /// covariates (`[horizon, future columns]`) and the time of the last window row (needed
    /// when the model has calendar features): the same assembly training windows use.
    pub fn future_into(
        &self,
        columns: &[f64],
        origin_time: Option<f64>,
        out: &mut [f64],
    ) -> Result<(), InputError> {
        let (h, cu, width) = (self.horizon, self.future_columns, self.future_width());
        if columns.len() != h * cu {
            return Err(InputError::FutureShape {
                found: columns.len(),
                horizon: h,
                columns: cu,
            });
        }
        // The bound a whole window is checked against (so that a session, which checks each
        // part as it arrives, accepts exactly what `check_window` does).
        if let Some(i) = columns.iter().position(|v| !accepts_input(*v)) {
            return Err(InputError::FutureNotFinite {
                step: i / cu,
                column: self.future_names[i % cu].clone(),
                value: columns[i],
            });
        }
        for (step, row) in out.chunks_exact_mut(width.max(1)).take(h).enumerate() {
            row[..cu].copy_from_slice(&columns[step * cu..(step + 1) * cu]);
            if let Some(calendar) = &self.calendar {
                let origin = origin_time.ok_or(InputError::MissingTime)?;
                let time = calendar.time_after(origin, self.lead + step);
                calendar
                    .values_at(time, &mut row[cu..])
                    .map_err(InputError::Calendar)?;
            }
        }
        Ok(())
    }

    /// A full model input from a past window, the known-future covariates and the origin's
    /// time (allocates: for servers and scripts, not the timed path).
    pub fn assemble(
        &self,
        window: &[f64],
        future_columns: Option<&[f64]>,
        origin_time: Option<f64>,
    ) -> Result<Vec<f64>, InputError> {
        let mut input = window.to_vec();
        if self.future_width() > 0 {
            if future_columns.is_none() && self.future_columns > 0 {
                return Err(InputError::MissingFuture(self.future_columns().to_vec()));
            }
            let mut block = vec![0.0; self.horizon * self.future_width()];
            self.future_into(future_columns.unwrap_or(&[]), origin_time, &mut block)?;
            input.extend_from_slice(&block);
        }
        Ok(input)
    }

    /// Output values per window (`horizon × targets`).
    pub fn output_len(&self) -> usize {
        self.horizon * self.targets.len()
    }

    /// The conformal calibration, if any.
    pub fn conformal(&self) -> Option<&ConformalCalibration> {
        self.conformal.as_ref()
    }

    /// The Kalman prior, if any.
    pub fn prior(&self) -> Option<&Prior> {
        self.prior.as_ref()
    }

    /// The error for an input of `found` values.
    pub fn shape_error(&self, found: usize) -> InputError {
        InputError::Shape {
            found,
            lookback: self.lookback,
            features: self.features.len(),
            horizon: self.horizon,
            future: self.future_width(),
        }
    }

    /// Checks shape and finiteness of a raw model input (past window, then future block).
    pub fn check_window(&self, input: &[f64]) -> Result<(), InputError> {
        let f = self.features.len();
        if input.len() != self.input_len() {
            return Err(self.shape_error(input.len()));
        }
        let (past, future) = input.split_at(self.past_len());
        let out_of_range = |v: &f64| !accepts_input(*v);
        if let Some(i) = past.iter().position(out_of_range) {
            return Err(InputError::NotFinite {
                row: i / f,
                feature: self.features[i % f].clone(),
                value: past[i],
            });
        }
        if let Some(i) = future.iter().position(out_of_range) {
            let width = self.future_width();
            return Err(InputError::FutureNotFinite {
                step: i / width,
                column: self.future_names[i % width].clone(),
                value: future[i],
            });
        }
        Ok(())
    }

    /// A model input at the centre of the training data: every window row at the feature
    /// means, every future step at the future inputs' means. A model that cannot predict it
    /// is broken whatever a client sends, so loaders predict it once before serving.
    pub fn probe_input(&self) -> Vec<f64> {
        let n = &self.normalization;
        let mut input = Vec::with_capacity(self.input_len());
        for _ in 0..self.lookback {
            input.extend_from_slice(&n.mean);
        }
        for _ in 0..self.horizon() {
            input.extend_from_slice(&n.future_mean);
        }
        input
    }

    /// Writes the network input (f32: the window's last network rows, then the future block;
    /// [`Pipeline::network_input_len`] values) for a checked raw model input.
    pub fn normalize_into(&self, input: &[f64], out: &mut [f32]) {
        let f = self.features.len();
        let (window, future) = input.split_at(self.past_len());
        let (out_past, out_future) = out.split_at_mut(self.network_rows * f);
        let last = &window[(self.lookback - 1) * f..];
        let read = &window[(self.lookback - self.network_rows) * f..];
        let n = &self.normalization;
        for (i, (&x, o)) in read.iter().zip(out_past.iter_mut()).enumerate() {
            let c = i % f;
            let centre = if n.relative[c] { last[c] } else { n.mean[c] };
            *o = ((x - centre) / n.std[c]) as f32;
        }
        self.normalize_future_into(future, out_future);
    }

    /// Rows of the window the network reads (its last ones).
    pub fn network_rows(&self) -> usize {
        self.network_rows
    }

    /// Whether every input column is normalized by fixed training statistics (none relative
    /// to the window's last row); see [`Pipeline::normalize_row_into`].
    pub fn inputs_absolute(&self) -> bool {
        !self.normalization.relative.iter().any(|&r| r)
    }

    /// Writes one raw row's network input (`features` values), for models whose inputs are
    /// all absolute ([`Pipeline::inputs_absolute`]): the values [`Pipeline::normalize_into`]
    /// writes for that row in any window.
    pub fn normalize_row_into(&self, row: &[f64], out: &mut [f32]) {
        let n = &self.normalization;
        for (c, (&x, o)) in row.iter().zip(out.iter_mut()).enumerate() {
            *o = ((x - n.mean[c]) / n.std[c]) as f32;
        }
    }

    /// Writes the network input of a raw future block (`[horizon, future width]`).
    pub fn normalize_future_into(&self, future: &[f64], out: &mut [f32]) {
        let n = &self.normalization;
        let width = self.future_width().max(1);
        for (i, (&x, o)) in future.iter().zip(out.iter_mut()).enumerate() {
            let c = i % width;
            *o = ((x - n.future_mean[c]) / n.future_std[c]) as f32;
        }
    }

    /// A forecast with every buffer this pipeline writes allocated and zeroed: reuse it with
    /// [`Pipeline::base_into`] and [`Pipeline::finish_into`] to predict without allocating.
    pub fn empty_forecast(&self) -> Forecast {
        let (t, width) = (self.targets.len(), self.output_len());
        let zeroed = GateStep {
            statistic: 0.0,
            passed: false,
            applied_scale: 0.0,
            residual_norm: 0.0,
        };
        Forecast {
            prediction: vec![0.0; width],
            base: vec![0.0; width],
            covariance: self.prior.as_ref().map(|_| vec![0.0; width * t]),
            correction: self.has_network.then(|| vec![0.0; width]),
            gate_steps: self.gate.map(|_| vec![zeroed; self.horizon]),
            interval_scale: match &self.conformal {
                Some(c) if !c.scale.is_absolute() => vec![0.0; t],
                _ => Vec::new(),
            },
            step_hours: match &self.conformal {
                Some(c) if c.by_hour.is_some() => vec![0; self.horizon],
                _ => Vec::new(),
            },
            interval_radii: match &self.conformal {
                Some(c) if c.by_hour.is_some() => vec![0.0; width],
                _ => Vec::new(),
            },
            quantile_lower: vec![0.0; if self.outputs_per_value > 1 { width } else { 0 }],
            quantile_upper: vec![0.0; if self.outputs_per_value > 1 { width } else { 0 }],
        }
    }

    /// Writes the base forecast (last value or Kalman prior mean) and, for Kalman-based
    /// kinds, the prior's covariance `[horizon, T, T]` into `forecast`, from a model input
    /// (its past window; the future block is not read), and the window's conformal score
    /// scale for normalized calibrations. No allocation.
    pub fn base_into(&self, input: &[f64], forecast: &mut Forecast) {
        self.interval_inputs_into(input, forecast);
        let (window, future) = input.split_at(self.past_len().min(input.len()));
        match (&self.prior, forecast.covariance.as_mut()) {
            (Some(prior), Some(cov)) => prior.predict_into(window, future, &mut forecast.base, cov),
            _ => {
                let (t, f) = (self.targets.len(), self.features.len());
                for (i, b) in forecast.base.iter_mut().enumerate() {
                    *b = window[self.base_rows[i / t] * f + self.targets[i % t]];
                }
            }
        }
    }

    /// What the interval reads off a model input: the window's conformal score scale
    /// (normalized calibrations) and the predicted steps' hours with their radii (hourly
    /// calibrations). The first half of [`Pipeline::base_into`], for a base computed
    /// elsewhere (a session's carried prior). No allocation.
    pub fn interval_inputs_into(&self, input: &[f64], forecast: &mut Forecast) {
        let (window, future) = input.split_at(self.past_len().min(input.len()));
        if let Some(c) = &self.conformal {
            c.window_scale_into(
                window,
                self.features.len(),
                &self.targets,
                &mut forecast.interval_scale,
            );
            if c.by_hour.is_some() {
                self.step_hours_into(future, &mut forecast.step_hours);
                c.radii_into(&forecast.step_hours, &mut forecast.interval_radii);
            }
        }
    }

    /// Where the `hour` calendar pair (`sin`, then `cos`) sits in a row of the future block.
    pub fn hour_column(&self) -> Option<usize> {
        self.hour_column
    }

    /// The hour of day (0–23) of each predicted step, read off the `hour` calendar pair of
    /// the future block (`future`, `[horizon, future width]`): the hour whose angle is
    /// nearest the pair's. Leaves `out` as it is for a model without the pair.
    pub fn step_hours_into(&self, future: &[f64], out: &mut [u8]) {
        let (Some(column), width) = (self.hour_column, self.future_width()) else {
            return;
        };
        for (o, row) in out.iter_mut().zip(future.chunks_exact(width.max(1))) {
            let turn = row[column].atan2(row[column + 1]) / std::f64::consts::TAU;
            *o = ((turn * HOURS_F).round().rem_euclid(HOURS_F)) as u8;
        }
    }

    /// The hour of day of each predicted step of every model input (`[n, input_len]` flat),
    /// `[n, horizon]` (see [`Pipeline::step_hours_into`]); `None` for a model without the
    /// `hour` calendar feature.
    pub fn step_hours(&self, inputs: &[f64]) -> Option<Vec<u8>> {
        self.hour_column?;
        let per = self.input_len();
        let mut hours = vec![0u8; inputs.len() / per.max(1) * self.horizon];
        for (input, out) in inputs
            .chunks_exact(per)
            .zip(hours.chunks_exact_mut(self.horizon))
        {
            self.step_hours_into(&input[self.past_len()..], out);
        }
        Some(hours)
    }

    /// The base forecast `[horizon, targets]` and, for Kalman-based kinds, the prior's
    /// covariance `[horizon, T, T]`.
    pub fn base(&self, window: &[f64]) -> (Vec<f64>, Option<Vec<f64>>) {
        let mut forecast = self.empty_forecast();
        self.base_into(window, &mut forecast);
        (forecast.base, forecast.covariance)
    }

    /// Completes a forecast whose base (and covariance) [`Pipeline::base_into`] wrote: adds
    /// the network output (normalized units, `[horizon, outputs per value, targets]`; `None`
    /// for kinds without a network) scaled to data units and applies the gate; quantile
    /// heads become quantile forecasts around the base. No allocation.
    pub fn finish_into(
        &self,
        network_output: Option<&[f32]>,
        forecast: &mut Forecast,
        scratch: &mut GateScratch,
    ) -> Result<(), InputError> {
        let t = self.targets.len();
        let Forecast {
            prediction,
            base,
            covariance,
            correction,
            gate_steps,
            quantile_lower,
            quantile_upper,
            ..
        } = forecast;
        prediction.copy_from_slice(base);
        let (Some(out), Some(r)) = (network_output, correction.as_mut()) else {
            return Ok(());
        };
        if self.outputs_per_value == 1 {
            for ((c, &v), s) in r.iter_mut().zip(out).zip(&self.residual_scale) {
                *c = f64::from(v) * s;
            }
        } else {
            let per = self.outputs_per_value;
            for (k, (c, s)) in r.iter_mut().zip(&self.residual_scale).enumerate() {
                let head = |h| f64::from(out[crate::head_index(k, t, per, h)]) * s;
                *c = head(0);
                quantile_lower[k] = base[k] + head(1);
                quantile_upper[k] = base[k] + head(2);
            }
        }
        match (&self.gate, covariance.as_ref(), gate_steps.as_mut()) {
            (Some(gate), Some(cov), Some(steps)) => {
                for (h, step) in steps.iter_mut().enumerate() {
                    let span = h * t..(h + 1) * t;
                    *step = gate
                        .apply(
                            &base[span.clone()],
                            &r[span.clone()],
                            &cov[h * t * t..(h + 1) * t * t],
                            &mut prediction[span],
                            scratch,
                        )
                        .map_err(InputError::Gate)?;
                }
            }
            _ => {
                for (p, c) in prediction.iter_mut().zip(r.iter()) {
                    *p += c;
                }
            }
        }
        Ok(())
    }

    /// Values of the network's output: [`Pipeline::output_len`], times 3 with quantile heads.
    pub fn network_output_len(&self) -> usize {
        self.output_len() * self.outputs_per_value
    }

    /// The gate, if this model has one.
    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    /// The model's kind.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The certificate of a forecast made by this pipeline.
    pub fn certificate(&self, forecast: &Forecast) -> Certificate {
        let prior_and_correction = match (self.kind.base(), &forecast.correction) {
            (Base::KalmanPrior, Some(c)) => Some((forecast.base.as_slice(), c.as_slice())),
            _ => None,
        };
        Certificate::assemble(
            CertificateInputs {
                targets: self.targets.len(),
                prediction: &forecast.prediction,
                prior_and_correction,
                gate: self.gate.as_ref().zip(forecast.gate_steps.as_deref()),
                conformal: self.conformal.as_ref(),
                interval_scale: &forecast.interval_scale,
                interval_radii: &forecast.interval_radii,
                quantiles: forecast.quantiles(),
            },
            self.identity.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FutureInputs;
    use tns_calendar::{Calendar, CalendarFeature};

    /// A linear model over `[3, 2]` windows, horizon 2, with covariate `b` and the hour.
    fn future_pipeline() -> Pipeline {
        let mut c = ModelConfig::new("f", ModelKind::Linear, &["a", "b"], &["a"], 3, 2, 1);
        c.future = Some(FutureInputs {
            columns: vec!["b".into()],
            calendar: Some(Calendar {
                features: vec![CalendarFeature::Hour],
                timezone: None,
                step: 3600.0,
            }),
        });
        let normalization = InputNormalization {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
            relative: vec![true, false],
            future_mean: vec![0.0; 3],
            future_std: vec![1.0; 3],
        };
        Pipeline::new(PipelineParts {
            config: &c,
            normalization: &normalization,
            residual_scale: &[1.0; 2],
            kalman: None,
            conformal: None,
            version: "test",
            sha256: "",
        })
        .unwrap()
    }

    #[test]
    fn the_predicted_steps_hours_are_read_off_the_calendar_pair() {
        let p = future_pipeline();
        let window = [1.0; 6];
        // Every origin hour of a day, and across midnight (23:00 → 00:00, 01:00).
        for origin in 0..30 {
            let input = p
                .assemble(&window, Some(&[0.0, 0.0]), Some(f64::from(origin) * 3600.0))
                .unwrap();
            let hours = p.step_hours(&input).unwrap();
            let expected: Vec<u8> = (1..=2).map(|k| ((origin + k) % 24) as u8).collect();
            assert_eq!(hours, expected, "origin hour {origin}");
        }
        // A model without the hour refuses an hourly calibration at load.
        let c = ModelConfig::new("f", ModelKind::Linear, &["a"], &["a"], 3, 1, 1);
        let cal = ConformalCalibration {
            alpha: 0.1,
            n_calibration: 100,
            radii: vec![1.0],
            scale: tns_certify::ScoreScale::Absolute,
            by_hour: Some(tns_certify::HourRadii {
                radii: vec![1.0; 24],
                counts: vec![100; 24],
            }),
            quantile_regression: false,
        };
        let normalization = InputNormalization {
            mean: vec![0.0],
            std: vec![1.0],
            relative: vec![true],
            future_mean: Vec::new(),
            future_std: Vec::new(),
        };
        let err = Pipeline::new(PipelineParts {
            config: &c,
            normalization: &normalization,
            residual_scale: &[1.0],
            kalman: None,
            conformal: Some(&cal),
            version: "test",
            sha256: "",
        })
        .unwrap_err();
        assert_eq!(err, PipelineError::NoHour);
    }

    #[test]
    fn future_blocks_are_assembled_and_checked() {
        let p = future_pipeline();
        assert_eq!((p.past_len(), p.future_width(), p.input_len()), (6, 3, 12));
        let window = [1.0; 6];
        // Origin 1970-01-01 05:00 UTC: predicted rows at 06:00 and 07:00.
        let input = p
            .assemble(&window, Some(&[7.0, 8.0]), Some(5.0 * 3600.0))
            .unwrap();
        let hour = |h: f64| std::f64::consts::TAU * h / 24.0;
        assert_eq!(input[6], 7.0);
        assert!((input[7] - hour(6.0).sin()).abs() < 1e-12);
        assert!((input[8] - hour(6.0).cos()).abs() < 1e-12);
        assert_eq!(input[9], 8.0);
        assert!((input[10] - hour(7.0).sin()).abs() < 1e-12);
        assert!(p.check_window(&input).is_ok());
        assert!(matches!(
            p.assemble(&window, None, Some(0.0)),
            Err(InputError::MissingFuture(_))
        ));
        assert!(matches!(
            p.assemble(&window, Some(&[1.0]), Some(0.0)),
            Err(InputError::FutureShape { found: 1, .. })
        ));
        assert_eq!(
            p.assemble(&window, Some(&[1.0, 2.0]), None),
            Err(InputError::MissingTime)
        );
        let err = p
            .assemble(&window, Some(&[1.0, f64::NAN]), Some(0.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("step 1") && err.contains("\"b\""), "{err}");
        let mut bad = input.clone();
        bad[11] = f64::INFINITY;
        assert!(matches!(
            p.check_window(&bad),
            Err(InputError::FutureNotFinite { step: 1, .. })
        ));
        let err = p.check_window(&input[..6]).unwrap_err().to_string();
        assert!(
            err.contains("plus horizon × future = 2 × 3, 12 in all"),
            "{err}"
        );
    }

    #[test]
    fn future_columns_must_be_features_and_not_targets() {
        let mut c = ModelConfig::new("f", ModelKind::Mlp, &["a", "b"], &["a"], 3, 2, 1);
        for (columns, problem) in [
            (vec!["a"], "is a target"),
            (vec!["z"], "is not among the features"),
            (vec!["b", "b"], "is listed twice"),
        ] {
            c.future = Some(FutureInputs {
                columns: columns.into_iter().map(String::from).collect(),
                calendar: None,
            });
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
        c.future = Some(FutureInputs {
            columns: Vec::new(),
            calendar: None,
        });
        assert_eq!(c.validate(), Err(ConfigError::EmptyFuture));
    }

    #[test]
    fn seasonal_rows_repeat_one_season_back() {
        // Lookback 6, season 3: the row 1 ahead repeats row 3 (= 5 + 1 − 3), 3 ahead row 5,
        // 4 ahead row 3 again.
        let rows: Vec<usize> = (1..=6)
            .map(|k| base_row(Base::SeasonalNaive, 6, k, Some(3)))
            .collect();
        assert_eq!(rows, [3, 4, 5, 3, 4, 5]);
        assert_eq!(base_row(Base::LastValue, 6, 4, None), 5);
    }
}

//! Streaming: feed one observation at a time, get the next prediction when a full window
//! has been seen.

use std::sync::Arc;

use tns_certify::{AdaptiveConformal, Certificate, IntervalReport, StreamReport};

use crate::network::NetworkStream;
use crate::{Engine, EngineError, Prediction, Predictor};

/// A stream of observations for one engine.
///
/// Each push stores the row (O(1) on average, no allocation) and, once `lookback` rows have
/// been seen, predicts from the latest window. The model was trained and
/// calibrated on windows — a Kalman filter and a GRU started afresh on each window, inputs
/// normalized relative to the window's last row — so by default the session recomputes the
/// window (O(lookback) per prediction, a few microseconds) instead of carrying filter and
/// recurrent states forward forever: a carried state answers a different question than the
/// one the gate threshold and the conformal radii were calibrated for. [`Session::carried`]
/// carries them anyway where the model allows it, and its certificates say so.
///
/// ```no_run
/// use std::sync::Arc;
/// use tns_engine::{Engine, Session};
/// let engine = Arc::new(Engine::load("model.tns".as_ref())?);
/// let mut session = Session::new(engine);
/// for row in [[0.0, 0.0, 1.0, 0.0]; 12] {
///     if let Some(p) = session.push(&row)? {
///         println!("{:?}", p.values());
///     }
/// }
/// # Ok::<(), tns_engine::EngineError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    predictor: Predictor,
    /// Room for `2 · lookback` rows and a future block: the current window is the
    /// `lookback` rows from `start`, its future block right after them, so a model input is
    /// one contiguous slice without copying the window. When a new row would not fit, the
    /// last `lookback − 1` rows move to the front: one copy of a window every `lookback`
    /// rows, O(1) per row on average.
    rows: Vec<f64>,
    /// The future block of the forecast being made, checked before the row is stored.
    future: Vec<f64>,
    start: usize,
    /// Rows of the current window (fewer than `lookback` until that many arrived).
    filled: usize,
    seen: u64,
    adaptive: Option<Adaptive>,
    carried: Option<Carried>,
    /// A structural Kalman prior filtered along the stream ([`Session::carried`]).
    prior: Option<tns_kalman::StructuralStream>,
}

/// A state-space network's state carried along the stream ([`Session::carried`]), and the
/// buffers of one pushed row.
#[derive(Debug, Clone)]
struct Carried {
    stream: NetworkStream,
    row: Vec<f32>,
    /// The normalized future block of the forecast this row completes (the training means,
    /// zeros, for rows that do not forecast: the head's output for them is discarded).
    future: Vec<f32>,
    output: Vec<f32>,
}

/// Adaptive intervals of a session: the levels, and the intervals still waiting for some
/// of their truths (at most `lead + horizon` of them, in preallocated slots).
#[derive(Debug, Clone)]
struct Adaptive {
    aci: AdaptiveConformal,
    pending: Vec<Pending>,
    targets: Vec<usize>,
}

/// One issued interval: the row of its origin, its bounds `[horizon, targets]` and the hour
/// of day of each predicted step (models calibrated by hour; empty otherwise).
#[derive(Debug, Clone)]
struct Pending {
    origin: Option<u64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    hours: Vec<u8>,
}

impl Session {
    /// An empty stream.
    pub fn new(engine: Arc<Engine>) -> Self {
        let pipeline = engine.pipeline();
        let (past, future) = (
            pipeline.past_len(),
            engine.input_len() - pipeline.past_len(),
        );
        Self {
            rows: vec![0.0; 2 * past + future],
            future: vec![0.0; future],
            predictor: Predictor::new(engine),
            start: 0,
            filled: 0,
            seen: 0,
            adaptive: None,
            carried: None,
            prior: None,
        }
    }

    #[cfg(feature = "carried-sessions")]
    /// The same stream with states carried from row to row instead of recomputed from each
    /// window, O(1) per observation whatever the lookback and the rows seen:
    ///
    /// * a **structural Kalman prior** (`--seasons`) is filtered along the stream (one time
    ///   and one observation update per row, `tns_kalman::StructuralStream`) instead of
    ///   afresh over each window; after exactly `lookback` rows its forecast is the
    ///   window's up to the diffuse start (the window is filtered relative to its last
    ///   value, the stream is not);
    /// * an **S4D or Mamba network** trained with absolute inputs (`--absolute-inputs`)
    ///   advances every state-space block by one step, and the forecast reads the head off
    ///   the carried state; after exactly `lookback` rows this is the window's forecast bit
    ///   for bit.
    ///
    /// Whatever can be carried is; a model with neither is refused with what to change.
    /// Later in the stream the states hold every row since the session opened, which no
    /// calibration window had, and the certificate says so ([`StreamReport`]).
    pub fn carried(mut self) -> Result<Self, EngineError> {
        let engine = self.predictor.engine().clone();
        let pipeline = engine.pipeline();
        self.prior = match pipeline.prior() {
            Some(tns_model::Prior::Structural(prior)) => Some(prior.stream()),
            _ => None,
        };
        match self.carry_network(&engine) {
            Err(_) if self.prior.is_some() => Ok(self),
            Err(e) => Err(EngineError::Model(format!(
                "{e}; a structural Kalman prior (--seasons) would be carried too"
            ))),
            Ok(()) => Ok(self),
        }
    }

    #[cfg(feature = "carried-sessions")]
    /// Carries an S4D or Mamba network's state, or says why this network's cannot be.
    fn carry_network(&mut self, engine: &Arc<Engine>) -> Result<(), EngineError> {
        let pipeline = engine.pipeline();
        let network = engine
            .network()
            .filter(|n| n.streams())
            .ok_or_else(|| {
                EngineError::Model(
                    "only f32 S4D and Mamba networks carry their state along a stream (their layers read one row at a time)".into(),
                )
            })?;
        if !pipeline.inputs_absolute() {
            return Err(EngineError::Model(
                "this model takes targets relative to the window's last row, so every row's network input changes with each observation; train it with --absolute-inputs to carry its state".into(),
            ));
        }
        if pipeline.network_rows() != engine.manifest().config.lookback {
            return Err(EngineError::Model(
                "the network reads fewer rows than the window (--prior-context); its state cannot be carried".into(),
            ));
        }
        self.carried = Some(Carried {
            stream: network.stream()?,
            row: vec![0.0; engine.manifest().config.features.len()],
            future: vec![0.0; pipeline.horizon() * pipeline.future_width()],
            output: vec![0.0; engine.network_output_len()],
        });
        Ok(())
    }

    /// The same stream with adaptive conformal intervals (relative step `gamma`, e.g. 0.01):
    /// each observation that is the truth of an earlier forecast moves that output's radius
    /// (out by `γ r₀ (1 − α)` on a miss, in by `γ r₀ α` on a hit), and later forecasts use
    /// the moved radii. Needs a calibrated model.
    pub fn adaptive(mut self, gamma: f64) -> Result<Self, EngineError> {
        let engine = self.predictor.engine();
        let config = &engine.manifest().config;
        let calibration = engine.pipeline().conformal().ok_or_else(|| {
            EngineError::Model("adaptive intervals need a calibrated model".into())
        })?;
        let aci = AdaptiveConformal::new(calibration, gamma)
            .map_err(|e| EngineError::Model(e.to_string()))?;
        let width = engine.output_len();
        let hours = if calibration.by_hour.is_some() {
            config.horizon
        } else {
            0
        };
        let slot = || Pending {
            origin: None,
            lower: vec![0.0; width],
            upper: vec![0.0; width],
            hours: vec![0; hours],
        };
        self.adaptive = Some(Adaptive {
            aci,
            pending: (0..config.lead + config.horizon).map(|_| slot()).collect(),
            targets: config.target_indices()?,
        });
        Ok(self)
    }

    /// Bytes this session holds on the heap: fixed when it opens (room for two windows, not a
    /// growing history), whatever the length of the stream. The engine is shared, not
    /// counted.
    pub fn heap_bytes(&self) -> usize {
        let carried = self.carried.as_ref().map_or(0, |c| {
            c.stream.heap_bytes()
                + size_of::<f32>() * (c.row.capacity() + c.future.capacity() + c.output.capacity())
        });
        let adaptive = self.adaptive.as_ref().map_or(0, |a| {
            a.aci.heap_bytes()
                + size_of::<usize>() * a.targets.capacity()
                + a.pending
                    .iter()
                    .map(|p| {
                        size_of::<f64>() * (p.lower.capacity() + p.upper.capacity())
                            + p.hours.capacity()
                    })
                    .sum::<usize>()
                + size_of::<Pending>() * a.pending.capacity()
        });
        let prior = self
            .prior
            .as_ref()
            .map_or(0, tns_kalman::StructuralStream::heap_bytes);
        size_of::<Self>()
            + prior
            + size_of::<f64>() * (self.rows.capacity() + self.future.capacity())
            + self.predictor.heap_bytes()
            + adaptive
            + carried
    }

    /// Intervals resolved against their truths so far and the share that covered them
    /// (adaptive sessions only).
    pub fn adaptive_coverage(&self) -> Option<(u64, Option<f64>)> {
        self.adaptive.as_ref().map(|a| a.aci.coverage())
    }

    /// The certificate of this session's last prediction: the engine's, with the adaptive
    /// interval and its long-run guarantee when the session is adaptive.
    pub fn certificate(&self, prediction: &Prediction) -> Certificate {
        let engine = self.predictor.engine();
        let mut certificate = engine.certificate(prediction);
        let what = match (self.carried.is_some(), self.prior.is_some()) {
            (true, true) => Some("the network's and the Kalman prior's state"),
            (true, false) => Some("the network's state"),
            (false, true) => Some("the Kalman prior's state"),
            (false, false) => None,
        };
        if let Some(what) = what {
            certificate.stream = Some(StreamReport::carried(
                self.seen,
                engine.manifest().config.lookback,
                what,
            ));
        }
        if let (Some(a), Some(cal)) = (&self.adaptive, engine.pipeline().conformal()) {
            let t = engine.manifest().config.targets.len();
            let rows = |v: &[f64]| v.chunks(t).map(<[f64]>::to_vec).collect();
            let quantiles = certificate
                .interval
                .take()
                .and_then(|interval| interval.quantiles);
            certificate.interval = Some(IntervalReport {
                method: a.aci.method().into(),
                alpha: cal.alpha,
                n_calibration: cal.n_calibration,
                guarantee: a.aci.guarantee(),
                lower: rows(&prediction.lower),
                upper: rows(&prediction.upper),
                scale: (!cal.scale.is_absolute())
                    .then(|| prediction.forecast.interval_scale.clone()),
                quantiles,
            });
        }
        certificate
    }

    /// Observations pushed so far.
    pub fn observations(&self) -> u64 {
        self.seen
    }

    /// The engine of this stream.
    pub fn engine(&self) -> &Arc<Engine> {
        self.predictor.engine()
    }

    /// Appends one row (`features` values) and returns the prediction from the latest
    /// window once `lookback` rows have been seen. A row with the wrong length or a
    /// non-finite value is rejected and leaves the stream unchanged.
    pub fn push(&mut self, row: &[f64]) -> Result<Option<&Prediction>, EngineError> {
        self.push_with(row, None, None)
    }

    /// [`Session::push`] for models with known-future inputs: `future` holds the
    /// covariates over the horizon of the forecast this row completes (`[horizon, future
    /// columns]`), `time` the row's time (needed for calendar features). They are only
    /// read once `lookback` rows have been seen; a missing or malformed one is rejected
    /// and leaves the stream unchanged. No allocation.
    pub fn push_with(
        &mut self,
        row: &[f64],
        future: Option<&[f64]>,
        time: Option<f64>,
    ) -> Result<Option<&Prediction>, EngineError> {
        self.store(row, true, future, time)
    }

    /// Appends one row without forecasting (earlier rows of a batch of observations whose
    /// known-future inputs only the last one comes with). Checked like [`Session::push`].
    pub fn observe(&mut self, row: &[f64]) -> Result<(), EngineError> {
        self.store(row, false, None, None).map(|_| ())
    }

    fn store(
        &mut self,
        row: &[f64],
        forecast: bool,
        future: Option<&[f64]>,
        time: Option<f64>,
    ) -> Result<Option<&Prediction>, EngineError> {
        let engine = self.predictor.engine();
        let (config, pipeline) = (&engine.manifest().config, engine.pipeline());
        let (f, lookback) = (config.features.len(), config.lookback);
        if row.len() != f {
            return Err(EngineError::Input(tns_model::InputError::Shape {
                found: row.len(),
                lookback: 1,
                features: f,
                horizon: config.horizon,
                future: 0,
            }));
        }
        if let Some(c) = row.iter().position(|&v| !tns_model::accepts_input(v)) {
            return Err(EngineError::Input(tns_model::InputError::NotFinite {
                row: 0,
                feature: config.features[c].clone(),
                value: row[c],
            }));
        }
        let ready = self.seen + 1 >= lookback as u64;
        if ready && forecast && pipeline.future_width() > 0 {
            let columns = match future {
                Some(columns) => columns,
                None if pipeline.future_columns().is_empty() => &[],
                None => {
                    return Err(EngineError::Input(tns_model::InputError::MissingFuture(
                        pipeline.future_columns().to_vec(),
                    )));
                }
            };
            pipeline.future_into(columns, time, &mut self.future)?;
        }
        // The row is stored: it is the truth of earlier forecasts' steps.
        if let Some(a) = self.adaptive.as_mut() {
            a.resolve(self.seen, row, config.lead, config.horizon);
        }
        if self.start + self.filled == 2 * lookback {
            // Full: the window's last rows, which the next window keeps, move to the front.
            let keep = self.filled.min(lookback - 1);
            let from = (self.start + self.filled - keep) * f;
            self.rows.copy_within(from..from + keep * f, 0);
            (self.start, self.filled) = (0, keep);
        }
        let at = (self.start + self.filled) * f;
        self.rows[at..at + f].copy_from_slice(row);
        if self.filled < lookback {
            self.filled += 1;
        } else {
            self.start += 1;
        }
        self.seen += 1;
        #[cfg(feature = "carried-sessions")]
        if let Some(prior) = self.prior.as_mut() {
            prior.push(row);
        }
        let forecasts = self.seen >= lookback as u64 && forecast;
        #[cfg(feature = "carried-sessions")]
        if let Some(c) = self.carried.as_mut() {
            pipeline.normalize_row_into(row, &mut c.row);
            if forecasts {
                pipeline.normalize_future_into(&self.future, &mut c.future);
            } else {
                c.future.fill(0.0);
            }
            if let Some(network) = engine.network() {
                network.stream_push(&mut c.stream, &c.row, &c.future, &mut c.output);
            }
        }
        if !forecasts {
            return Ok(None);
        }
        // The model input: the window's rows, then its future block right after them.
        let first = self.start * f;
        let end = first + pipeline.past_len();
        self.rows[end..end + self.future.len()].copy_from_slice(&self.future);
        let input = &self.rows[first..end + self.future.len()];
        let origin = self.seen - 1;
        let output = self.carried.as_ref().map(|c| c.output.as_slice());
        let prediction = if output.is_some() || self.prior.is_some() {
            self.predictor
                .predict_streamed(input, self.prior.as_mut(), output)?
        } else {
            self.predictor.predict_mut(input)?
        };
        if let Some(a) = self.adaptive.as_mut() {
            a.aci.interval(
                &prediction.forecast.prediction,
                prediction.forecast.quantiles(),
                &prediction.forecast.interval_scale,
                &prediction.forecast.step_hours,
                &mut prediction.lower,
                &mut prediction.upper,
            );
            a.issue(origin, prediction);
        }
        Ok(Some(prediction))
    }
}

impl Adaptive {
    /// Scores the stored intervals whose step falls on row `row_index` (0-based) against
    /// `row`, and frees those that are complete.
    fn resolve(&mut self, row_index: u64, row: &[f64], lead: usize, horizon: usize) {
        let t = self.targets.len();
        for slot in &mut self.pending {
            let Some(origin) = slot.origin else {
                continue;
            };
            let ahead = row_index - origin;
            if ahead >= lead as u64 && ahead < (lead + horizon) as u64 {
                let step = (ahead - lead as u64) as usize;
                for (j, &column) in self.targets.iter().enumerate() {
                    let k = step * t + j;
                    let y = row[column];
                    let hour = slot.hours.get(step).copied().unwrap_or(0);
                    self.aci
                        .update(k, hour, slot.lower[k] <= y && y <= slot.upper[k]);
                }
            }
            if ahead + 1 >= (lead + horizon) as u64 {
                slot.origin = None;
            }
        }
    }

    /// Keeps a new forecast's interval until its truths arrive.
    fn issue(&mut self, origin: u64, prediction: &Prediction) {
        if let Some(slot) = self.pending.iter_mut().find(|s| s.origin.is_none()) {
            slot.origin = Some(origin);
            slot.lower.copy_from_slice(&prediction.lower);
            slot.upper.copy_from_slice(&prediction.upper);
            let hours = &prediction.forecast.step_hours;
            if slot.hours.len() == hours.len() {
                slot.hours.copy_from_slice(hours);
            }
        }
    }
}

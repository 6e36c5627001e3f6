//! The inference engine: a TNS model file compiled into a frozen plan that predicts, with
//! its certificate, in microseconds and without allocating. Candle-free: serving, embedding
//! and WASM use this crate, never the training stack.
//!
//! A plan is the manifest's [`Pipeline`] (input checks, normalization, Kalman prior, gate,
//! conformal interval — the same code training calibrates with) around a [`NetworkPlan`]
//! with pre-packed weights and SIMD kernels chosen at load time.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tns_engine::{Engine, Predictor};
//!
//! let engine = Arc::new(Engine::load("model.tns".as_ref())?);
//! let mut predictor = Predictor::new(engine.clone());
//! let window = vec![0.0; engine.input_len()];
//! let prediction = predictor.predict(&window)?;
//! println!("{:?} fallback={}", prediction.values(), prediction.fallback_used());
//! println!("{}", serde_json::to_string(&engine.certificate(prediction))?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aligned;
mod int8;
mod kernels;
mod network;
mod scoring;
mod session;

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use tns_certify::{Certificate, ConformalCalibration, GateScratch};
use tns_format::{FormatError, Manifest, load_model, read_model};
use tns_model::{ConfigError, Forecast, InputError, NamedTensor, Pipeline, PipelineError};

pub use kernels::{Isa, LANES, exp_in_place, sigmoid_in_place, tanh_in_place};
pub use network::{NetworkPlan, NetworkScratch, NetworkStream};
pub use scoring::{RowScorer, ScoreError};
pub use session::Session;

/// Batches of at least this many windows are checked in parallel ([`Engine::predict_batch`]).
const PARALLEL_CHECK_WINDOWS: usize = 1024;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be read or is not a valid TNS model.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The model description is invalid or its tensors do not match it.
    #[error("model: {0}")]
    Config(#[from] ConfigError),
    /// The manifest's fitted parts do not make a pipeline.
    #[error("model: {0}")]
    Pipeline(#[from] PipelineError),
    /// The manifest and the tensors do not describe a runnable model.
    #[error("model: {0}")]
    Model(String),
    /// A window cannot be predicted from.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The model produced a non-finite forecast, interval or covariance from a valid input:
    /// a fault of the model (its file or its fitted parameters), never returned as a result.
    #[error(
        "the model's {what} is not finite at position {position} for a valid input; the model file's parameters are faulty (retrain or restore it)"
    )]
    NonFiniteOutput {
        /// What: `forecast`, `interval` or `prior covariance`.
        what: &'static str,
        /// 0-based position in that output (`step × targets + target`; covariance entries
        /// are `[step, target, target]`).
        position: usize,
    },
    /// The model cannot predict an input at the centre of its training data
    /// ([`Pipeline::probe_input`]), so it would fail on every request: refused at load.
    #[error(
        "model: it fails on a probe input (every value at its training mean), so it cannot serve: {0}"
    )]
    ProbeFailed(#[source] Box<EngineError>),
    /// The calibration windows do not make a conformal calibration.
    #[error("conformal calibration: {0}")]
    Conformal(#[from] tns_certify::ConformalError),
    /// A window of a batch cannot be predicted from.
    #[error("window {index} of the batch: {source}")]
    BatchInput {
        /// 0-based index of the window.
        index: usize,
        /// What is wrong with it.
        source: InputError,
    },
}

/// A compiled model: immutable, shareable across threads (`Arc<Engine>`).
#[derive(Debug, Clone)]
pub struct Engine {
    manifest: Manifest,
    pipeline: Pipeline,
    network: Option<NetworkPlan>,
    isa: Isa,
}

/// One prediction with everything its certificate states, in preallocated buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Output, base, prior covariance, network correction and gate outcome per step.
    pub forecast: Forecast,
    /// Lower ends of the conformal interval (empty without a calibration).
    pub lower: Vec<f64>,
    /// Upper ends of the conformal interval (empty without a calibration).
    pub upper: Vec<f64>,
}

impl Prediction {
    /// The predicted values `[horizon, targets]`, flat.
    pub fn values(&self) -> &[f64] {
        &self.forecast.prediction
    }

    /// Whether the gate rejected the correction at any horizon step.
    pub fn fallback_used(&self) -> bool {
        self.forecast
            .gate_steps
            .as_ref()
            .is_some_and(|s| s.iter().any(|g| !g.passed))
    }

    /// The conformal interval `(lower, upper)`, if the model is calibrated.
    pub fn interval(&self) -> Option<(&[f64], &[f64])> {
        (!self.lower.is_empty()).then_some((&self.lower, &self.upper))
    }
}

impl Engine {
    /// Loads and compiles a model file (checksum and format checked by the loader).
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let (manifest, tensors) = load_model(path)?;
        Self::new(manifest, &tensors)
    }

    /// Verifies and compiles a model file held in memory (`origin` names it in errors).
    pub fn from_bytes(origin: &Path, bytes: &[u8]) -> Result<Self, EngineError> {
        let (manifest, tensors) = read_model(origin, bytes)?;
        Self::new(manifest, &tensors)
    }

    /// Compiles a manifest and its tensors with the best instruction set of this CPU.
    pub fn new(manifest: Manifest, tensors: &[NamedTensor]) -> Result<Self, EngineError> {
        Self::with_isa(manifest, tensors, Isa::detect())
    }

    /// Compiles with a given instruction set (the portable one runs everywhere; the AVX2 one
    /// is only accepted where the CPU has it).
    pub fn with_isa(
        manifest: Manifest,
        tensors: &[NamedTensor],
        isa: Isa,
    ) -> Result<Self, EngineError> {
        if isa == Isa::Avx2Fma && Isa::detect() != Isa::Avx2Fma {
            return Err(EngineError::Model("this CPU lacks AVX2/FMA".into()));
        }
        let pipeline = manifest.pipeline()?;
        let network = manifest
            .config
            .network
            .as_ref()
            .map(|_| {
                NetworkPlan::new(
                    &manifest.config,
                    tensors,
                    manifest.quantization.is_some(),
                    isa,
                )
            })
            .transpose()?;
        if network.is_none() && !tensors.is_empty() {
            return Err(EngineError::Model(format!(
                "kind {} has no network but the file holds {} tensors",
                manifest.config.kind.name(),
                tensors.len()
            )));
        }
        let engine = Self {
            manifest,
            pipeline,
            network,
            isa,
        };
        let probe = engine
            .predict_all(&engine.pipeline.probe_input())
            .map_err(|e| EngineError::ProbeFailed(Box::new(e)))?;
        // The priors' predictive covariance does not depend on the window (their gains
        // never see an observation), so checking it once here covers every prediction.
        let covariance = probe
            .first()
            .and_then(|p| p.forecast.covariance.as_deref())
            .unwrap_or_default();
        if let Some(position) = covariance.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::ProbeFailed(Box::new(
                EngineError::NonFiniteOutput {
                    what: "prior covariance",
                    position,
                },
            )));
        }
        Ok(engine)
    }

    /// Renames the model for a report (reports and certificates carry the name; they keep
    /// the file's checksum, see [`Manifest::relabel`]).
    pub fn rename(&mut self, name: &str) {
        self.manifest.relabel(name);
        if let Ok(pipeline) = self.manifest.pipeline() {
            self.pipeline = pipeline;
        }
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The pre- and post-processing pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The compiled network, if the kind has one.
    pub fn network(&self) -> Option<&NetworkPlan> {
        self.network.as_ref()
    }

    /// The instruction set of the kernels.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Values per model input: the window `lookback × features`, then the known-future
    /// block `horizon × future` (see [`Pipeline::assemble`]).
    pub fn input_len(&self) -> usize {
        self.pipeline.input_len()
    }

    /// Values per prediction (`horizon × targets`).
    pub fn output_len(&self) -> usize {
        self.pipeline.output_len()
    }

    /// Values of the network's output per prediction (`horizon × targets`, times 3 with
    /// quantile heads).
    pub fn network_output_len(&self) -> usize {
        self.pipeline.network_output_len()
    }

    /// A prediction with all buffers allocated, to be filled by the engine.
    pub fn empty_prediction(&self) -> Prediction {
        let calibrated = self.pipeline.conformal().is_some();
        let width = if calibrated { self.output_len() } else { 0 };
        Prediction {
            forecast: self.pipeline.empty_forecast(),
            lower: vec![0.0; width],
            upper: vec![0.0; width],
        }
    }

    /// The certificate of a prediction made by this engine (allocates: it is a document).
    pub fn certificate(&self, prediction: &Prediction) -> Certificate {
        self.pipeline.certificate(&prediction.forecast)
    }

    /// Predicts `n` windows (`[n, lookback, features]` flat) into `out` (`n` predictions from
    /// [`Engine::empty_prediction`]) on all threads of the current rayon pool. Every window
    /// is checked before any work; blocks of [`LANES`] windows advance through the network
    /// together.
    pub fn predict_batch(
        &self,
        windows: &[f64],
        out: &mut [Prediction],
    ) -> Result<(), EngineError> {
        let per = self.input_len();
        if windows.len() != out.len() * per {
            return Err(EngineError::Model(format!(
                "{} window values for {} predictions; expected {} per window",
                windows.len(),
                out.len(),
                per
            )));
        }
        let check = |(index, w): (usize, &[f64])| {
            self.pipeline
                .check_window(w)
                .map_err(|source| EngineError::BatchInput { index, source })
        };
        // Large batches are checked on every thread (a serial pass would bound the speed-up
        // of the rest); small ones here, where handing the pass to the pool costs more.
        if out.len() < PARALLEL_CHECK_WINDOWS {
            windows.chunks_exact(per).enumerate().try_for_each(check)?;
        } else {
            windows
                .par_chunks_exact(per)
                .enumerate()
                .try_for_each(check)?;
        }
        let failure = out
            .par_chunks_mut(LANES)
            .zip(windows.par_chunks(LANES * per))
            .map_init(
                || BatchScratch::new(self),
                |scratch, (preds, block)| self.predict_block(block, preds, scratch),
            )
            .find_any(Result::is_err);
        failure.unwrap_or(Ok(()))
    }

    /// Predicts `n` windows (`[n, lookback, features]` flat) into new predictions, on all
    /// threads of the current rayon pool: what evaluation and calibration run.
    pub fn predict_all(&self, windows: &[f64]) -> Result<Vec<Prediction>, EngineError> {
        let per = self.input_len();
        if !windows.len().is_multiple_of(per) {
            return Err(EngineError::Input(
                self.pipeline.shape_error(windows.len() % per),
            ));
        }
        let mut out = vec![self.empty_prediction(); windows.len() / per];
        self.predict_batch(windows, &mut out)?;
        Ok(out)
    }

    /// Calibrates this engine's conformal interval on `inputs` (model inputs, flat) and
    /// their `truths` (`[n, horizon × targets]`): split conformal with absolute scores, or,
    /// with `normalized_rows`, with scores normalized by each window's volatility over its
    /// last that many rows (at most the lookback; see [`tns_certify::ScoreScale`]); with
    /// `by_hour`, also per hour of day of the predicted step ([`tns_certify::HourRadii`];
    /// the model needs the `hour` calendar feature). A network with quantile heads is
    /// calibrated by conformalized quantile regression, the same ways. The engine's own
    /// calibration, if any, is not used.
    pub fn calibrate(
        &self,
        alpha: f64,
        normalized_rows: Option<usize>,
        by_hour: bool,
        inputs: &[f64],
        truths: &[f64],
    ) -> Result<ConformalCalibration, EngineError> {
        let all = self.predict_all(inputs)?;
        let predictions: Vec<f64> = all
            .iter()
            .flat_map(|p| p.values().iter().copied())
            .collect();
        let quantiles: Option<(Vec<f64>, Vec<f64>)> =
            self.manifest.config.quantile_heads.map(|_| {
                let side = |f: fn(&Prediction) -> &[f64]| all.iter().flat_map(f).copied().collect();
                (
                    side(|p| &p.forecast.quantile_lower),
                    side(|p| &p.forecast.quantile_upper),
                )
            });
        let width = self.output_len();
        let features = self.manifest.config.features.len();
        let rows = normalized_rows.map(|r| r.min(self.pipeline.lookback()));
        let volatility: Option<Vec<f64>> = rows.map(|rows| {
            inputs
                .chunks_exact(self.input_len())
                .flat_map(|input| {
                    tns_certify::window_volatility(
                        &input[..self.pipeline.past_len()],
                        features,
                        self.pipeline.target_columns(),
                        rows,
                    )
                })
                .collect()
        });
        let volatility = volatility.as_deref().zip(rows);
        let hours =
            match by_hour {
                true => Some(self.pipeline.step_hours(inputs).ok_or_else(|| {
                    EngineError::Model(tns_model::PipelineError::NoHour.to_string())
                })?),
                false => None,
            };
        if let Some((lower, upper)) = &quantiles {
            return Ok(ConformalCalibration::fit_quantile_regression(
                alpha,
                &predictions,
                lower,
                upper,
                truths,
                width,
                volatility,
                hours.as_deref(),
            )?);
        }
        if let Some(hours) = hours {
            return Ok(ConformalCalibration::fit_by_hour(
                alpha,
                &predictions,
                truths,
                width,
                volatility,
                &hours,
            )?);
        }
        Ok(match volatility {
            None => ConformalCalibration::fit(alpha, &predictions, truths, width)?,
            Some((v, rows)) => {
                ConformalCalibration::fit_normalized(alpha, &predictions, truths, width, v, rows)?
            }
        })
    }

    fn predict_block(
        &self,
        block: &[f64],
        preds: &mut [Prediction],
        s: &mut BatchScratch,
    ) -> Result<(), EngineError> {
        let (per, width) = (self.input_len(), self.network_output_len());
        let net_per = self.pipeline.network_input_len();
        let n = preds.len();
        if let (Some(net), Some(scratch)) = (&self.network, s.network.as_mut()) {
            for (w, x) in block
                .chunks_exact(per)
                .zip(s.normalized.chunks_exact_mut(net_per))
            {
                self.pipeline.normalize_into(w, x);
            }
            net.forward_lanes(
                &s.normalized[..n * net_per],
                &mut s.outputs[..n * width],
                scratch,
            );
        }
        for (i, (w, p)) in block.chunks_exact(per).zip(preds.iter_mut()).enumerate() {
            let net = self
                .network
                .as_ref()
                .map(|_| &s.outputs[i * width..(i + 1) * width]);
            self.finish(w, net, p, &mut s.gate)?;
        }
        Ok(())
    }

    /// Base forecast, gate and interval for a checked window and its network output.
    fn finish(
        &self,
        window: &[f64],
        network_output: Option<&[f32]>,
        p: &mut Prediction,
        gate: &mut GateScratch,
    ) -> Result<(), EngineError> {
        self.pipeline.base_into(window, &mut p.forecast);
        self.pipeline
            .finish_into(network_output, &mut p.forecast, gate)?;
        self.interval(p)
    }

    /// Writes the conformal interval, then checks that the forecast and the interval are
    /// finite (the covariance, which does not depend on the window, was checked at load).
    fn interval(&self, p: &mut Prediction) -> Result<(), EngineError> {
        if let Some(cal) = self.pipeline.conformal() {
            cal.interval(
                &p.forecast.prediction,
                p.forecast.quantiles(),
                &p.forecast.interval_scale,
                &p.forecast.interval_radii,
                &mut p.lower,
                &mut p.upper,
            );
        }
        let first_non_finite =
            |what, values: &[f64]| match values.iter().position(|v| !v.is_finite()) {
                Some(position) => Err(EngineError::NonFiniteOutput { what, position }),
                None => Ok(()),
            };
        first_non_finite("forecast", &p.forecast.prediction)?;
        first_non_finite("interval", &p.lower)?;
        first_non_finite("interval", &p.upper)
    }
}

struct BatchScratch {
    normalized: Vec<f32>,
    outputs: Vec<f32>,
    network: Option<NetworkScratch>,
    gate: GateScratch,
}

impl BatchScratch {
    fn new(engine: &Engine) -> Self {
        Self {
            normalized: vec![0.0; LANES * engine.pipeline.network_input_len()],
            outputs: vec![0.0; LANES * engine.network_output_len()],
            network: engine.network.as_ref().map(NetworkPlan::scratch),
            gate: GateScratch::new(engine.manifest.config.targets.len()),
        }
    }
}

/// Single-sample predictions without allocation: an engine plus every buffer one
/// prediction needs. One per thread.
#[derive(Debug, Clone)]
pub struct Predictor {
    engine: Arc<Engine>,
    normalized: Vec<f32>,
    network_output: Vec<f32>,
    network: Option<NetworkScratch>,
    gate: GateScratch,
    prediction: Prediction,
}

impl Predictor {
    /// Buffers for `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            normalized: vec![0.0; engine.pipeline.network_input_len()],
            network_output: vec![0.0; engine.network_output_len()],
            network: engine.network.as_ref().map(NetworkPlan::scratch),
            gate: GateScratch::new(engine.manifest.config.targets.len()),
            prediction: engine.empty_prediction(),
            engine,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Predicts one raw window `[lookback, features]` (flat, data units): checks it, runs
    /// the Kalman prior, the network, the gate and the conformal interval. No allocation.
    pub fn predict(&mut self, window: &[f64]) -> Result<&Prediction, EngineError> {
        self.stage_prior(window)?;
        self.stage_network(window);
        self.stage_gate()?;
        Ok(&self.prediction)
    }

    /// Stage 1 of [`Predictor::predict`] (exposed for per-stage timing): input checks and
    /// the base forecast (Kalman filter over the window and h-step prediction).
    pub fn stage_prior(&mut self, window: &[f64]) -> Result<(), EngineError> {
        self.engine.pipeline.check_window(window)?;
        self.engine
            .pipeline
            .base_into(window, &mut self.prediction.forecast);
        Ok(())
    }

    /// Stage 2: normalization and the network forward pass (nothing for kinds without one).
    pub fn stage_network(&mut self, window: &[f64]) {
        if let (Some(net), Some(scratch)) = (&self.engine.network, self.network.as_mut()) {
            self.engine
                .pipeline
                .normalize_into(window, &mut self.normalized);
            net.forward(&self.normalized, &mut self.network_output, scratch);
        }
    }

    /// Stage 3: correction in data units, the gate and the conformal interval.
    pub fn stage_gate(&mut self) -> Result<(), EngineError> {
        let out = self
            .engine
            .network
            .as_ref()
            .map(|_| self.network_output.as_slice());
        self.engine
            .pipeline
            .finish_into(out, &mut self.prediction.forecast, &mut self.gate)?;
        self.engine.interval(&mut self.prediction)
    }

    /// [`Predictor::predict`], with the prediction left mutable (a session rewrites its
    /// interval).
    pub(crate) fn predict_mut(&mut self, window: &[f64]) -> Result<&mut Prediction, EngineError> {
        self.predict(window)?;
        Ok(&mut self.prediction)
    }

    /// [`Predictor::predict_mut`] for a session that carries states along the stream: the
    /// base forecast from the carried structural prior `prior` (else from `input`'s window),
    /// the network's output given (else computed from `input`), then the correction, gate
    /// and interval.
    pub(crate) fn predict_streamed(
        &mut self,
        input: &[f64],
        prior: Option<&mut tns_kalman::StructuralStream>,
        network_output: Option<&[f32]>,
    ) -> Result<&mut Prediction, EngineError> {
        // No check of the whole window: the session checked each row as it arrived and the
        // future block as it was assembled, and a scan of the window would cost O(lookback).
        let pipeline = &self.engine.pipeline;
        let forecast = &mut self.prediction.forecast;
        match prior {
            Some(prior) if forecast.covariance.is_some() => {
                pipeline.interval_inputs_into(input, forecast);
                let future = &input[pipeline.past_len()..];
                if let Some(cov) = forecast.covariance.as_mut() {
                    prior.predict_into(future, &mut forecast.base, cov);
                }
            }
            _ => pipeline.base_into(input, forecast),
        }
        match network_output {
            Some(out) => self.network_output.copy_from_slice(out),
            None => self.stage_network(input),
        }
        self.stage_gate()?;
        Ok(&mut self.prediction)
    }

    /// Bytes this predictor's buffers hold on the heap (the engine is shared, not counted).
    pub fn heap_bytes(&self) -> usize {
        let p = &self.prediction;
        size_of::<f32>() * (self.normalized.capacity() + self.network_output.capacity())
            + self.network.as_ref().map_or(0, NetworkScratch::heap_bytes)
            + self.gate.heap_bytes()
            + p.forecast.heap_bytes()
            + size_of::<f64>() * (p.lower.capacity() + p.upper.capacity())
    }

    /// The last prediction.
    pub fn prediction(&self) -> &Prediction {
        &self.prediction
    }
}

/// The manifest fuzz target's body (see `fuzz/`): the model file `model` with its manifest
/// replaced by `manifest_json` must load or fail with an error, and predict if it loads.
#[doc(hidden)]
pub fn fuzz_manifest_check(model: &[u8], manifest_json: &[u8]) {
    let Ok(json) = std::str::from_utf8(manifest_json) else {
        return;
    };
    if let Some(bytes) = tns_format::with_manifest_json(model, json) {
        fuzz_check(&bytes);
    }
}

/// The fuzz target's body (see `fuzz/`): `bytes` as a model file must load or fail with an
/// error, and a model that loads must predict a window of ones or reject it with an error.
/// Public so that the corpus also runs as an ordinary test on stable Rust.
#[doc(hidden)]
pub fn fuzz_check(bytes: &[u8]) {
    let Ok(engine) = Engine::from_bytes(Path::new("fuzz-input.tns"), bytes) else {
        return;
    };
    let engine = Arc::new(engine);
    let window = vec![1.0; engine.input_len()];
    let mut predictor = Predictor::new(engine.clone());
    if let Ok(prediction) = predictor.predict(&window) {
        let _ = engine.certificate(prediction);
    }
}

//! The conformance suite's support: the reference every backend is checked against, and the
//! example models it runs.
//!
//! * [`CandleReference`] predicts the way training sees a model: the Candle network (the
//!   training forward, every layer lowered to Candle) inside the model's [`Pipeline`].
//! * [`examples`] builds one model for every example network of the description
//!   ([`tns_model::examples::networks`], which covers every layer type at two sizes or more)
//!   × every window shape of [`tns_model::examples::WINDOWS`] × every kind that takes a network,
//!   with seeded random weights and a complete manifest (normalization, residual scales,
//!   Kalman prior, gate, conformal radii). No training: a lowering is right or wrong
//!   whatever the weights.
//!
//! The suite itself is `tests/conformance.rs`: Candle against the engine (single sample on
//! every instruction set, batch), INT8 against f32 within its accuracy bound, and ONNX in
//! onnxruntime. The engine's own tests use [`CandleReference`] as their reference too.

mod harness;

pub use harness::{
    assert_json_within, onnxruntime_available, python, python_modules_available, run_ort_parity,
};

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tns_calendar::{Calendar, CalendarFeature};
use tns_certify::{ConformalCalibration, GateScratch, HOURS, HourRadii, ScoreScale};
use tns_format::Manifest;
use tns_kalman::{AxisParams, KalmanSpec, Season, StructuralParams, StructuralSpec, Trend};
use tns_model::{
    Forecast, FutureInputs, InputError, InputNormalization, KalmanParameters, ModelConfig,
    ModelKind, NamedTensor, NetworkConfig, Pipeline, PipelineError, QuantileHeads,
};
use tns_models::{ModelError, Network};

/// Why the reference cannot predict.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The manifest does not make a pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The Candle network failed.
    #[error(transparent)]
    Network(#[from] ModelError),
    /// A window cannot be predicted from.
    #[error(transparent)]
    Input(#[from] InputError),
}

/// The training side's prediction: the Candle network inside the model's pipeline.
#[derive(Debug)]
pub struct CandleReference {
    pipeline: Pipeline,
    network: Option<Network>,
    targets: usize,
}

impl CandleReference {
    /// Builds the reference for a model on the CPU.
    pub fn new(manifest: &Manifest, tensors: &[NamedTensor]) -> Result<Self, ReferenceError> {
        let pipeline = manifest.pipeline()?;
        let network = manifest
            .config
            .network
            .as_ref()
            .map(|_| Network::from_tensors(&manifest.config, tensors, &Device::Cpu))
            .transpose()?;
        Ok(Self {
            pipeline,
            network,
            targets: manifest.config.targets.len(),
        })
    }

    /// The pipeline around the network.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The raw network outputs (normalized units) of `n` normalized windows.
    pub fn network_outputs(&self, normalized: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        match &self.network {
            Some(net) => net.forward_flat(normalized, n, &Device::Cpu),
            None => Ok(Vec::new()),
        }
    }

    /// Predicts raw model inputs (`[n, input_len]` flat, data units).
    pub fn predict(&self, windows: &[f64]) -> Result<Vec<Forecast>, ReferenceError> {
        let per = self.pipeline.input_len();
        for w in windows.chunks(per) {
            self.pipeline.check_window(w)?;
        }
        let n = windows.len() / per;
        let net_per = self.pipeline.network_input_len();
        let mut normalized = vec![0f32; n * net_per];
        for (w, x) in windows
            .chunks_exact(per)
            .zip(normalized.chunks_exact_mut(net_per))
        {
            self.pipeline.normalize_into(w, x);
        }
        let outputs = self.network_outputs(&normalized, n)?;
        let width = self.pipeline.network_output_len();
        let mut scratch = GateScratch::new(self.targets);
        windows
            .chunks_exact(per)
            .enumerate()
            .map(|(i, w)| {
                let mut forecast = self.pipeline.empty_forecast();
                self.pipeline.base_into(w, &mut forecast);
                let out = self
                    .network
                    .as_ref()
                    .map(|_| &outputs[i * width..(i + 1) * width]);
                self.pipeline
                    .finish_into(out, &mut forecast, &mut scratch)?;
                Ok(forecast)
            })
            .collect()
    }
}

/// One example model of the suite.
#[derive(Debug, Clone)]
pub struct Example {
    /// `kind over network at [lookback, features]`.
    pub label: String,
    /// The complete manifest (no checksum: the models are never written).
    pub manifest: Manifest,
    /// Seeded random weights.
    pub tensors: Vec<NamedTensor>,
}

/// Every example network × every window shape × without and with known-future inputs ×
/// every kind that takes a network.
pub fn examples() -> Result<Vec<Example>, ReferenceError> {
    let learned: Vec<ModelKind> = ModelKind::ALL
        .into_iter()
        .filter(|k| k.is_learned())
        .collect();
    let mut out = Vec::new();
    for (seed, network) in tns_model::examples::networks().into_iter().enumerate() {
        for &(lookback, features) in &tns_model::examples::WINDOWS {
            for future in [false, true] {
                for &kind in &learned {
                    out.push(example(
                        kind,
                        &network,
                        lookback,
                        features,
                        future,
                        seed as u64,
                    )?);
                }
            }
        }
        out.push(structural_example(&network, seed as u64)?);
        out.push(quantile_example(&network, seed as u64)?);
    }
    Ok(out)
}

/// System B over `network` at the first window shape, with known-future inputs and quantile
/// heads, its interval conformalized quantile regression (normalized and by hour), some of
/// its radii negative (a band narrowed): every backend must grow the interval from the
/// quantile forecasts and keep the forecast inside it.
pub fn quantile_example(network: &NetworkConfig, seed: u64) -> Result<Example, ReferenceError> {
    let (lookback, features) = tns_model::examples::WINDOWS[0];
    let mut example = example(ModelKind::SystemB, network, lookback, features, true, seed)?;
    let m = &mut example.manifest;
    m.config.quantile_heads = Some(QuantileHeads::central(0.1));
    example.tensors = Network::init(&m.config, &Device::Cpu)?.to_tensors()?;
    if let Some(c) = m.conformal.as_mut() {
        c.quantile_regression = true;
        let by_hour = c.by_hour.as_mut().map(|h| &mut h.radii);
        for radii in std::iter::once(&mut c.radii).chain(by_hour) {
            radii.iter_mut().step_by(3).for_each(|r| *r *= -0.5);
        }
    }
    example.label = format!(
        "{} with quantile heads (conformalized quantile regression)",
        example.label
    );
    split_gate_decisions(&mut example, seed)?;
    Ok(example)
}

/// System B over `network` at `[10, 4]` with known-future inputs and a structural prior
/// (local level, a 4-row season with one harmonic, and regression on the known-future
/// covariate) instead of the kinematic axes, reading all 10 rows while the network reads the
/// last 6.
pub fn structural_example(network: &NetworkConfig, seed: u64) -> Result<Example, ReferenceError> {
    let mut example = example(ModelKind::SystemB, network, 10, 4, true, seed)?;
    let regressors: Vec<String> = example
        .manifest
        .config
        .future
        .as_ref()
        .map(|f| f.columns.clone())
        .unwrap_or_default();
    let k = regressors.len();
    // Odd seeds give the prior a damped slope, so that both trends reach every backend.
    let trend = if seed % 2 == 1 {
        Trend::Damped
    } else {
        Trend::Level
    };
    let spec = StructuralSpec {
        trend,
        seasons: vec![Season {
            period: 4.0,
            harmonics: 1,
        }],
        initial_variance: 1e6,
        regressors,
    };
    let params = |scale: f64| StructuralParams {
        level: 0.02 * scale,
        slope: (trend == Trend::Damped).then_some(0.005 * scale),
        seasonal: vec![0.01 * scale],
        observation: 0.05 * scale,
        regression: vec![0.3 * scale; k],
        damping: (trend == Trend::Damped).then_some(0.9),
        log_likelihood: 0.0,
    };
    let m = &mut example.manifest;
    m.config.structural = Some(spec);
    m.config.network_lookback = Some(6);
    example.tensors = Network::init(&m.config, &Device::Cpu)?.to_tensors()?;
    if let Some(kalman) = m.kalman.as_mut() {
        kalman.structural = (0..m.config.targets.len())
            .map(|j| params(1.0 + j as f64))
            .collect();
    }
    example.label = format!(
        "{} with a structural prior ({trend:?} trend) regressed on {k} covariate(s), the network on the last 6 rows",
        example.label
    );
    split_gate_decisions(&mut example, seed)?;
    Ok(example)
}

/// The known-future inputs of the examples: the last column when it is not a target, and
/// the hour of day in Paris (hourly rows), so that the suite's origins cross a DST change.
fn example_future(names: &[&str], targets: usize) -> FutureInputs {
    let columns = if names.len() > targets {
        vec![names[names.len() - 1].to_string()]
    } else {
        Vec::new()
    };
    FutureInputs {
        columns,
        calendar: Some(Calendar {
            features: vec![CalendarFeature::Hour],
            timezone: Some("Europe/Paris".into()),
            step: 3600.0,
        }),
    }
}

/// A model of `kind` over `network` for windows `[lookback, features]` (with known-future
/// inputs when `future`): horizon 2, the first `min(features, 2)` columns as targets (Kalman
/// local-trend axes for System B), random weights seeded by `seed`.
pub fn example(
    kind: ModelKind,
    network: &NetworkConfig,
    lookback: usize,
    features: usize,
    future: bool,
    seed: u64,
) -> Result<Example, ReferenceError> {
    let names: Vec<String> = (0..features).map(|c| format!("c{c}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let targets = &names[..features.min(2)];
    let horizon = 2;
    let mut config = ModelConfig::new(
        &format!("{}-{network}", kind.name()),
        kind,
        &names,
        targets,
        lookback,
        horizon,
        1,
    );
    config.network = Some(network.clone());
    config.seed = seed;
    if future {
        config.future = Some(example_future(&names, targets.len()));
    }
    let future_width = config.future_width();
    let tensors = Network::init(&config, &Device::Cpu)?.to_tensors()?;
    let width = config.output_width();
    let kalman = config.kalman_axes.as_ref().map(|axes| KalmanParameters {
        spec: KalmanSpec {
            axes: axes.clone(),
            dt: 1.0,
        },
        params: axes
            .iter()
            .map(|_| AxisParams {
                q: 0.02,
                r_position: 0.05,
                r_velocity: None,
                initial_velocity_var: 1.0,
            })
            .collect(),
        structural: Vec::new(),
    });
    let normalization = InputNormalization {
        mean: (0..features).map(|c| 0.1 * c as f64).collect(),
        std: (0..features).map(|c| 0.5 + 0.25 * c as f64).collect(),
        relative: (0..features).map(|c| c < targets.len()).collect(),
        future_mean: (0..future_width).map(|c| 0.2 * c as f64).collect(),
        future_std: (0..future_width).map(|c| 0.7 + 0.1 * c as f64).collect(),
    };
    let residual_scale = (0..width).map(|k| 0.2 + 0.05 * k as f64).collect();
    let conformal = ConformalCalibration {
        alpha: 0.1,
        n_calibration: 100,
        radii: (0..width).map(|k| 0.4 + 0.1 * k as f64).collect(),
        // Half the examples normalize their scores by the window's volatility over all
        // but its first row, so that every backend's interval reads the right rows.
        quantile_regression: false,
        scale: if future {
            ScoreScale::WindowVolatility {
                rows: lookback - 1,
                floor: vec![0.05; targets.len()],
            }
        } else {
            ScoreScale::Absolute
        },
        // The same examples calibrate by the hour of the predicted step (their future
        // block has the hour), one radius per hour, so that every backend reads the hour.
        by_hour: future.then(|| HourRadii {
            radii: (0..HOURS * width)
                .map(|i| 0.3 + 0.05 * (i / width) as f64 + 0.1 * (i % width) as f64)
                .collect(),
            counts: vec![100; HOURS * width],
        }),
    };
    let manifest = Manifest {
        format: tns_format::FORMAT_TAG.into(),
        format_version: 1,
        ..Manifest::unsaved(
            config,
            normalization,
            residual_scale,
            kalman,
            Some(conformal),
        )
    };
    let future_label = if future_width > 0 {
        format!(" + future [2, {future_width}]")
    } else {
        String::new()
    };
    let mut example = Example {
        label: format!(
            "{} over {network} at [{lookback}, {features}]{future_label}",
            kind.name()
        ),
        manifest,
        tensors,
    };
    if example.manifest.config.gate.is_some() {
        split_gate_decisions(&mut example, seed)?;
    }
    Ok(example)
}

/// Scales a gated model's residual scales (so its corrections, linearly) until the threshold
/// lies between the two middle windows' largest gate statistics (over their horizon steps):
/// about half the windows then pass and half fall back, and both paths are compared.
fn split_gate_decisions(example: &mut Example, seed: u64) -> Result<(), ReferenceError> {
    let reference = CandleReference::new(&example.manifest, &example.tensors)?;
    let windows = random_inputs(reference.pipeline(), 64, seed ^ 0x5eed)?;
    let Some(threshold) = reference.pipeline().gate().map(|g| g.threshold()) else {
        return Ok(());
    };
    let mut d2: Vec<f64> = reference
        .predict(&windows)?
        .iter()
        .map(|f| {
            f.gate_steps
                .iter()
                .flatten()
                .map(|g| g.statistic)
                .fold(0.0, f64::max)
        })
        .collect();
    d2.sort_by(f64::total_cmp);
    // The threshold goes between the two middle windows (geometrically), not on either:
    // a statistic on the threshold would flip with the last bit of rounding. Networks whose
    // outputs vary little between windows (a stacked LSTM at init) leave a narrow gap, so a
    // fixed margin above the median could put every window on one side.
    let middle = (d2[d2.len() / 2 - 1] * d2[d2.len() / 2]).sqrt();
    if middle > 0.0 {
        let k = (threshold / middle).sqrt();
        example
            .manifest
            .residual_scale
            .iter_mut()
            .for_each(|s| *s *= k);
    }
    Ok(())
}

/// `n` random model inputs for `pipeline`: random-walk windows, then (for models with
/// known-future inputs) random covariates and the calendar of hourly origins around the
/// 2021-03-28 change to summer time in Paris; values rounded to f32 so that every backend
/// reads the same numbers.
pub fn random_inputs(pipeline: &Pipeline, n: usize, seed: u64) -> Result<Vec<f64>, InputError> {
    let features = pipeline.past_len() / pipeline.lookback();
    let windows = random_windows(pipeline.lookback(), features, n, seed);
    let columns = pipeline.future_columns().len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf00d);
    // 2021-03-27 20:00 UTC: a day of hourly origins crosses 01:00 UTC on the 28th.
    const FIRST_ORIGIN: f64 = 1_616_875_200.0;
    let mut out = Vec::with_capacity(n * pipeline.input_len());
    for (i, w) in windows.chunks_exact(pipeline.past_len()).enumerate() {
        let covariates: Vec<f64> = (0..pipeline.horizon() * columns)
            .map(|_| f64::from(rng.random_range(-2.0f32..2.0)))
            .collect();
        let origin = FIRST_ORIGIN + 3600.0 * (i % 24) as f64;
        let input = pipeline.assemble(w, Some(&covariates), Some(origin))?;
        out.extend(input.iter().map(|&v| f64::from(v as f32)));
    }
    Ok(out)
}

/// `n` random-walk windows `[lookback, features]` (flat), values rounded to f32 so that
/// every backend reads the same numbers.
pub fn random_windows(lookback: usize, features: usize, n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * lookback * features);
    for _ in 0..n {
        let mut row: Vec<f64> = (0..features).map(|_| rng.random_range(-2.0..2.0)).collect();
        for _ in 0..lookback {
            for v in &mut row {
                *v += 0.3 * rng.random_range(-1.0..1.0);
                out.push(f64::from(*v as f32));
            }
        }
    }
    out
}

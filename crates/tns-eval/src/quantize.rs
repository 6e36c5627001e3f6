//! INT8 quantization with its report: weights quantized per the model description, conformal
//! radii recalibrated on the calibration split with the INT8 engine, and what quantization
//! cost (test MSE, coverage) and saved (bytes).

use serde::Serialize;
use tns_certify::ConformalCalibration;
use tns_data::Splits;
use tns_engine::Engine;
use tns_format::{Manifest, quantize_int8};
use tns_model::{Forecast, NamedTensor};

use crate::{DiffInterval, EvalError, evaluate, paired_bootstrap, window_errors};

/// What INT8 quantization changed, for one model.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Report {
    /// Model kind.
    pub kind: String,
    /// Weight-matrix bytes in f32 (4 per weight).
    pub weight_bytes_f32: usize,
    /// Weight-matrix bytes in INT8 (1 per weight + 2 per f16 row scale).
    pub weight_bytes_int8: usize,
    /// `weight_bytes_f32 / weight_bytes_int8`.
    pub weight_ratio: f64,
    /// Test windows.
    pub test_windows: usize,
    /// Test MSE (data units) of the f32 model and of the INT8 model.
    pub test_mse_f32: f64,
    /// Test MSE of the INT8 model.
    pub test_mse_int8: f64,
    /// Relative change `(int8 − f32) / f32`.
    pub mse_change: f64,
    /// Paired block-bootstrap 95% CI of `MSE_int8 − MSE_f32`.
    pub mse_diff: DiffInterval,
    /// Nominal coverage `1 − α`.
    pub nominal_coverage: Option<f64>,
    /// Test coverage of the f32 model.
    pub coverage_f32: Option<f64>,
    /// Test coverage of the INT8 model with the f32 model's radii (before recalibration).
    pub coverage_int8_f32_radii: Option<f64>,
    /// Test coverage of the INT8 model with its recalibrated radii (what the file holds).
    pub coverage_int8: Option<f64>,
    /// Mean interval width, f32 and INT8 (recalibrated).
    pub mean_width_f32: Option<f64>,
    /// Mean interval width of the INT8 model.
    pub mean_width_int8: Option<f64>,
    /// Gate pass rates (System B).
    pub gate_pass_rate_f32: Option<f64>,
    /// Gate pass rate of the INT8 model.
    pub gate_pass_rate_int8: Option<f64>,
    /// Single-window latency of both engines on this machine.
    pub speed: SpeedComparison,
}

/// Single-window prediction time of the f32 and the INT8 engine, measured on the test windows
/// in alternating blocks (so that drift hits both): whether INT8 pays in time on this CPU, or
/// only in memory.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedComparison {
    /// The instruction set both engines ran on.
    pub isa: String,
    /// Timed calls per engine.
    pub calls: usize,
    /// Median time per call of the f32 engine (µs).
    pub f32_median_us: f64,
    /// Median time per call of the INT8 engine (µs).
    pub int8_median_us: f64,
    /// `f32_median_us / int8_median_us`: above 1, INT8 is faster.
    pub int8_speedup: f64,
}

/// Calls per engine in [`compare_speed`], in blocks of [`SPEED_BLOCK`].
const SPEED_CALLS: usize = 20_000;
const SPEED_BLOCK: usize = 1_000;

/// Times single-window predictions of both engines on `inputs` (model inputs, flat).
fn compare_speed(
    f32_engine: Engine,
    int8_engine: Engine,
    inputs: &[f64],
) -> Result<SpeedComparison, EvalError> {
    use std::hint::black_box;
    use std::time::Instant;
    let per = f32_engine.input_len();
    let windows: Vec<&[f64]> = inputs.chunks_exact(per.max(1)).collect();
    let isa = f32_engine.isa().name().to_string();
    let mut predictors = [
        tns_engine::Predictor::new(std::sync::Arc::new(f32_engine)),
        tns_engine::Predictor::new(std::sync::Arc::new(int8_engine)),
    ];
    let mut times: [Vec<f64>; 2] = [
        Vec::with_capacity(SPEED_CALLS),
        Vec::with_capacity(SPEED_CALLS),
    ];
    if windows.is_empty() {
        return Err(EvalError::Quantize("no test windows to time".into()));
    }
    for round in 0..=SPEED_CALLS / SPEED_BLOCK {
        for (predictor, out) in predictors.iter_mut().zip(times.iter_mut()) {
            for k in 0..SPEED_BLOCK {
                let window = black_box(windows[(round * SPEED_BLOCK + k) % windows.len()]);
                let start = Instant::now();
                black_box(predictor.predict(window)?);
                // The first round warms caches and branch predictors; it is not kept.
                if round > 0 {
                    out.push(start.elapsed().as_nanos() as f64 / 1e3);
                }
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut f32_times, mut int8_times] = times;
    let (f32_median_us, int8_median_us) = (median(&mut f32_times), median(&mut int8_times));
    Ok(SpeedComparison {
        isa,
        calls: f32_times.len(),
        f32_median_us,
        int8_median_us,
        int8_speedup: f32_median_us / int8_median_us,
    })
}

/// Quantizes a model's weights and recalibrates its conformal radii on `splits.cal` with
/// the INT8 engine, so the coverage guarantee holds for the model that will actually run.
/// `block` is the bootstrap block in windows: how many consecutive test windows share rows.
pub fn quantize_with_report(
    manifest: &Manifest,
    tensors: &[NamedTensor],
    splits: &Splits,
    block: usize,
) -> Result<(Manifest, Vec<NamedTensor>, Int8Report), EvalError> {
    if manifest.quantization.is_some() {
        return Err(EvalError::Quantize("the model is already quantized".into()));
    }
    if manifest.config.network.is_none() {
        return Err(EvalError::Quantize(format!(
            "a {} model has no weights to quantize",
            manifest.config.kind.name()
        )));
    }
    let matrices = manifest.config.matrix_weights()?;
    let (quantization, int8_tensors) =
        quantize_int8(tensors, &matrices).map_err(EvalError::Quantize)?;
    let mut int8_manifest = manifest.clone();
    int8_manifest.quantization = Some(quantization);
    let f32_engine = Engine::new(manifest.clone(), tensors)?;
    let uncalibrated = Engine::new(int8_manifest.clone(), &int8_tensors)?;
    if let Some(old) = &manifest.conformal {
        int8_manifest.conformal = Some(uncalibrated.calibrate(
            old.alpha,
            old.scale.normalized_rows(),
            old.by_hour.is_some(),
            &splits.cal.inputs(),
            splits.cal.outputs(),
        )?);
    }
    let int8_engine = Engine::new(int8_manifest.clone(), &int8_tensors)?;

    let test = &splits.test;
    let horizon = manifest.config.horizon;
    let f32_forecasts = crate::forecasts(&f32_engine, test)?;
    let int8_forecasts = crate::forecasts(&int8_engine, test)?;
    let eval = |forecasts: &[Forecast], cal: Option<&ConformalCalibration>| {
        evaluate("", 0, forecasts, test.outputs(), horizon, cal)
    };
    let f32_eval = eval(&f32_forecasts, manifest.conformal.as_ref());
    // The INT8 model with the f32 model's radii: what skipping recalibration would give.
    let stale = eval(&int8_forecasts, manifest.conformal.as_ref());
    let int8_eval = eval(&int8_forecasts, int8_manifest.conformal.as_ref());
    let mse_diff = paired_bootstrap(
        &window_errors(&int8_forecasts, test.outputs()),
        &window_errors(&f32_forecasts, test.outputs()),
        block.max(1),
        2000,
        11,
    );
    let network = |e: &Engine| e.network().map_or(0, |n| n.weight_bytes());
    let (bytes_f32, bytes_int8) = (network(&f32_engine), network(&int8_engine));
    let speed = compare_speed(f32_engine, int8_engine, &test.inputs())?;
    let report = Int8Report {
        kind: manifest.config.kind.name().to_string(),
        weight_bytes_f32: bytes_f32,
        weight_bytes_int8: bytes_int8,
        weight_ratio: bytes_f32 as f64 / bytes_int8.max(1) as f64,
        test_windows: test.len(),
        test_mse_f32: f32_eval.overall.mse,
        test_mse_int8: int8_eval.overall.mse,
        mse_change: (int8_eval.overall.mse - f32_eval.overall.mse) / f32_eval.overall.mse,
        mse_diff,
        nominal_coverage: f32_eval.nominal_coverage,
        coverage_f32: f32_eval.coverage,
        coverage_int8_f32_radii: stale.coverage,
        coverage_int8: int8_eval.coverage,
        mean_width_f32: f32_eval.mean_width,
        mean_width_int8: int8_eval.mean_width,
        gate_pass_rate_f32: f32_eval.gate_pass_rate,
        gate_pass_rate_int8: int8_eval.gate_pass_rate,
        speed,
    };
    Ok((int8_manifest, int8_tensors, report))
}

/// A short human-readable account of a report, saying plainly when INT8 is slower.
pub fn summary(r: &Int8Report) -> String {
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
    let s = &r.speed;
    let speed = if s.int8_speedup >= 1.0 {
        format!(
            "INT8 is {:.2}× faster than f32 per window ({:.2} µs against {:.2} µs, median of {} calls on {})",
            s.int8_speedup, s.int8_median_us, s.f32_median_us, s.calls, s.isa
        )
    } else {
        format!(
            "INT8 is {:.2}× SLOWER than f32 per window ({:.2} µs against {:.2} µs, median of {} calls on {}): for this model it saves memory, not time; keep the f32 file where latency matters",
            1.0 / s.int8_speedup,
            s.int8_median_us,
            s.f32_median_us,
            s.calls,
            s.isa
        )
    };
    format!(
        "{}: weights {} → {} bytes ({:.2}× smaller); test MSE {:.4e} → {:.4e} ({:+.2}%, 95% CI of the difference [{:.2e}, {:.2e}]); coverage {} (f32) → {} with the f32 radii → {} recalibrated (nominal {}); {speed}",
        r.kind,
        r.weight_bytes_f32,
        r.weight_bytes_int8,
        r.weight_ratio,
        r.test_mse_f32,
        r.test_mse_int8,
        100.0 * r.mse_change,
        r.mse_diff.low,
        r.mse_diff.high,
        pct(r.coverage_f32),
        pct(r.coverage_int8_f32_radii),
        pct(r.coverage_int8),
        pct(r.nominal_coverage),
    )
}

use tns_certify::{Gate, linalg};
use tns_data::{Splits, WindowSet};
use tns_format::Manifest;
use tns_kalman::{KalmanSpec, fit_params};
use tns_model::{Base, InputNormalization, KalmanParameters, ModelConfig, Pipeline};

use crate::TrainError;

/// Network-ready arrays of one split.
#[derive(Debug, Clone)]
pub struct NetData {
    /// Normalized model inputs `[n, L·F + future]`.
    pub inputs: Vec<f32>,
    /// Normalized residual targets `(y − base) / scale`, `[n, H·T]`.
    pub targets: Vec<f32>,
    /// Number of windows.
    pub n: usize,
    /// What the gate-aware penalty needs (System B only).
    pub gate: Option<GateData>,
}

/// Per-window whitening of the network output for the gate-aware penalty: with the prior's
/// predictive covariance `S_h = L_h L_hᵀ` of horizon step `h` and the residual scales `s_h`,
/// `W_h = L_h⁻¹ diag(s_h)`, so the gate statistic of a unit-scale output `n_h` is
/// `d²_h = ‖W_h n_h‖²`, exactly what `Gate::statistic` computes on `s_h ⊙ n_h`.
#[derive(Debug, Clone)]
pub struct GateData {
    /// `[n, H, T, T]`, row-major.
    pub whitening: Vec<f32>,
    /// Horizon steps `H`.
    pub horizon: usize,
    /// Targets `T` (the gate's degrees of freedom).
    pub targets: usize,
    /// The gate's `χ²_T(1 − α)` threshold.
    pub threshold: f64,
}

/// Everything fitted on the training split before any weight is trained.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The manifest so far (no checksum, conformal radii or training summary yet).
    pub manifest: Manifest,
    /// Its pipeline.
    pub pipeline: Pipeline,
    /// Training arrays (empty for kinds without a network).
    pub train: NetData,
    /// Validation arrays.
    pub val: NetData,
}

/// Fits the Kalman parameters (maximum likelihood on the training rows), the input
/// normalization and the residual scales, all on the training split only.
pub fn prepare(config: &ModelConfig, dt: f64, splits: &Splits) -> Result<Prepared, TrainError> {
    config.validate()?;
    let f = config.features.len();
    let tr = &splits.train;
    if tr.features() != f
        || tr.lookback() != config.lookback
        || tr.horizon() != config.horizon
        || tr.targets() != config.targets.len()
        || tr.future_width() != config.future_width()
    {
        return Err(TrainError::Config(format!(
            "windows are [{}, {}] + future [{}, {}] → [{}, {}] but the config says [{}, {f}] + future [{}, {}] → [{}, {}]",
            tr.lookback(),
            tr.features(),
            tr.horizon(),
            tr.future_width(),
            tr.horizon(),
            tr.targets(),
            config.lookback,
            config.horizon,
            config.future_width(),
            config.horizon,
            config.targets.len()
        )));
    }
    let targets = config.target_indices()?;
    let kalman = match (&config.kalman_axes, config.kind.base()) {
        (_, Base::KalmanPrior) if config.structural.is_some() => Some(KalmanParameters {
            spec: KalmanSpec {
                axes: Vec::new(),
                dt: 1.0,
            },
            params: Vec::new(),
            structural: fit_structural_priors(config, splits, &targets)?,
        }),
        (Some(axes), Base::KalmanPrior) => {
            // Kinematic axes use the data's time unit; pure trends count in steps.
            let step = if axes.iter().any(|a| a.velocity.is_some()) {
                dt
            } else {
                1.0
            };
            let spec = KalmanSpec {
                axes: axes.clone(),
                dt: step,
            };
            let rows: Vec<&[f64]> = splits
                .train_rows
                .iter()
                .map(|s| s.values.as_slice())
                .collect();
            let params = fit_params(&spec, &rows, f);
            Some(KalmanParameters {
                spec,
                params,
                structural: Vec::new(),
            })
        }
        _ => None,
    };
    let relative: Vec<bool> = (0..f)
        .map(|c| match &config.kalman_axes {
            _ if config.absolute_inputs => false,
            Some(axes) => axes.iter().any(|a| a.position == c),
            None => targets.contains(&c),
        })
        .collect();
    let mut std = splits.normalization.std.clone();
    for (c, s) in std.iter_mut().enumerate() {
        if relative[c] {
            *s = relative_scale(tr, c);
        }
    }
    let (future_mean, future_std) = future_moments(tr);
    let mut manifest = Manifest::unsaved(
        config.clone(),
        InputNormalization {
            mean: splits.normalization.mean.clone(),
            std,
            relative,
            future_mean,
            future_std,
        },
        vec![1.0; config.output_width()],
        kalman,
        None,
    );
    // The base forecast does not depend on the residual scale, so the training bases are
    // computed once (the Kalman filter runs once per window) and reused below.
    let unit = manifest.pipeline()?;
    let bases = |set: &WindowSet| -> Vec<Vec<f64>> {
        (0..set.len()).map(|i| unit.base(&set.input(i)).0).collect()
    };
    let train_bases = bases(tr);
    manifest.residual_scale = residual_rms(&train_bases, tr);
    let pipeline = manifest.pipeline()?;
    let (train, val) = if config.network.is_some() {
        (
            net_data(&pipeline, &manifest, tr, &train_bases)?,
            net_data(&pipeline, &manifest, &splits.val, &bases(&splits.val))?,
        )
    } else {
        let empty = NetData {
            inputs: Vec::new(),
            targets: Vec::new(),
            n: 0,
            gate: None,
        };
        (empty.clone(), empty)
    };
    Ok(Prepared {
        manifest,
        pipeline,
        train,
        val,
    })
}

/// Root-mean-square of `x_t − x_last` over the training windows: the scale of a column
/// taken relative to the window's last row.
fn relative_scale(set: &WindowSet, c: usize) -> f64 {
    let (l, f) = (set.lookback(), set.features());
    let (mut sum, mut n) = (0.0, 0usize);
    for i in 0..set.len() {
        let w = set.input(i);
        let last = w[(l - 1) * f + c];
        for t in 0..l - 1 {
            sum += (w[t * f + c] - last).powi(2);
            n += 1;
        }
    }
    let rms = (sum / n.max(1) as f64).sqrt();
    if rms > 0.0 && rms.is_finite() {
        rms
    } else {
        1.0
    }
}

/// Training rows a structural model is fitted on: the most recent ones, enough for the
/// variances of a few seasonal components while keeping the likelihood search to seconds.
const STRUCTURAL_FIT_ROWS: usize = 4_000;

/// Maximum-likelihood variances of each target's structural model on the most recent
/// training rows (gap-free stretches; the likelihood sums over them).
fn fit_structural_priors(
    config: &ModelConfig,
    splits: &Splits,
    targets: &[usize],
) -> Result<Vec<tns_kalman::StructuralParams>, TrainError> {
    let Some(spec) = &config.structural else {
        return Ok(Vec::new());
    };
    let f = config.features.len();
    let regressors = config
        .structural_regressors()
        .map_err(|e| TrainError::Config(e.to_string()))?
        .past;
    let k = regressors.len();
    targets
        .iter()
        .map(|&column| {
            let mut budget = STRUCTURAL_FIT_ROWS;
            let (mut segments, mut exog): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (Vec::new(), Vec::new());
            for seg in splits.train_rows.iter().rev() {
                if budget == 0 {
                    break;
                }
                let rows = seg.values.len() / f;
                let keep = rows.min(budget);
                budget -= keep;
                let recent = &seg.values[(rows - keep) * f..];
                segments.push(recent.chunks_exact(f).map(|row| row[column]).collect());
                exog.push(
                    recent
                        .chunks_exact(f)
                        .flat_map(|row| regressors.iter().map(|&c| row[c]))
                        .collect(),
                );
            }
            let exog = if k == 0 { Vec::new() } else { exog };
            tns_kalman::fit_structural(spec, &segments, &exog)
                .map_err(|e| TrainError::Config(format!("structural prior: {e}")))
        })
        .collect()
}

/// Mean and standard deviation of each future column over the training windows' future
/// blocks (a constant column gets scale 1).
fn future_moments(set: &WindowSet) -> (Vec<f64>, Vec<f64>) {
    let width = set.future_width();
    let past = set.lookback() * set.features();
    let (mut sum, mut sq, mut n) = (vec![0.0; width], vec![0.0; width], 0usize);
    for i in 0..set.len() {
        for row in set.input(i)[past..].chunks_exact(width.max(1)) {
            for (c, &v) in row.iter().enumerate() {
                sum[c] += v;
                sq[c] += v * v;
            }
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let sd = (q / n - m * m).max(0.0).sqrt();
            if sd > 1e-12 && sd.is_finite() {
                sd
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}

/// Root-mean-square of `y − base` per output: what the network's unit output means.
fn residual_rms(bases: &[Vec<f64>], set: &WindowSet) -> Vec<f64> {
    let width = set.horizon() * set.targets();
    let mut sums = vec![0.0; width];
    for (i, base) in bases.iter().enumerate() {
        for ((s, y), b) in sums.iter_mut().zip(set.output(i)).zip(base) {
            *s += (y - b).powi(2);
        }
    }
    sums.iter()
        .map(|s| {
            let rms = (s / set.len().max(1) as f64).sqrt();
            if rms > 0.0 && rms.is_finite() {
                rms
            } else {
                1.0
            }
        })
        .collect()
}

fn net_data(
    pipeline: &Pipeline,
    manifest: &Manifest,
    set: &WindowSet,
    bases: &[Vec<f64>],
) -> Result<NetData, TrainError> {
    let per = pipeline.network_input_len();
    let width = pipeline.output_len();
    let mut inputs = vec![0f32; set.len() * per];
    let mut targets = Vec::with_capacity(set.len() * width);
    let (h, t) = (set.horizon(), set.targets());
    let mut gate = match manifest.config.gate {
        Some(g) => Some(GateData {
            whitening: Vec::with_capacity(set.len() * h * t * t),
            horizon: h,
            targets: t,
            threshold: Gate::new(g.alpha, t, g.mode)
                .map_err(|e| TrainError::Config(format!("gate: {e}")))?
                .threshold(),
        }),
        None => None,
    };
    let (mut factor, mut inverse) = (vec![0.0; t * t], vec![0.0; t * t]);
    for i in 0..set.len() {
        let w = set.input(i);
        pipeline.check_window(&w)?;
        if let Some(g) = gate.as_mut() {
            let (_, cov) = pipeline.base(&w);
            let cov = cov.ok_or_else(|| {
                TrainError::Config("a gated model needs the Kalman prior's covariance".into())
            })?;
            for step in 0..h {
                linalg::cholesky(&cov[step * t * t..(step + 1) * t * t], t, &mut factor)
                    .map_err(|e| TrainError::Config(format!("window {i}: {e}")))?;
                linalg::invert_lower(&factor, t, &mut inverse);
                let scale = &manifest.residual_scale[step * t..(step + 1) * t];
                for r in 0..t {
                    for c in 0..t {
                        g.whitening.push((inverse[r * t + c] * scale[c]) as f32);
                    }
                }
            }
        }
        pipeline.normalize_into(&w, &mut inputs[i * per..(i + 1) * per]);
        for ((y, b), s) in set
            .output(i)
            .iter()
            .zip(&bases[i])
            .zip(&manifest.residual_scale)
        {
            targets.push(((y - b) / s) as f32);
        }
    }
    Ok(NetData {
        inputs,
        targets,
        n: set.len(),
        gate,
    })
}

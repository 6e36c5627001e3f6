use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use tns_certify::{GateConfig, GateEvidence, GateMode, ModeErrors};
use tns_data::{Splits, WindowSet};
use tns_engine::Engine;
use tns_format::{Manifest, TrainingSummary, save_model, tensor_checksum};
use tns_model::{ModelConfig, NamedTensor};
use tns_models::Network;

use crate::{EpochMetrics, TrainConfig, TrainError, TrainMonitor, Trainer, prepare};

/// How to fit a model.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Optimization settings.
    pub train: TrainConfig,
    /// Miscoverage level of the conformal interval.
    pub conformal_alpha: f64,
    /// Normalize the conformal scores by each window's volatility over its last this many
    /// rows (capped at the lookback); `None`: absolute scores (one width per step).
    pub normalized_interval_rows: Option<usize>,
    /// Calibrate the interval per hour of day of the predicted step as well (Mondrian; the
    /// model needs the `hour` calendar feature).
    pub interval_by_hour: bool,
    /// Where the network trains.
    pub device: Device,
    /// Directory for `<name>.ckpt` and `<name>.metrics.{csv,json}`, if any.
    pub run_dir: Option<PathBuf>,
    /// Continue from `<run_dir>/<name>.ckpt` if it exists.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// End after this many epochs of this run, as if interrupted (resume later).
    pub stop_after: Option<usize>,
    /// Choose a gated model's mode (reject, shrink, keep) by its error on the calibration
    /// split, and record the evidence; otherwise keep the configured mode.
    pub choose_gate: bool,
    /// Told of every step and epoch; may stop the run.
    pub monitor: Option<Arc<dyn TrainMonitor>>,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            conformal_alpha: 0.1,
            normalized_interval_rows: None,
            interval_by_hour: false,
            device: Device::Cpu,
            run_dir: None,
            resume: false,
            progress: false,
            stop_after: None,
            choose_gate: true,
            monitor: None,
        }
    }
}

/// A fitted model: manifest, weights and the training history.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// The manifest, complete but for the format tag (set on save).
    pub manifest: Manifest,
    /// The best epoch's weights (empty for kinds without a network).
    pub tensors: Vec<NamedTensor>,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetrics>,
}

impl TrainedModel {
    /// Writes the model file atomically and returns the manifest as written.
    pub fn save(&self, path: &Path) -> Result<Manifest, TrainError> {
        Ok(save_model(path, &self.manifest, &self.tensors)?)
    }

    /// The model compiled for the inference engine.
    pub fn engine(&self) -> Result<Engine, TrainError> {
        Ok(Engine::new(self.manifest.clone(), &self.tensors)?)
    }
}

/// Prepares, trains (for learned kinds) and calibrates one model on `splits`.
pub fn fit_model(
    config: &ModelConfig,
    dt: f64,
    splits: &Splits,
    options: &FitOptions,
) -> Result<TrainedModel, TrainError> {
    let start = Instant::now();
    let prepared = prepare(config, dt, splits)?;
    let mut model = TrainedModel {
        manifest: prepared.manifest,
        tensors: Vec::new(),
        history: Vec::new(),
    };
    if config.network.is_some() {
        let network = Network::init(config, &options.device)?;
        let file = |ext: &str| {
            options
                .run_dir
                .as_ref()
                .map(|d| d.join(format!("{}.{ext}", config.name)))
        };
        let trainer = Trainer {
            config: &options.train,
            seed: config.seed,
            device: &options.device,
            checkpoint: file("ckpt"),
            metrics: options.run_dir.as_ref().map(|d| d.join(&config.name)),
            stop_after: options.stop_after,
            progress: options.progress,
            label: config.name.clone(),
            monitor: options.monitor.as_deref(),
        };
        let outcome = trainer.run(&network, &prepared.train, &prepared.val, options.resume)?;
        model.manifest.training = Some(TrainingSummary {
            epochs_run: outcome.history.len(),
            best_epoch: outcome.best_epoch,
            best_val_loss: outcome.best_val_loss,
            train_windows: prepared.train.n,
            val_windows: prepared.val.n,
            seconds: start.elapsed().as_secs_f64(),
            optimizer: format!(
                "adamw lr={} wd={} batch={} accumulate={} warmup={} {} clip={} patience={} gate_penalty={} loss={}",
                options.train.lr,
                options.train.weight_decay,
                options.train.batch_size,
                options.train.accumulate,
                options.train.warmup_fraction,
                options.train.schedule.name(),
                options.train.clip_norm,
                options.train.patience,
                options.train.gate_penalty,
                options.train.loss.name()
            ),
        });
        model.tensors = outcome.best_tensors;
        model.history = outcome.history;
    }
    model.manifest.tensors_sha256 = tensor_checksum(&model.tensors);
    if options.choose_gate {
        choose_gate_mode(&mut model, &splits.cal)?;
    }
    // Calibrated on the engine (with the gate's final mode): the radii cover the forecasts of the code that serves them.
    model.manifest.conformal = Some(model.engine()?.calibrate(
        options.conformal_alpha,
        options.normalized_interval_rows,
        options.interval_by_hour,
        &splits.cal.inputs(),
        splits.cal.outputs(),
    )?);
    Ok(model)
}

/// Runs a gated model on the calibration windows under every gate mode and keeps the one
/// the evidence supports ([`GateEvidence::choice`]), recording what each mode did overall and
/// on the steps whose correction failed the test, and the prior's own error. The statistic, the threshold and the
/// test itself do not change; only what a failed step returns does.
fn choose_gate_mode(model: &mut TrainedModel, cal: &WindowSet) -> Result<(), TrainError> {
    let Some(gate) = model.manifest.config.gate else {
        return Ok(());
    };
    // Assembled once: every mode predicts the same windows.
    let inputs = cal.inputs();
    let runs = GateMode::ALL
        .into_iter()
        .map(|mode| {
            let mut manifest = model.manifest.clone();
            manifest.config.gate = Some(GateConfig {
                mode,
                evidence: None,
                ..gate
            });
            Ok(Engine::new(manifest, &model.tensors)?.predict_all(&inputs)?)
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    let scale = &model.manifest.residual_scale;
    let (t, width) = (cal.targets(), cal.horizon() * cal.targets());
    let (mut all, mut failed, mut prior) = ([0.0; 3], [0.0; 3], 0.0);
    let (mut values, mut failed_values, mut failed_steps) = (0usize, 0usize, 0usize);
    for (i, truth) in cal.outputs().chunks_exact(width).enumerate() {
        // The statistic does not depend on the mode: read the decisions off any run.
        let steps = runs[0][i]
            .forecast
            .gate_steps
            .as_deref()
            .unwrap_or_default();
        for (h, step) in steps.iter().enumerate() {
            failed_steps += usize::from(!step.passed);
            for k in h * t..(h + 1) * t {
                prior += (runs[0][i].forecast.base[k] - truth[k]).abs() / scale[k];
                for (m, run) in runs.iter().enumerate() {
                    let e = (run[i].values()[k] - truth[k]).abs() / scale[k];
                    all[m] += e;
                    if !step.passed {
                        failed[m] += e;
                    }
                }
                values += 1;
                failed_values += usize::from(!step.passed);
            }
        }
    }
    let errors = |sums: [f64; 3], n: usize| ModeErrors {
        reject: sums[0] / n as f64,
        shrink: sums[1] / n as f64,
        keep: sums[2] / n as f64,
    };
    let evidence = GateEvidence {
        windows: cal.len(),
        steps: cal.len() * cal.horizon(),
        failed_steps,
        error: errors(all, values.max(1)),
        failed_error: (failed_values > 0).then(|| errors(failed, failed_values)),
        prior_error: prior / values.max(1) as f64,
    };
    model.manifest.config.gate = Some(GateConfig {
        mode: evidence.choice(),
        evidence: Some(evidence),
        ..gate
    });
    Ok(())
}

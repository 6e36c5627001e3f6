use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use tns_certify::ConformalCalibration;
use tns_data::Splits;
use tns_engine::Engine;
use tns_format::{Manifest, TrainingSummary, save_model, tensor_checksum};
use tns_model::{ModelConfig, NamedTensor};
use tns_models::Network;

use crate::{EpochMetrics, TrainConfig, TrainError, Trainer, prepare};

/// How to fit a model.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Optimization settings.
    pub train: TrainConfig,
    /// Miscoverage level of the conformal interval.
    pub conformal_alpha: f64,
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
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            conformal_alpha: 0.1,
            device: Device::Cpu,
            run_dir: None,
            resume: false,
            progress: false,
            stop_after: None,
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
                "adamw lr={} wd={} batch={} warmup={} cosine clip={} patience={} gate_penalty={}",
                options.train.lr,
                options.train.weight_decay,
                options.train.batch_size,
                options.train.warmup_fraction,
                options.train.clip_norm,
                options.train.patience,
                options.train.gate_penalty
            ),
        });
        model.tensors = outcome.best_tensors;
        model.history = outcome.history;
    }
    model.manifest.tensors_sha256 = tensor_checksum(&model.tensors);
    // Calibrated on the engine: the radii cover the forecasts of the code that serves them.
    let predictions: Vec<f64> = model
        .engine()?
        .predict_all(splits.cal.inputs())?
        .iter()
        .flat_map(|p| p.values().iter().copied())
        .collect();
    model.manifest.conformal = Some(ConformalCalibration::fit(
        options.conformal_alpha,
        &predictions,
        splits.cal.outputs(),
        config.output_width(),
    )?);
    Ok(model)
}

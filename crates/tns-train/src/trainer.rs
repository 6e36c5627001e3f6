use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use tns_model::{NamedTensor, head_index};
use tns_models::{Network, gate_penalty, pinball, pinball_loss};

use crate::prepare::NetData;
use crate::{AdamW, TrainError};

/// Optimization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Maximum epochs.
    pub epochs: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Share of all steps spent warming the learning rate up linearly.
    pub warmup_fraction: f64,
    /// Final learning rate of the cosine decay, as a share of `lr`.
    pub min_lr_fraction: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it.
    pub clip_norm: f64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Weight of the gate-aware penalty `mean(max(0, d² − χ²))` added to the loss of gated
    /// models (System B): it pushes corrections back inside the prior's ellipsoid, where the
    /// gate accepts them. 0 trains on the MSE alone.
    #[serde(default)]
    pub gate_penalty: f64,
    /// How the learning rate moves over the run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Batches whose gradients are summed before one optimizer step (1: none). The
    /// effective batch is `batch_size × accumulate` at the memory of `batch_size`.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// What training minimizes and early stopping compares, on normalized targets.
    #[serde(default)]
    pub loss: Loss,
}

/// The training loss, on normalized targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Mean squared error: the conditional mean.
    #[default]
    Mse,
    /// Mean absolute error: the conditional median, less pulled by spikes (NeuralForecast's
    /// default; the metric real-data benchmarks report).
    Mae,
}

impl Loss {
    /// Every loss, in the order `--loss` lists them.
    pub const ALL: [Self; 2] = [Self::Mse, Self::Mae];

    /// The name `--loss` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::Mae => "mae",
        }
    }

    /// The loss of one error.
    fn of(self, error: f64) -> f64 {
        match self {
            Self::Mse => error * error,
            Self::Mae => error.abs(),
        }
    }
}

impl std::str::FromStr for Loss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named(&Self::ALL, Self::name, "loss", s)
    }
}

fn one() -> usize {
    1
}

/// The option of `all` whose `name` is `s`, or an error listing the names.
fn parse_named<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    s: &str,
) -> Result<T, String> {
    all.iter().copied().find(|&k| name(k) == s).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|&k| name(k)).collect();
        format!("unknown {what} {s:?}: use one of {}", names.join(", "))
    })
}

impl Schedule {
    /// Every schedule, in the order `--schedule` lists them.
    pub const ALL: [Self; 3] = [Self::Cosine, Self::Linear, Self::OneCycle];

    /// The name `--schedule` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Linear => "linear",
            Self::OneCycle => "one-cycle",
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named(&Self::ALL, Self::name, "schedule", s)
    }
}

/// The learning-rate schedule, over optimizer steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warm-up over `warmup_fraction` of the steps, then a cosine decay to
    /// `lr × min_lr_fraction`.
    #[default]
    Cosine,
    /// The same warm-up, then a linear decay to `lr × min_lr_fraction`.
    Linear,
    /// One cycle (Smith & Topin): from `lr / 25` up to `lr` over the first 30% of the steps,
    /// then a cosine decay to `lr × min_lr_fraction / 25`.
    OneCycle,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch_size: 128,
            lr: 3e-3,
            weight_decay: 1e-4,
            warmup_fraction: 0.05,
            min_lr_fraction: 0.05,
            clip_norm: 1.0,
            patience: 8,
            gate_penalty: 0.0,
            schedule: Schedule::Cosine,
            accumulate: 1,
            loss: Loss::Mse,
        }
    }
}

/// One row of the metrics log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps (normalized, [`TrainConfig::loss`]).
    pub train_loss: f64,
    /// Validation loss after the epoch (normalized, [`TrainConfig::loss`]).
    pub val_loss: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then cosine decay to
/// `min_lr_fraction · lr`.
///
/// ```
/// let cfg = tns_train::TrainConfig { lr: 1.0, warmup_fraction: 0.1, min_lr_fraction: 0.0, ..Default::default() };
/// assert!((tns_train::learning_rate(&cfg, 0, 100) - 0.1).abs() < 1e-12);
/// assert!((tns_train::learning_rate(&cfg, 9, 100) - 1.0).abs() < 1e-12);
/// assert!(tns_train::learning_rate(&cfg, 99, 100) < 0.001);
/// // Linear decay: halfway down at the middle of the steps after warm-up.
/// let linear = tns_train::TrainConfig { schedule: tns_train::Schedule::Linear, ..cfg.clone() };
/// assert!((tns_train::learning_rate(&linear, 61, 111) - 0.5).abs() < 1e-12);
/// // One cycle: lr/25 at the start, the peak at 30% of the steps, far below lr/25 at the end.
/// let cycle = tns_train::TrainConfig { schedule: tns_train::Schedule::OneCycle, min_lr_fraction: 0.01, ..cfg };
/// assert!((tns_train::learning_rate(&cycle, 0, 100) - 0.04).abs() < 1e-12);
/// assert!((tns_train::learning_rate(&cycle, 30, 100) - 1.0).abs() < 1e-12);
/// assert!(tns_train::learning_rate(&cycle, 100, 100) < 0.001);
/// assert_eq!("one-cycle".parse::<tns_train::Schedule>(), Ok(tns_train::Schedule::OneCycle));
/// ```
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let cosine = |from: f64, to: f64, progress: f64| {
        to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos())
    };
    let floor = cfg.lr * cfg.min_lr_fraction;
    if cfg.schedule == Schedule::OneCycle {
        let start = cfg.lr / 25.0;
        let peak = ((total as f64 * 0.3).round() as usize).max(1);
        if step < peak {
            return start + (cfg.lr - start) * step as f64 / peak as f64;
        }
        let progress = (step - peak) as f64 / (total - peak).max(1) as f64;
        return cosine(cfg.lr, floor / 25.0, progress);
    }
    let warmup = ((total as f64 * cfg.warmup_fraction).round() as usize).max(1);
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let progress = ((step - warmup) as f64 / (total - warmup).max(1) as f64).min(1.0);
    match cfg.schedule {
        Schedule::Linear => cfg.lr + (floor - cfg.lr) * progress,
        _ => cosine(cfg.lr, floor, progress),
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Per-epoch metrics.
    pub history: Vec<EpochMetrics>,
    /// Epoch (1-based) with the best validation loss.
    pub best_epoch: usize,
    /// Its validation loss.
    pub best_val_loss: f64,
    /// Weights of the best epoch.
    pub best_tensors: Vec<NamedTensor>,
}

/// Runs the optimization of one network.
pub struct Trainer<'a> {
    /// Settings.
    pub config: &'a TrainConfig,
    /// Seed for the per-epoch shuffles.
    pub seed: u64,
    /// Device of the network.
    pub device: &'a Device,
    /// Checkpoint written (atomically) after every epoch, if set.
    pub checkpoint: Option<PathBuf>,
    /// Metrics log: `<stem>.metrics.csv` and `<stem>.metrics.json`, rewritten after every
    /// epoch, if set.
    pub metrics: Option<PathBuf>,
    /// End this run after this many epochs, as if interrupted (the checkpoint lets a later
    /// run resume). For time-boxed sessions.
    pub stop_after: Option<usize>,
    /// Show a progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Label shown on the progress bar.
    pub label: String,
    /// Told of every optimizer step and epoch; may stop the run between steps.
    pub monitor: Option<&'a dyn TrainMonitor>,
}

/// Watches a training run from the thread that runs it: told of every optimizer step and
/// every epoch, and able to stop the run between two steps (Python's progress callback and
/// its keyboard interrupt).
pub trait TrainMonitor: Send + Sync {
    /// After optimizer step `step` (from 1) of at most `total` (early stopping may end the run
    /// sooner); an error stops the run with [`TrainError::Stopped`] carrying its message.
    fn step(&self, step: u64, total: u64) -> Result<(), String>;
    /// After each epoch, with its metrics, of at most `epochs`.
    fn epoch(&self, metrics: &EpochMetrics, epochs: usize);
}

impl std::fmt::Debug for dyn TrainMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrainMonitor")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    epochs_done: usize,
    step: u64,
    best_epoch: usize,
    best_val_loss: f64,
    bad_epochs: usize,
    history: Vec<EpochMetrics>,
    config: TrainConfig,
    seed: u64,
}

impl Trainer<'_> {
    /// Trains `network` on `train`, early-stopping on `val`. With `resume`, continues from
    /// the checkpoint if one exists (weights, optimizer moments, epoch, best weights).
    pub fn run(
        &self,
        network: &Network,
        train: &NetData,
        val: &NetData,
        resume: bool,
    ) -> Result<TrainOutcome, TrainError> {
        let cfg = self.config;
        if train.n == 0
            || val.n == 0
            || cfg.batch_size == 0
            || cfg.epochs == 0
            || cfg.accumulate == 0
        {
            return Err(TrainError::Config(
                "training needs windows, and a batch size, epochs and accumulation ≥ 1".into(),
            ));
        }
        let vars: Vec<_> = network
            .named_vars()
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        let mut opt = AdamW::new(vars.clone(), cfg.lr, cfg.weight_decay)?;
        let batches_per_epoch = train.n.div_ceil(cfg.batch_size);
        // Optimizer steps: one per `accumulate` batches, and one for an epoch's last batches.
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.accumulate);
        let total_steps = steps_per_epoch * cfg.epochs;
        let mut state = CheckpointState {
            epochs_done: 0,
            step: 0,
            best_epoch: 0,
            best_val_loss: f64::INFINITY,
            bad_epochs: 0,
            history: Vec::new(),
            config: cfg.clone(),
            seed: self.seed,
        };
        let mut best = network.to_tensors()?;
        if resume && let Some(path) = self.checkpoint.as_ref().filter(|p| p.exists()) {
            (state, best) = load_checkpoint(path, network, &mut opt, cfg, self.seed, self.device)?;
        }
        // On a terminal, a progress bar; piped to a file or a CI log, where a bar would print
        // nothing, one line per epoch.
        let terminal = std::io::stderr().is_terminal();
        let log_lines = self.progress && !terminal;
        let bar = if self.progress && terminal {
            ProgressBar::new(total_steps as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(self.label.clone());
        bar.set_position((state.epochs_done * steps_per_epoch) as u64);
        let mut order: Vec<usize> = (0..train.n).collect();
        let (mut xb, mut yb, mut wb) = (Vec::new(), Vec::new(), Vec::new());
        let penalized = train.gate.as_ref().filter(|_| cfg.gate_penalty > 0.0);
        let first_epoch = state.epochs_done + 1;
        for epoch in first_epoch..=cfg.epochs {
            let interrupted = self.stop_after.is_some_and(|n| epoch >= first_epoch + n);
            if state.bad_epochs >= cfg.patience || interrupted {
                break;
            }
            let start = Instant::now();
            order.sort_unstable();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            let (mut loss_sum, mut norm_sum, mut lr) = (0.0, 0.0, cfg.lr);
            // Gradients summed over the batches of the current optimizer step.
            let mut summed: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut pending = 0usize;
            for (index, batch) in order.chunks(cfg.batch_size).enumerate() {
                let (x, y) = batch_tensors(train, batch, self.device, &mut xb, &mut yb)?;
                if let Some(g) = penalized {
                    let m = g.horizon * g.targets * g.targets;
                    wb.clear();
                    for &i in batch {
                        wb.extend_from_slice(&g.whitening[i * m..(i + 1) * m]);
                    }
                }
                let heads = network.heads(&network.forward(&x)?)?;
                let out = heads.point;
                let error = (&out - &y)?;
                let mut loss = match cfg.loss {
                    Loss::Mse => error.sqr()?.mean_all()?,
                    Loss::Mae => error.abs()?.mean_all()?,
                };
                // Quantile heads learn their levels by the pinball loss, beside the point.
                for (q, tau) in heads.quantiles.iter().flatten() {
                    loss = (loss + pinball_loss(q, &y, *tau)?)?;
                }
                if let Some(g) = penalized {
                    let w = Tensor::from_slice(
                        &wb,
                        (batch.len(), g.horizon, g.targets, g.targets),
                        self.device,
                    )?;
                    let penalty = gate_penalty(&out, &w, g.threshold)?;
                    loss = (loss + penalty.affine(cfg.gate_penalty, 0.0)?)?;
                }
                let loss_value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                if !loss_value.is_finite() {
                    return Err(TrainError::Diverged { epoch });
                }
                let grads = loss.backward()?;
                for (sum, v) in summed.iter_mut().zip(&vars) {
                    if let Some(g) = grads.get(v) {
                        *sum = Some(match sum.take() {
                            None => g.clone(),
                            Some(s) => (s + g)?,
                        });
                    }
                }
                pending += 1;
                loss_sum += loss_value;
                if pending < cfg.accumulate && index + 1 < batches_per_epoch {
                    continue;
                }
                // The mean of the batches' gradients: the gradient of the mean loss.
                let grads = summed
                    .iter_mut()
                    .map(|g| match g.take() {
                        Some(g) if pending > 1 => Ok(Some((g / pending as f64)?)),
                        g => Ok(g),
                    })
                    .collect::<Result<Vec<_>, TrainError>>()?;
                pending = 0;
                let (scale, norm) = clip_scale(&grads, cfg.clip_norm)?;
                lr = learning_rate(cfg, state.step as usize, total_steps);
                opt.lr = lr;
                opt.step(&grads, scale)?;
                state.step += 1;
                norm_sum += norm;
                bar.inc(1);
                if let Some(monitor) = self.monitor {
                    monitor
                        .step(state.step, total_steps as u64)
                        .map_err(TrainError::Stopped)?;
                }
            }
            let val_loss = evaluate(network, val, self.device, cfg.loss)?;
            let metrics = EpochMetrics {
                epoch,
                train_loss: loss_sum / batches_per_epoch as f64,
                val_loss,
                lr,
                grad_norm: norm_sum / steps_per_epoch as f64,
                seconds: start.elapsed().as_secs_f64(),
            };
            bar.set_message(format!(
                "epoch {epoch} train {:.4} val {:.4}",
                metrics.train_loss, val_loss
            ));
            if log_lines {
                let done = state.history.len() + 1;
                let mean = (state.history.iter().map(|m| m.seconds).sum::<f64>() + metrics.seconds)
                    / done as f64;
                eprintln!(
                    "{} epoch {epoch}/{}: train {:.5} val {:.5} ({:.1} s, at most {:.0} s left)",
                    self.label,
                    cfg.epochs,
                    metrics.train_loss,
                    val_loss,
                    metrics.seconds,
                    mean * (cfg.epochs - epoch) as f64
                );
            }
            if val_loss < state.best_val_loss {
                state.best_val_loss = val_loss;
                state.best_epoch = epoch;
                state.bad_epochs = 0;
                best = network.to_tensors()?;
            } else {
                state.bad_epochs += 1;
            }
            if let Some(monitor) = self.monitor {
                monitor.epoch(&metrics, cfg.epochs);
            }
            state.history.push(metrics);
            state.epochs_done = epoch;
            if let Some(path) = &self.checkpoint {
                save_checkpoint(path, network, &opt, &best, &state)?;
            }
            if let Some(path) = &self.metrics {
                write_metrics(path, &state.history)?;
            }
        }
        bar.finish_and_clear();
        Ok(TrainOutcome {
            history: state.history,
            best_epoch: state.best_epoch,
            best_val_loss: state.best_val_loss,
            best_tensors: best,
        })
    }
}

/// The inputs `[batch, per]` and targets `[batch, width]` of the windows `batch` of `data`,
/// gathered through the reusable buffers `xb` and `yb`.
pub(crate) fn batch_tensors(
    data: &NetData,
    batch: &[usize],
    device: &Device,
    xb: &mut Vec<f32>,
    yb: &mut Vec<f32>,
) -> Result<(Tensor, Tensor), TrainError> {
    let per = data.inputs.len() / data.n.max(1);
    let width = data.targets.len() / data.n.max(1);
    xb.clear();
    yb.clear();
    for &i in batch {
        xb.extend_from_slice(&data.inputs[i * per..(i + 1) * per]);
        yb.extend_from_slice(&data.targets[i * width..(i + 1) * width]);
    }
    Ok((
        Tensor::from_slice(xb, (batch.len(), per), device)?,
        Tensor::from_slice(yb, (batch.len(), width), device)?,
    ))
}

/// The factor that scales the gradients down to a global norm of `clip_norm` (1 when they
/// are within it), and their norm.
pub(crate) fn clip_scale(
    grads: &[Option<Tensor>],
    clip_norm: f64,
) -> Result<(f64, f64), TrainError> {
    let mut sq = 0.0;
    for g in grads.iter().flatten() {
        sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = sq.sqrt();
    Ok((
        if norm > clip_norm {
            clip_norm / norm
        } else {
            1.0
        },
        norm,
    ))
}

/// The mean normalized `loss` over a whole split.
fn evaluate(
    network: &Network,
    data: &NetData,
    device: &Device,
    loss: Loss,
) -> Result<f64, TrainError> {
    let out = network.forward_flat(&data.inputs, data.n, device)?;
    let width = data.targets.len() / data.n.max(1);
    let per = out.len() / data.targets.len().max(1);
    let (targets, levels) = match network.quantile_levels() {
        Some((targets, levels)) => (targets, Some(levels)),
        None => (1, None),
    };
    // The training loss's terms, averaged the same way: the point's loss, then each
    // quantile head's pinball loss, each a mean over every output.
    let mut sums = [0.0; 3];
    for (i, &y) in data.targets.iter().enumerate() {
        let y = f64::from(y);
        let (window, k) = (i / width, i % width);
        let head = |h| f64::from(out[window * width * per + head_index(k, targets, per, h)]);
        sums[0] += loss.of(head(0) - y);
        for (h, tau) in levels.iter().flatten().enumerate() {
            sums[h + 1] += pinball(y - head(h + 1), *tau);
        }
    }
    Ok(sums.iter().sum::<f64>() / data.targets.len() as f64)
}

fn write_metrics(stem: &Path, history: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut csv = String::from("epoch,train_loss,val_loss,lr,grad_norm,seconds\n");
    for m in history {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            m.epoch, m.train_loss, m.val_loss, m.lr, m.grad_norm, m.seconds
        ));
    }
    let json = serde_json::to_vec_pretty(history).map_err(|e| TrainError::Config(e.to_string()))?;
    for (ext, bytes) in [("csv", csv.into_bytes()), ("json", json)] {
        let path = PathBuf::from(format!("{}.metrics.{ext}", stem.display()));
        tns_data::write_atomic(&path, &bytes).map_err(|source| TrainError::Io { path, source })?;
    }
    Ok(())
}

const STATE_KEY: &str = "tns.checkpoint";

fn save_checkpoint(
    path: &Path,
    network: &Network,
    opt: &AdamW,
    best: &[NamedTensor],
    state: &CheckpointState,
) -> Result<(), TrainError> {
    let err = |detail: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        detail,
    };
    let mut entries: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let (m, v) = opt.moments();
    for (i, (name, var)) in network.named_vars().iter().enumerate() {
        for (prefix, t) in [("param", var.as_tensor()), ("m", &m[i]), ("v", &v[i])] {
            entries.push((
                format!("{prefix}/{name}"),
                t.dims().to_vec(),
                t.flatten_all()?.to_vec1::<f32>()?,
            ));
        }
    }
    for t in best {
        entries.push((format!("best/{}", t.name), t.shape.clone(), t.data.clone()));
    }
    let bytes: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let json = serde_json::to_string(state).map_err(|e| err(e.to_string()))?;
    let out = safetensors::serialize(views, Some(HashMap::from([(STATE_KEY.to_string(), json)])))
        .map_err(|e| err(e.to_string()))?;
    tns_data::write_atomic(path, &out).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn load_checkpoint(
    path: &Path,
    network: &Network,
    opt: &mut AdamW,
    cfg: &TrainConfig,
    seed: u64,
    device: &Device,
) -> Result<(CheckpointState, Vec<NamedTensor>), TrainError> {
    let err = |detail: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("unreadable ({e})")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| err("not a TNS checkpoint".into()))?;
    let state: CheckpointState = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    if &state.config != cfg || state.seed != seed {
        return Err(err("it was written with other training settings or another seed; remove it or use the same settings".into()));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let get = |name: &str, shape: &[usize]| -> Result<Tensor, TrainError> {
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("tensor {name:?} missing")))?;
        if view.shape() != shape || view.dtype() != Dtype::F32 {
            return Err(err(format!("tensor {name:?} does not match the model")));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor::from_vec(data, shape, device)?)
    };
    let (mut m, mut v, mut best) = (Vec::new(), Vec::new(), Vec::new());
    for (name, var) in network.named_vars() {
        let shape = var.dims().to_vec();
        var.set(&get(&format!("param/{name}"), &shape)?)?;
        m.push(get(&format!("m/{name}"), &shape)?);
        v.push(get(&format!("v/{name}"), &shape)?);
        best.push(NamedTensor {
            name: name.clone(),
            data: get(&format!("best/{name}"), &shape)?
                .flatten_all()?
                .to_vec1()?,
            shape,
        });
    }
    opt.restore(&m, &v, state.step)?;
    Ok((state, best))
}

//! The learning-rate range test (Smith, 2017, "Cyclical learning rates"): train from fresh
//! weights for a few hundred steps while the learning rate grows geometrically, record the
//! loss at each step, and read a learning rate off the curve.

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tns_model::ModelConfig;
use tns_models::Network;

use crate::prepare::NetData;
use crate::trainer::{batch_tensors, clip_scale};
use crate::{AdamW, TrainConfig, TrainError};

/// The sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSweep {
    /// Learning rate of the first step.
    pub start: f64,
    /// Learning rate of the last step.
    pub end: f64,
    /// Steps (one batch each).
    pub steps: usize,
}

impl Default for LrSweep {
    fn default() -> Self {
        Self {
            start: 1e-6,
            end: 1.0,
            steps: 200,
        }
    }
}

/// One step of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrPoint {
    /// Learning rate of the step.
    pub lr: f64,
    /// The batch's loss before the step (normalized MSE).
    pub loss: f64,
    /// Its exponential moving average (0.98, bias-corrected): the curve the suggestion reads.
    pub smoothed: f64,
}

/// What the sweep found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFinding {
    /// Every step run.
    pub points: Vec<LrPoint>,
    /// The learning rate with the lowest smoothed loss.
    pub lowest: Option<f64>,
    /// The suggested peak learning rate: a tenth of `lowest`, where the loss still falls
    /// steadily (the loss is lowest just before it diverges, too late to train at).
    pub suggestion: Option<f64>,
    /// Whether the sweep stopped before `end` because the smoothed loss exceeded four times
    /// its minimum (divergence).
    pub diverged: bool,
}

/// Runs the sweep on `model`'s network with fresh weights (its seed's initialization) over
/// the training batches of `train`, with AdamW and the weight decay, batch size and clipping
/// of `config`. Batches are drawn in a shuffled order seeded by the model's seed, cycling
/// when the sweep outlasts an epoch. The loss is the plain MSE (no gate penalty).
pub fn lr_find(
    model: &ModelConfig,
    train: &NetData,
    config: &TrainConfig,
    sweep: LrSweep,
    device: &Device,
) -> Result<LrFinding, TrainError> {
    if !(sweep.start > 0.0 && sweep.end > sweep.start && sweep.end.is_finite()) || sweep.steps < 2 {
        return Err(TrainError::Config(format!(
            "the sweep needs 0 < start < end and at least 2 steps, got start {}, end {}, {} steps",
            sweep.start, sweep.end, sweep.steps
        )));
    }
    if train.n == 0 || config.batch_size == 0 {
        return Err(TrainError::Config(
            "the sweep needs training windows and a batch size ≥ 1".into(),
        ));
    }
    let network = Network::init(model, device)?;
    let seed = model.seed;
    let vars: Vec<_> = network
        .named_vars()
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    let mut opt = AdamW::new(vars.clone(), sweep.start, config.weight_decay)?;
    let mut order: Vec<usize> = (0..train.n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ratio = (sweep.end / sweep.start).ln() / (sweep.steps - 1) as f64;
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    let (mut average, mut best, mut points, mut diverged) = (0.0, f64::INFINITY, Vec::new(), false);
    let mut batches = Vec::new();
    for step in 0..sweep.steps {
        if batches.is_empty() {
            order.shuffle(&mut rng);
            batches = order
                .chunks(config.batch_size)
                .rev()
                .map(<[usize]>::to_vec)
                .collect();
        }
        let Some(batch) = batches.pop() else { break };
        let lr = sweep.start * (ratio * step as f64).exp();
        let (x, y) = batch_tensors(train, &batch, device, &mut xb, &mut yb)?;
        let loss = (network.forward(&x)? - y)?.sqr()?.mean_all()?;
        let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        if !value.is_finite() {
            diverged = true;
            break;
        }
        average = 0.98 * average + 0.02 * value;
        let smoothed = average / (1.0 - 0.98f64.powi(step as i32 + 1));
        points.push(LrPoint {
            lr,
            loss: value,
            smoothed,
        });
        best = best.min(smoothed);
        if smoothed > 4.0 * best {
            diverged = true;
            break;
        }
        let store = loss.backward()?;
        let grads: Vec<_> = vars.iter().map(|v| store.get(v).cloned()).collect();
        let scale = clip_scale(&grads, config.clip_norm)?.0;
        opt.lr = lr;
        opt.step(&grads, scale)?;
    }
    let lowest = points
        .iter()
        .min_by(|a, b| a.smoothed.total_cmp(&b.smoothed))
        .map(|p| p.lr);
    Ok(LrFinding {
        points,
        lowest,
        suggestion: lowest.map(|lr| lr / 10.0),
        diverged,
    })
}

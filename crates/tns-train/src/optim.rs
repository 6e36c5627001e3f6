use candle_core::{Tensor, Var};

use crate::TrainError;

/// AdamW with decoupled weight decay, the same update as `candle_nn::AdamW`. It is ours
/// only because Candle keeps its moment estimates private, and a resumed run must restore
/// them to continue bit for bit.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    first: Vec<Var>,
    second: Vec<Var>,
    /// Steps taken so far.
    pub step: u64,
    /// Learning rate of the next step.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    /// A fresh optimizer over `vars` (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<Self, TrainError> {
        let zeros = |v: &Var| Var::zeros(v.shape(), v.dtype(), v.device());
        Ok(Self {
            first: vars.iter().map(zeros).collect::<Result<_, _>>()?,
            second: vars.iter().map(zeros).collect::<Result<_, _>>()?,
            vars,
            step: 0,
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        })
    }

    /// One update with the gradients (one per variable, in variable order; `None`: the
    /// variable got no gradient) multiplied by `grad_scale` (gradient clipping).
    pub fn step(&mut self, grads: &[Option<Tensor>], grad_scale: f64) -> Result<(), TrainError> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let scale_m = 1.0 / (1.0 - b1.powi(t));
        let scale_v = 1.0 / (1.0 - b2.powi(t));
        for (((theta, m), v), g) in self
            .vars
            .iter()
            .zip(&self.first)
            .zip(&self.second)
            .zip(grads)
        {
            let Some(g) = g else { continue };
            let g = (g * grad_scale)?;
            let next_m = ((m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let next_v = ((v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let adjusted = ((&next_m * scale_m)? / ((&next_v * scale_v)?.sqrt()? + self.eps)?)?;
            let next_theta = ((theta.as_tensor() * (1.0 - self.lr * self.weight_decay))?
                - (adjusted * self.lr)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
            theta.set(&next_theta)?;
        }
        Ok(())
    }

    /// The moment estimates, in variable order (for checkpoints).
    pub fn moments(&self) -> (Vec<Tensor>, Vec<Tensor>) {
        (
            self.first.iter().map(|v| v.as_tensor().clone()).collect(),
            self.second.iter().map(|v| v.as_tensor().clone()).collect(),
        )
    }

    /// Restores moments saved by [`AdamW::moments`].
    pub fn restore(
        &mut self,
        first: &[Tensor],
        second: &[Tensor],
        step: u64,
    ) -> Result<(), TrainError> {
        if first.len() != self.first.len() || second.len() != self.second.len() {
            return Err(TrainError::Config(
                "checkpoint optimizer state does not match the model".into(),
            ));
        }
        for (var, t) in self
            .first
            .iter()
            .zip(first)
            .chain(self.second.iter().zip(second))
        {
            var.set(t)?;
        }
        self.step = step;
        Ok(())
    }
}

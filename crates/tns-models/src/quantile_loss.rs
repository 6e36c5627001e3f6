//! The pinball (quantile) loss that trains quantile heads.

use candle_core::Tensor;

use crate::ModelError;

/// The pinball loss of one error `y − q` at level `tau`: `τ·e` above the quantile,
/// `(τ − 1)·e` below it. Its expectation is smallest when `q` is the `τ`-quantile of `y`.
///
/// ```
/// assert_eq!(tns_models::pinball(2.0, 0.9), 1.8);
/// assert!((tns_models::pinball(-2.0, 0.9) - 0.2).abs() < 1e-12);
/// ```
pub fn pinball(error: f64, tau: f64) -> f64 {
    if error >= 0.0 {
        tau * error
    } else {
        (tau - 1.0) * error
    }
}

/// The mean [`pinball`] loss of quantile outputs `q` against targets `y` (same shape), in the
/// autodiff graph: `mean(τ·relu(y − q) + (1 − τ)·relu(q − y))`.
pub fn pinball_loss(q: &Tensor, y: &Tensor, tau: f64) -> Result<Tensor, ModelError> {
    let error = (y - q)?;
    let above = error.relu()?.affine(tau, 0.0)?;
    let below = error.neg()?.relu()?.affine(1.0 - tau, 0.0)?;
    Ok((above + below)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The Candle loss equals the mean of the scalar definition, and its gradient is the
    /// central difference of that mean (away from the kink at `e = 0`).
    #[test]
    fn pinball_loss_matches_its_definition_and_finite_differences() {
        let q = [0.3, -1.2, 2.0, 0.7, -0.1];
        let y = [1.0, -2.0, 2.5, 0.2, 0.4];
        let tau = 0.05;
        let mean = |q: &[f64]| {
            q.iter()
                .zip(&y)
                .map(|(q, y)| pinball(y - q, tau))
                .sum::<f64>()
                / q.len() as f64
        };
        let dev = Device::Cpu;
        let qv = Var::from_tensor(&Tensor::new(&q, &dev).unwrap()).unwrap();
        let yt = Tensor::new(&y, &dev).unwrap();
        let loss = pinball_loss(qv.as_tensor(), &yt, tau).unwrap();
        let value = loss.to_scalar::<f64>().unwrap();
        assert!((value - mean(&q)).abs() < 1e-12, "{value} vs {}", mean(&q));
        let grads = loss.backward().unwrap();
        let grad: Vec<f64> = grads.get(qv.as_tensor()).unwrap().to_vec1().unwrap();
        for k in 0..q.len() {
            let (mut up, mut down) = (q, q);
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let fd = (mean(&up) - mean(&down)) / 2e-6;
            assert!(
                (grad[k] - fd).abs() < 1e-6,
                "output {k}: {} vs {fd}",
                grad[k]
            );
        }
    }
}

//! The gate's Mahalanobis statistic inside the autodiff graph, for gate-aware training.

use candle_core::{D, Tensor};

use crate::ModelError;

/// `d²[b, h] = ‖W[b, h] · out[b, h, :]‖²` for network outputs `out` `[B, H·T]` and
/// whitening matrices `W` `[B, H, T, T]` (`W_h = L_h⁻¹ diag(s_h)`, see
/// `tns_train::GateData`). Equals the gate's `rᵀ S⁻¹ r` of the data-unit correction
/// `r = s ⊙ out`, differentiably.
///
/// ```
/// use candle_core::{Device, Tensor};
/// // S = diag(4, 1), unit scales: W = L⁻¹ = diag(1/2, 1); r = (2, 3) → d² = 1 + 9.
/// let out = Tensor::new(&[[2f32, 3.0]], &Device::Cpu).unwrap();
/// let w = Tensor::new(&[[[[0.5f32, 0.0], [0.0, 1.0]]]], &Device::Cpu).unwrap();
/// let d2 = tns_models::gate_statistics(&out, &w).unwrap();
/// assert_eq!(d2.to_vec2::<f32>().unwrap(), vec![vec![10.0]]);
/// ```
pub fn gate_statistics(out: &Tensor, whitening: &Tensor) -> Result<Tensor, ModelError> {
    let (b, h, t, _) = whitening.dims4()?;
    let whitened = whitening.matmul(&out.reshape((b, h, t, 1))?)?;
    Ok(whitened.sqr()?.sum(D::Minus1)?.sum(D::Minus1)?)
}

/// The gate-aware penalty `mean(max(0, d² − χ²))` over all windows and steps: zero while
/// every correction lies inside its ellipsoid, growing with the excess otherwise.
pub fn gate_penalty(
    out: &Tensor,
    whitening: &Tensor,
    threshold: f64,
) -> Result<Tensor, ModelError> {
    Ok(gate_statistics(out, whitening)?
        .affine(1.0, -threshold)?
        .relu()?
        .mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tns_certify::{Gate, GateMode, GateScratch, linalg};

    /// A random SPD matrix `A Aᵀ + 0.5 I`.
    fn spd(rng: &mut ChaCha8Rng, t: usize) -> Vec<f64> {
        let a: Vec<f64> = (0..t * t).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut s = vec![0.0; t * t];
        for i in 0..t {
            for j in 0..t {
                s[i * t + j] = (0..t).map(|k| a[i * t + k] * a[j * t + k]).sum::<f64>();
            }
            s[i * t + i] += 0.5;
        }
        s
    }

    /// Candle's gradient of the penalty (through our whitening by `invert_lower`) against
    /// central differences of the hand-written gate statistic (Cholesky + triangular solves,
    /// f64) on the data-unit correction `s ⊙ out`.
    #[test]
    fn penalty_gradient_matches_finite_differences_of_the_gate_statistic() {
        let (b, h, t) = (5, 2, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let gate = Gate::new(0.05, t, GateMode::Reject).unwrap();
        let covs: Vec<Vec<f64>> = (0..b * h).map(|_| spd(&mut rng, t)).collect();
        let scale: Vec<f64> = (0..h * t).map(|_| rng.random_range(0.5..2.0)).collect();
        // Outputs spread so that some steps pass and some fail (the relu is active for some).
        let out: Vec<f64> = (0..b * h * t)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let mut whitening = Vec::new();
        let (mut factor, mut inverse) = (vec![0.0; t * t], vec![0.0; t * t]);
        for (i, cov) in covs.iter().enumerate() {
            linalg::cholesky(cov, t, &mut factor).unwrap();
            linalg::invert_lower(&factor, t, &mut inverse);
            let s = &scale[(i % h) * t..(i % h + 1) * t];
            for r in 0..t {
                for c in 0..t {
                    whitening.push(inverse[r * t + c] * s[c]);
                }
            }
        }
        // Reference in f64: the gate's own statistic on s ⊙ out.
        let mut scratch = GateScratch::new(t);
        let penalty = |o: &[f64], scratch: &mut GateScratch| -> f64 {
            let mut sum = 0.0;
            for i in 0..b * h {
                let r: Vec<f64> = (0..t)
                    .map(|k| o[i * t + k] * scale[(i % h) * t + k])
                    .collect();
                let (d2, _) = gate.statistic(&r, &covs[i], scratch).unwrap();
                sum += (d2 - gate.threshold()).max(0.0);
            }
            sum / (b * h) as f64
        };
        let dev = Device::Cpu;
        let out_var =
            Var::from_tensor(&Tensor::from_slice(&out, (b, h * t), &dev).unwrap()).unwrap();
        let w = Tensor::from_slice(&whitening, (b, h, t, t), &dev).unwrap();
        let statistics = gate_statistics(out_var.as_tensor(), &w).unwrap();
        let value = gate_penalty(out_var.as_tensor(), &w, gate.threshold()).unwrap();
        let grads = value.backward().unwrap();
        let grad: Vec<f64> = grads
            .get(out_var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The statistics themselves agree with the gate.
        let d2: Vec<f64> = statistics.flatten_all().unwrap().to_vec1().unwrap();
        let mut active = 0;
        for (i, d) in d2.iter().enumerate() {
            let r: Vec<f64> = (0..t)
                .map(|k| out[i * t + k] * scale[(i % h) * t + k])
                .collect();
            let (want, _) = gate.statistic(&r, &covs[i], &mut scratch).unwrap();
            assert!((d - want).abs() <= 1e-10 * want.max(1.0), "{d} vs {want}");
            // Keep the finite differences away from the relu's kink.
            assert!((want - gate.threshold()).abs() > 1e-3);
            active += usize::from(want > gate.threshold());
        }
        assert!(
            active > 0 && active < b * h,
            "{active} of {} steps active",
            b * h
        );
        assert!(
            (value
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                - penalty(&out, &mut scratch))
            .abs()
                < 1e-10
        );
        let eps = 1e-6;
        for j in 0..out.len() {
            let (mut up, mut down) = (out.clone(), out.clone());
            up[j] += eps;
            down[j] -= eps;
            let numeric = (penalty(&up, &mut scratch) - penalty(&down, &mut scratch)) / (2.0 * eps);
            assert!(
                (grad[j] - numeric).abs() <= 1e-6 * numeric.abs().max(1.0),
                "output {j}: autodiff {} vs finite difference {numeric}",
                grad[j]
            );
        }
    }
}

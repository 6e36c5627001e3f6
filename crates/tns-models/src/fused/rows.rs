//! Row-wise steps of the transformer, Mamba and S4D as one Candle op each, with hand-written
//! gradients: the rotary position embedding and RMSNorm.
//!
//! Why: Candle's training graph builds the rotation from eight ops (two halves, four
//! products, a difference, a sum, a concatenation) and RMSNorm from six.
//! Fused, each is one pass forward and one back over rows, run in parallel; every row is
//! computed on its own and the gain's gradient is summed over fixed shards of [`SHARD`] rows in
//! shard order, so a result does not depend on the number of threads.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{Fused3, Kernels3, Real, contiguous};

/// Rows per parallel shard of RMSNorm's backward pass (fixed: see the module's doc).
const SHARD: usize = 64;

/// The rotary position embedding of `x [.., P, head]` with the angles' `cos`, `sin`
/// `[P, head / 2]`: `(x₁, x₂) ↦ (x₁ cos − x₂ sin, x₂ cos + x₁ sin)` on the two halves of each
/// row. The angles are constants: only `x` gets a gradient (the inverse rotation of the
/// output's).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Fused3(Rope))
}

/// RMSNorm over the last axis of `x [.., d]` with `gain [d]`: `x_i / √(mean(x²) + eps) · gain_i`,
/// computed as the engine does (`x_i · (1 / √(mean + eps)) · gain_i`).
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&gain.contiguous()?, RmsNorm { eps })
}

/// [`rope`]'s op on `(x, cos, sin)`.
struct Rope;

impl Rope {
    /// `x` rotated by the angles (`sign` 1) or by their opposites (`sign` −1: the gradient, as a
    /// rotation's transpose is its inverse).
    fn rotate<T: Real>(x: &[T], cos: &[T], sin: &[T], d: RopeDims, sign: T) -> Vec<T> {
        let (half, width) = (d.half, 2 * d.half);
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(width * d.positions)
            .zip(x.par_chunks(width * d.positions))
            .for_each(|(y, x)| {
                for (at, (y, x)) in y
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .enumerate()
                {
                    let (cos, sin) = (&cos[at * half..][..half], &sin[at * half..][..half]);
                    let (x1, x2) = x.split_at(half);
                    let (y1, y2) = y.split_at_mut(half);
                    for i in 0..half {
                        let s = sign * sin[i];
                        y1[i] = x1[i] * cos[i] - x2[i] * s;
                        y2[i] = x2[i] * cos[i] + x1[i] * s;
                    }
                }
            });
        y
    }
}

/// Sizes of one [`Rope`] call.
#[derive(Debug, Clone)]
struct RopeDims {
    shape: Shape,
    positions: usize,
    half: usize,
}

impl Kernels3 for Rope {
    type Dims = RopeDims;

    fn name(&self) -> &'static str {
        "fused rope"
    }

    fn dims(&self, x: &Shape, cos: &Shape, sin: &Shape) -> candle_core::Result<RopeDims> {
        match (x.dims(), cos.dims()) {
            ([.., p, head], [q, half])
                if p == q && *head == 2 * half && *half > 0 && cos == sin =>
            {
                Ok(RopeDims {
                    shape: x.clone(),
                    positions: *p,
                    half: *half,
                })
            }
            _ => Err(candle_core::Error::Msg(format!(
                "fused rope: input {x:?}, cos {cos:?} and sin {sin:?} do not fit (expected [.., P, 2h], [P, h], [P, h])"
            ))),
        }
    }

    fn output_shape(&self, d: RopeDims) -> Shape {
        d.shape
    }

    fn forward<T: Real>(&self, x: &[T], cos: &[T], sin: &[T], d: RopeDims) -> Vec<T> {
        Self::rotate(x, cos, sin, d, T::one())
    }

    /// The angles are constants of the model (their gradients are zeros, unused).
    fn backward<T: Real>(
        &self,
        _x: &[T],
        cos: &[T],
        sin: &[T],
        g: &[T],
        d: RopeDims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let dx = Self::rotate(g, cos, sin, d, -T::one());
        (dx, vec![T::zero(); cos.len()], vec![T::zero(); sin.len()])
    }
}

/// [`rms_norm`]'s op on `(x, gain)`.
struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    /// `1 / √(mean(x²) + eps)` of one row.
    fn inverse<T: Real>(&self, x: &[T]) -> T {
        let width = T::from(x.len()).unwrap_or_else(T::one);
        let eps = T::from(self.eps).unwrap_or_else(T::zero);
        let mean = x.iter().fold(T::zero(), |s, &v| s + v * v) / width;
        T::one() / (mean + eps).sqrt()
    }

    fn forward<T: Real>(&self, x: &[T], gain: &[T]) -> Vec<T> {
        let width = gain.len();
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(width)
            .zip(x.par_chunks(width))
            .for_each(|(y, x)| {
                let inverse = self.inverse(x);
                for ((y, &x), &g) in y.iter_mut().zip(x).zip(gain) {
                    *y = x * inverse * g;
                }
            });
        y
    }

    /// `(dx, dgain)` from the output's gradient `g`: with `r = 1 / √(mean(x²) + eps)` and
    /// `u = g ⊙ gain`, `dx = r u − x r³ (u · x) / d`, and `dgain = Σ_rows g ⊙ x r`.
    fn backward<T: Real>(&self, x: &[T], gain: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
        let width = gain.len();
        let d = T::from(width).unwrap_or_else(T::one);
        let mut dx = vec![T::zero(); x.len()];
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(SHARD * width)
            .zip(x.par_chunks(SHARD * width).zip(g.par_chunks(SHARD * width)))
            .map(|(dx, (x, g))| {
                let mut d_gain = vec![T::zero(); width];
                for ((dx, x), g) in dx
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .zip(g.chunks_exact(width))
                {
                    let r = self.inverse(x);
                    let dot = x
                        .iter()
                        .zip(g)
                        .zip(gain)
                        .fold(T::zero(), |s, ((&x, &g), &w)| s + g * w * x);
                    let shrink = r * r * r * dot / d;
                    for (i, dx) in dx.iter_mut().enumerate() {
                        *dx = r * g[i] * gain[i] - x[i] * shrink;
                        d_gain[i] = d_gain[i] + g[i] * x[i] * r;
                    }
                }
                d_gain
            })
            .collect();
        let mut d_gain = vec![T::zero(); width];
        for partial in partials {
            for (sum, p) in d_gain.iter_mut().zip(partial) {
                *sum = *sum + p;
            }
        }
        (dx, d_gain)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused rms norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let width = l2.shape().elem_count();
        if l1.shape().dims().last() != Some(&width) || l2.shape().rank() != 1 || width == 0 {
            return Err(candle_core::Error::Msg(format!(
                "{}: input {:?} and gain {:?} do not fit (expected [.., d] and [d])",
                self.name(),
                l1.shape(),
                l2.shape()
            )));
        }
        let storage = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(self.forward(contiguous(x, l1)?, contiguous(w, l2)?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(self.forward(contiguous(x, l1)?, contiguous(w, l2)?))
            }
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: inputs must both be f32 or both f64",
                    self.name()
                )));
            }
        };
        Ok((storage, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let device = x.device();
        macro_rules! run {
            ($t:ty) => {{
                let (xs, w, g) = (
                    x.flatten_all()?.to_vec1::<$t>()?,
                    gain.flatten_all()?.to_vec1::<$t>()?,
                    grad.flatten_all()?.to_vec1::<$t>()?,
                );
                let (dx, dw) = self.backward(&xs, &w, &g);
                (
                    Tensor::from_vec(dx, x.shape(), device)?,
                    Tensor::from_vec(dw, gain.shape(), device)?,
                )
            }};
        }
        let (dx, d_gain) = match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: no backward for {other:?}",
                    self.name()
                )));
            }
        };
        Ok((Some(dx), Some(d_gain)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::gradcheck::spread as values;

    #[test]
    fn the_fused_rows_match_candles_ops_and_their_gradients() {
        let (b, p, d) = (3, 7, 12);
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let var = |n: usize, k: usize, scale: f64, shape: &[usize]| {
                let t = Tensor::from_vec(values(n, k, scale), shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap();
                Var::from_tensor(&t).unwrap()
            };
            let weight = |n: usize, shape: &[usize]| {
                Tensor::from_vec(values(n, 7, 1.0), shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            };
            // The rotation against Candle's ops, as the transformer built it before.
            let (half, heads) = (3, 2);
            let x = var(b * heads * p * 2 * half, 13, 2.0, &[b, heads, p, 2 * half]);
            let angles = |f: fn(f64) -> f64| {
                let v: Vec<f64> = (0..p * half).map(|i| f(0.3 * i as f64)).collect();
                Tensor::from_vec(v, (p, half), &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            };
            let (cos, sin) = (angles(f64::cos), angles(f64::sin));
            let (x1, x2) = (
                x.narrow(3, 0, half).unwrap(),
                x.narrow(3, half, half).unwrap(),
            );
            let mul = |a: &Tensor, b: &Tensor| a.broadcast_mul(b).unwrap();
            let want = Tensor::cat(
                &[
                    (mul(&x1, &cos) - mul(&x2, &sin)).unwrap(),
                    (mul(&x2, &cos) + mul(&x1, &sin)).unwrap(),
                ],
                3,
            )
            .unwrap();
            let got = rope(&x, &cos, &sin).unwrap();
            crate::gradcheck::assert_close(&got, &want, tolerance);
            let w = weight(b * heads * p * 2 * half, &[b, heads, p, 2 * half]);
            let grad = |t: &Tensor| {
                let grads = (t * &w).unwrap().sum_all().unwrap().backward().unwrap();
                grads.get(&x).unwrap().clone()
            };
            crate::gradcheck::assert_close(&grad(&got), &grad(&want), tolerance);
            // RMSNorm against Candle's.
            let x = var(b * p * d, 5, 3.0, &[b, p, d]);
            let gain = var(d, 3, 2.0, &[d]);
            let w = weight(b * p * d, &[b, p, d]);
            let want = candle_nn::ops::rms_norm_slow(&x, &gain, 1e-5).unwrap();
            let got = rms_norm(&x, &gain, 1e-5).unwrap();
            crate::gradcheck::assert_close(&got, &want, tolerance);
            let grads = |t: &Tensor| (t * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (want_grads, got_grads) = (grads(&want), grads(&got));
            for v in [&x, &gain] {
                crate::gradcheck::assert_close(
                    got_grads.get(v).unwrap(),
                    want_grads.get(v).unwrap(),
                    tolerance,
                );
            }
        }
    }

    #[test]
    fn the_rms_norm_gradients_match_finite_differences() {
        let (d, rows) = (6, 3);
        let x = [values(rows * d, 5, 2.0), values(d, 3, 1.5)];
        let vars = [
            Var::from_slice(&x[0], (rows, d), &Device::Cpu).unwrap(),
            Var::from_slice(&x[1], d, &Device::Cpu).unwrap(),
        ];
        let w_norm = values(rows * d, 13, 1.0);
        let loss = (rms_norm(&vars[0], &vars[1], 1e-5)
            .unwrap()
            .flatten_all()
            .unwrap()
            * Tensor::new(w_norm.as_slice(), &Device::Cpu).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let grads = loss.backward().unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &vars, &x, |x| {
            let mut total = 0.0;
            for (row, v) in x[0].chunks_exact(d).enumerate() {
                let r = 1.0 / (v.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
                total += (0..d)
                    .map(|i| v[i] * r * x[1][i] * w_norm[row * d + i])
                    .sum::<f64>();
            }
            total
        });
    }

    #[test]
    fn shapes_that_do_not_fit_are_an_error() {
        let cpu = &Device::Cpu;
        let not_square = Tensor::zeros((2, 3, 4), DType::F32, cpu).unwrap();
        let angles = Tensor::zeros((3, 3), DType::F32, cpu).unwrap();
        assert!(rope(&not_square, &angles, &angles).is_err());
        let x = Tensor::zeros((2, 4), DType::F32, cpu).unwrap();
        let gain = Tensor::zeros(5, DType::F32, cpu).unwrap();
        assert!(rms_norm(&x, &gain, 1e-5).is_err());
    }
}

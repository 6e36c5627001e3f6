//! The elementwise steps of Mamba and SwiGLU as one Candle op each, with hand-written
//! gradients: softplus (Mamba's step size Δ), SiLU (after Mamba's convolution, S4D's output)
//! and the SiLU gate `a ⊙ silu(z)` (Mamba's output gate, SwiGLU's feed-forward).
//!
//! Why: Candle builds softplus from six ops (seven tensors forward, more backward) and SiLU's
//! gradient from five, each a pass over a `[B, L, E]` tensor with its own allocation. Fused,
//! each is one pass forward and one back, the sigmoid and exponential vectorized (the engine's
//! kernels in f32). Chunks of [`CHUNK`] values run in parallel; every value is computed on its
//! own, so a result does not depend on the number of threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{Real, contiguous};

/// Values per parallel task.
const CHUNK: usize = 4096;

/// `ln(1 + eˣ)`, computed as `max(x, 0) + ln(1 + e^{−|x|})` (no overflow for large `x`);
/// its gradient is `σ(x)`.
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Unary(Activation::Softplus))
}

/// `x σ(x)`; its gradient is `σ(x) (1 + x (1 − σ(x)))`.
pub fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Unary(Activation::Silu))
}

/// `a ⊙ silu(z)` for `a` and `z` of one shape.
pub fn silu_gate(a: &Tensor, z: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2(&z.contiguous()?, SiluGate)
}

/// The activations of [`Unary`].
#[derive(Debug, Clone, Copy)]
enum Activation {
    Softplus,
    Silu,
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Self::Softplus => "fused softplus",
            Self::Silu => "fused silu",
        }
    }

    /// `out ← f(x)` over one chunk.
    fn forward<T: Real>(self, x: &[T], out: &mut [T]) {
        match self {
            Self::Softplus => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = -v.abs();
                }
                T::exp_in_place(out);
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v.max(T::zero()) + o.ln_1p();
                }
            }
            Self::Silu => {
                out.copy_from_slice(x);
                T::sigmoid_in_place(out);
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v * *o;
                }
            }
        }
    }

    /// `out ← g ⊙ f′(x)` over one chunk.
    fn gradient<T: Real>(self, x: &[T], g: &[T], out: &mut [T]) {
        out.copy_from_slice(x);
        T::sigmoid_in_place(out);
        match self {
            Self::Softplus => {
                for (o, &g) in out.iter_mut().zip(g) {
                    *o = g * *o;
                }
            }
            Self::Silu => {
                for ((o, &v), &g) in out.iter_mut().zip(x).zip(g) {
                    let s = *o;
                    *o = g * s * (T::one() + v * (T::one() - s));
                }
            }
        }
    }
}

/// `out[i] ← f(a[i], b[i])` in parallel chunks, in f32 or f64.
fn map2(
    name: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32_kernel: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
    f64_kernel: impl Fn(&[f64], &[f64], &mut [f64]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    if l1.shape() != l2.shape() {
        return Err(candle_core::Error::Msg(format!(
            "{name}: shapes {:?} and {:?} differ",
            l1.shape(),
            l2.shape()
        )));
    }
    fn run<T: Real>(a: &[T], b: &[T], kernel: impl Fn(&[T], &[T], &mut [T]) + Sync) -> Vec<T> {
        let mut out = vec![T::zero(); a.len()];
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(out, (a, b))| kernel(a, b, out));
        out
    }
    let storage = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(run(contiguous(a, l1)?, contiguous(b, l2)?, f32_kernel))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(run(contiguous(a, l1)?, contiguous(b, l2)?, f64_kernel))
        }
        _ => {
            return Err(candle_core::Error::Msg(format!(
                "{name}: inputs must both be f32 or both f64"
            )));
        }
    };
    Ok((storage, l1.shape().clone()))
}

/// The op `f(x)` of one activation.
struct Unary(Activation);

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let f = self.0;
        map2(
            self.name(),
            (s, l),
            (s, l),
            |x, _, out| f.forward(x, out),
            |x, _, out| f.forward(x, out),
        )
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &Gradient(self.0),
        )?))
    }
}

/// `g ⊙ f′(x)` on `(x, g)`: the gradient of [`Unary`].
struct Gradient(Activation);

impl CustomOp2 for Gradient {
    fn name(&self) -> &'static str {
        "fused activation gradient"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let f = self.0;
        map2(
            self.name(),
            (s1, l1),
            (s2, l2),
            |x, g, out| f.gradient(x, g, out),
            |x, g, out| f.gradient(x, g, out),
        )
    }
}

/// `a ⊙ silu(z)` on `(a, z)`.
struct SiluGate;

impl SiluGate {
    fn kernel<T: Real>(a: &[T], z: &[T], out: &mut [T]) {
        Activation::Silu.forward(z, out);
        for (o, &a) in out.iter_mut().zip(a) {
            *o = a * *o;
        }
    }
}

impl CustomOp2 for SiluGate {
    fn name(&self) -> &'static str {
        "fused silu gate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map2(
            self.name(),
            (s1, l1),
            (s2, l2),
            Self::kernel::<f32>,
            Self::kernel::<f64>,
        )
    }

    fn bwd(
        &self,
        a: &Tensor,
        z: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // d/da = g ⊙ silu(z): the gate itself, with g in a's place.
        let d_a = grad.apply_op2_no_bwd(z, &SiluGate)?;
        // d/dz = (g ⊙ a) ⊙ silu′(z).
        let d_z = z.apply_op2_no_bwd(&(&grad * a)?, &Gradient(Activation::Silu))?;
        Ok((Some(d_a), Some(d_z)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    /// Values across both signs and both branches of softplus.
    fn values(n: usize, k: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * k % 29) as f64 - 14.0) / 3.0).collect()
    }

    /// [`values`] with every eleventh one large (softplus's and the sigmoid's far ends).
    fn values_with_large(n: usize, k: usize) -> Vec<f64> {
        let mut v = values(n, k);
        v.iter_mut().step_by(11).for_each(|x| *x += 25.0);
        v
    }

    /// Candle's own ops, as the reference.
    fn reference(a: &Tensor, z: &Tensor) -> [Tensor; 3] {
        let softplus = (z.relu().unwrap()
            + (z.abs().unwrap().neg().unwrap().exp().unwrap() + 1.0)
                .unwrap()
                .log()
                .unwrap())
        .unwrap();
        let silu = z.silu().unwrap();
        let gate = (a * &silu).unwrap();
        [softplus, silu, gate]
    }

    fn fused(a: &Tensor, z: &Tensor) -> [Tensor; 3] {
        [
            softplus(z).unwrap(),
            silu(z).unwrap(),
            silu_gate(a, z).unwrap(),
        ]
    }

    #[test]
    fn the_fused_activations_match_candles_ops_and_their_gradients() {
        // More than one chunk, in f64 (the standard library's functions) and f32 (the
        // engine's vectorized ones).
        let n = 2 * CHUNK + 37;
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let var = |k| {
                Var::from_vec(values_with_large(n, k), (n / 3, 3), &Device::Cpu)
                    .and_then(|v| Var::from_tensor(&v.to_dtype(dtype)?))
                    .unwrap()
            };
            let (a, z) = (var(5), var(7));
            let weights = Tensor::new(values(n, 3), &Device::Cpu)
                .and_then(|w| w.reshape((n / 3, 3))?.to_dtype(dtype))
                .unwrap();
            for (want, got) in reference(&a, &z).iter().zip(&fused(&a, &z)) {
                let close = |got: &Tensor, want: &Tensor| {
                    crate::gradcheck::assert_close(got, want, tolerance);
                };
                close(got, want);
                let grads_of = |t: &Tensor| {
                    (t * &weights)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                };
                let (want_grads, got_grads) = (grads_of(want), grads_of(got));
                for v in [&a, &z] {
                    match (want_grads.get(v), got_grads.get(v)) {
                        (Some(w), Some(g)) => close(g, w),
                        (None, None) => {}
                        _ => panic!("a gradient is missing on one side"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_gradients_match_finite_differences() {
        let x = [values(40, 5), values(40, 7)];
        let vars: Vec<Var> = x
            .iter()
            .map(|v| Var::from_slice(v, 40, &Device::Cpu).unwrap())
            .collect();
        let weights: Vec<f64> = values(40, 3);
        let w = Tensor::new(weights.as_slice(), &Device::Cpu).unwrap();
        let total = |a: &Tensor, z: &Tensor| {
            (softplus(z).unwrap() + silu(a).unwrap() + silu_gate(a, z).unwrap()).unwrap()
        };
        let grads = (total(&vars[0], &vars[1]) * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &vars, &x, |x| {
            let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
            (0..40)
                .map(|i| {
                    let (a, z) = (x[0][i], x[1][i]);
                    let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                    (softplus + a * sigmoid(a) + a * z * sigmoid(z)) * weights[i]
                })
                .sum()
        });
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let a = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let z = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
        assert!(silu_gate(&a, &z).is_err());
    }
}

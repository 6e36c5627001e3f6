//! Gradient checks shared by the tests of the hand-written and composite training ops.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// `n` test values spread over `[−scale, scale]`, in an order set by `k` (coprime to 31).
pub(crate) fn spread(n: usize, k: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i * k % 31) as f64 - 15.0) / 15.0 * scale)
        .collect()
}

/// Asserts that `got` has `want`'s shape and equals it to `tolerance` relative (absolute
/// below 1), in f64: a fused op against the Candle ops it replaces.
pub(crate) fn assert_close(got: &Tensor, want: &Tensor, tolerance: f64) {
    let as_f64 = |t: &Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .unwrap()
    };
    assert_eq!(got.shape(), want.shape());
    for (g, w) in as_f64(got).iter().zip(as_f64(want)) {
        assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// Asserts that the gradient `grads` holds for each of `vars` equals the central difference
/// (step 1e-6) of `loss_of` at `values` (variable `p`'s values, flattened, in f64) to 1e-6
/// relative (absolute below 1).
pub(crate) fn assert_gradients_match(
    grads: &GradStore,
    vars: &[Var],
    values: &[Vec<f64>],
    loss_of: impl Fn(&[Vec<f64>]) -> f64,
) {
    for (p, var) in vars.iter().enumerate() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("variable {p} has no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (i, &g) in grad.iter().enumerate() {
            let h = 1e-6;
            let (mut up, mut down) = (values.to_vec(), values.to_vec());
            up[p][i] += h;
            down[p][i] -= h;
            let numeric = (loss_of(&up) - loss_of(&down)) / (2.0 * h);
            assert!(
                (g - numeric).abs() <= 1e-6 * numeric.abs().max(1.0),
                "variable {p} entry {i}: gradient {g}, finite difference {numeric}"
            );
        }
    }
}

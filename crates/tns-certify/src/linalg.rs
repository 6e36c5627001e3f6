//! Small dense symmetric-positive-definite solves (k ≤ a few dozen), allocation-free.

/// The matrix is not symmetric positive definite (a pivot was not positive).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("matrix is not positive definite (pivot {pivot} = {value})")]
pub struct NotPositiveDefinite {
    /// Row of the failing pivot.
    pub pivot: usize,
    /// Its value.
    pub value: f64,
}

/// Cholesky factor `L` (lower triangular, `A = L Lᵀ`) of the `n × n` row-major `a`,
/// written into `l` (its upper triangle is zeroed).
///
/// ```
/// let mut l = [0.0; 4];
/// tns_certify::linalg::cholesky(&[4.0, 2.0, 2.0, 5.0], 2, &mut l).unwrap();
/// assert_eq!(l, [2.0, 0.0, 1.0, 2.0]);
/// ```
pub fn cholesky(a: &[f64], n: usize, l: &mut [f64]) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), n * n, "matrix shape");
    assert_eq!(l.len(), n * n, "factor shape");
    l.fill(0.0);
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if !(sum > 0.0 && sum.is_finite()) {
                    return Err(NotPositiveDefinite {
                        pivot: i,
                        value: sum,
                    });
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Ok(())
}

/// Solves `L y = b` in place (`b` becomes `y`).
pub fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves `Lᵀ x = y` in place (`y` becomes `x`).
pub fn solve_lower_transposed(l: &[f64], n: usize, y: &mut [f64]) {
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
}

/// `L⁻¹` of a lower-triangular `L`, written into `out` (lower triangular). The gate never
/// uses it (it solves); training uses it to whiten corrections, `d² = ‖L⁻¹ r‖²`, inside the
/// autodiff graph, where a triangular solve is not available as an operation.
///
/// ```
/// let mut inv = [0.0; 4];
/// tns_certify::linalg::invert_lower(&[2.0, 0.0, 1.0, 4.0], 2, &mut inv);
/// assert_eq!(inv, [0.5, 0.0, -0.125, 0.25]);
/// ```
pub fn invert_lower(l: &[f64], n: usize, out: &mut [f64]) {
    out.fill(0.0);
    for col in 0..n {
        // Column `col` of L⁻¹ solves L y = e_col; entries above the diagonal stay zero.
        for i in col..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                s -= l[i * n + k] * out[k * n + col];
            }
            out[i * n + col] = s / l[i * n + i];
        }
    }
}

/// `‖A x − b‖₂` for row-major `A` (`n × n`): how well a solve satisfied its system.
pub fn residual_norm(a: &[f64], n: usize, x: &[f64], b: &[f64]) -> f64 {
    (0..n)
        .map(|i| {
            let ax: f64 = (0..n).map(|j| a[i * n + j] * x[j]).sum();
            (ax - b[i]).powi(2)
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_match_a_known_system() {
        // A = [[4, 2, 0.4], [2, 5, 1], [0.4, 1, 3]], x = [1, -2, 0.5].
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let x = [1.0, -2.0, 0.5];
        let mut b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        let rhs = b.clone();
        let mut l = [0.0; 9];
        cholesky(&a, 3, &mut l).unwrap();
        // L Lᵀ reproduces A.
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-14);
            }
        }
        solve_lower(&l, 3, &mut b);
        solve_lower_transposed(&l, 3, &mut b);
        for i in 0..3 {
            assert!((b[i] - x[i]).abs() < 1e-14);
        }
        assert!(residual_norm(&a, 3, &b, &rhs) < 1e-13);
    }

    #[test]
    fn indefinite_and_nan_matrices_are_refused() {
        let mut l = [0.0; 4];
        assert_eq!(
            cholesky(&[1.0, 2.0, 2.0, 1.0], 2, &mut l)
                .unwrap_err()
                .pivot,
            1
        );
        assert!(cholesky(&[f64::NAN, 0.0, 0.0, 1.0], 2, &mut l).is_err());
        assert!(cholesky(&[0.0, 0.0, 0.0, 1.0], 2, &mut l).is_err());
    }
}

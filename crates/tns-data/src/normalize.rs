use serde::{Deserialize, Serialize};

/// Per-column z-score normalization, fitted on the training split only and stored in the
/// model file so that inference normalizes exactly as training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (floored so constant columns do not divide by zero).
    pub std: Vec<f64>,
}

impl Normalization {
    /// Smallest standard deviation used; a constant column is centred but not blown up.
    pub const MIN_STD: f64 = 1e-8;

    /// Fits mean and standard deviation per column over row-major `rows × columns` values.
    ///
    /// ```
    /// let n = tns_data::Normalization::fit(&[1.0, 10.0, 3.0, 10.0], 2);
    /// assert_eq!(n.mean, vec![2.0, 10.0]);
    /// assert_eq!(n.std[0], 1.0);
    /// assert_eq!(n.std[1], tns_data::Normalization::MIN_STD);
    /// ```
    pub fn fit(values: &[f64], columns: usize) -> Self {
        let mut acc = Welford::new(columns);
        for row in values.chunks_exact(columns) {
            acc.push(row);
        }
        acc.finish()
    }

    /// Identity normalization for `columns` columns.
    pub fn identity(columns: usize) -> Self {
        Self {
            mean: vec![0.0; columns],
            std: vec![1.0; columns],
        }
    }

    /// `(x - mean) / std` for column `c`.
    #[inline]
    pub fn apply(&self, c: usize, x: f64) -> f64 {
        (x - self.mean[c]) / self.std[c]
    }
}

/// Numerically stable running mean/variance per column.
pub(crate) struct Welford {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Welford {
    pub(crate) fn new(columns: usize) -> Self {
        Self {
            n: 0,
            mean: vec![0.0; columns],
            m2: vec![0.0; columns],
        }
    }

    pub(crate) fn push(&mut self, row: &[f64]) {
        self.n += 1;
        let n = self.n as f64;
        for ((m, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(row) {
            let d = x - *m;
            *m += d / n;
            *m2 += d * (x - *m);
        }
    }

    pub(crate) fn finish(self) -> Normalization {
        let n = self.n.max(1) as f64;
        Normalization {
            std: self
                .m2
                .iter()
                .map(|m2| (m2 / n).sqrt().max(Normalization::MIN_STD))
                .collect(),
            mean: self.mean,
        }
    }
}

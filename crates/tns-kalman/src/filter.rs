use crate::{Axis, AxisParams, Mat2, propagate, unit_process_noise};

/// The running filter of one axis: state `[p, v]` and covariance `P`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisFilter {
    axis: Axis,
    params: AxisParams,
    dt: f64,
    q: Mat2,
    x: [f64; 2],
    p: Mat2,
}

/// Innovation statistics accumulated over filter steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SequenceStats {
    /// Sum of normalized innovations squared `Σ eᵀ S⁻¹ e`.
    pub nis: f64,
    /// Sum of the degrees of freedom (observed scalars) of those innovations.
    pub dof: usize,
    /// Gaussian log-likelihood of the innovations.
    pub log_likelihood: f64,
}

impl SequenceStats {
    /// Average NIS per degree of freedom: ≈ 1 when the model is consistent.
    pub fn nis_per_dof(&self) -> f64 {
        self.nis / self.dof.max(1) as f64
    }

    /// Adds another run's statistics.
    pub fn merge(&mut self, other: &Self) {
        self.nis += other.nis;
        self.dof += other.dof;
        self.log_likelihood += other.log_likelihood;
    }
}

impl AxisFilter {
    /// Initialises from the first row: the observed components are taken as the state with
    /// their measurement variance; an unobserved velocity starts at 0 with
    /// `initial_velocity_var`.
    pub fn start(axis: Axis, params: AxisParams, dt: f64, first_row: &[f64]) -> Self {
        let var_v = match (axis.velocity, params.r_velocity) {
            (Some(_), Some(r)) => r,
            _ => params.initial_velocity_var,
        };
        let uq = unit_process_noise(dt);
        Self {
            axis,
            params,
            dt,
            q: [
                [params.q * uq[0][0], params.q * uq[0][1]],
                [params.q * uq[1][0], params.q * uq[1][1]],
            ],
            x: initial_state(axis, params, first_row),
            p: [[params.r_position, 0.0], [0.0, var_v]],
        }
    }

    /// [`AxisFilter::step`] that also returns the gains of its position and velocity updates
    /// (zero where the velocity is not observed). They depend on the covariance alone, never
    /// on the data.
    pub(crate) fn step_with_gains(&mut self, row: &[f64]) -> [[f64; 2]; 2] {
        self.predict_one();
        let (_, position) = self.update(0, row[self.axis.position], self.params.r_position);
        let velocity = match (self.axis.velocity, self.params.r_velocity) {
            (Some(c), Some(r)) => self.update(1, row[c], r).1,
            _ => [0.0; 2],
        };
        [position, velocity]
    }

    fn predict_one(&mut self) {
        self.x = predicted(self.x, self.dt);
        let fp = propagate(&self.p, self.dt);
        self.p = [
            [fp[0][0] + self.q[0][0], fp[0][1] + self.q[0][1]],
            [fp[1][0] + self.q[1][0], fp[1][1] + self.q[1][1]],
        ];
    }

    /// State estimate `[p, v]`.
    pub fn state(&self) -> [f64; 2] {
        self.x
    }

    /// State covariance.
    pub fn covariance(&self) -> Mat2 {
        self.p
    }

    /// Predicts one step and updates with the next row; returns the innovation statistics.
    pub fn step(&mut self, row: &[f64]) -> SequenceStats {
        self.predict_one();
        let (mut stats, _) = self.update(0, row[self.axis.position], self.params.r_position);
        if let (Some(c), Some(r)) = (self.axis.velocity, self.params.r_velocity) {
            stats.merge(&self.update(1, row[c], r).0);
        }
        stats
    }

    /// Scalar Joseph-form update of component `c` with measurement `z` of variance `r`;
    /// returns the innovation statistics and the gain.
    fn update(&mut self, c: usize, z: f64, r: f64) -> (SequenceStats, [f64; 2]) {
        let p = self.p;
        let s = p[c][c] + r;
        let k = [p[0][c] / s, p[1][c] / s];
        let e = z - self.x[c];
        self.x = corrected(self.x, k, e);
        // A = I - K hᵀ, P' = A P Aᵀ + r K Kᵀ.
        let mut a = [[1.0, 0.0], [0.0, 1.0]];
        a[0][c] -= k[0];
        a[1][c] -= k[1];
        let ap = [
            [
                a[0][0] * p[0][0] + a[0][1] * p[1][0],
                a[0][0] * p[0][1] + a[0][1] * p[1][1],
            ],
            [
                a[1][0] * p[0][0] + a[1][1] * p[1][0],
                a[1][0] * p[0][1] + a[1][1] * p[1][1],
            ],
        ];
        let mut np = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                np[i][j] = ap[i][0] * a[j][0] + ap[i][1] * a[j][1] + r * k[i] * k[j];
            }
        }
        let off = 0.5 * (np[0][1] + np[1][0]);
        self.p = [[np[0][0], off], [off, np[1][1]]];
        let nis = e * e / s;
        (
            SequenceStats {
                nis,
                dof: 1,
                log_likelihood: -0.5 * ((2.0 * std::f64::consts::PI * s).ln() + nis),
            },
            k,
        )
    }

    /// State mean and covariance `k` steps ahead given `k·dt` and `Σ_{i<k} F^i Q₁ F^iᵀ`.
    pub(crate) fn forecast(&self, k_dt: f64, unit_q_sum: &Mat2) -> ([f64; 2], Mat2) {
        let x = predicted(self.x, k_dt);
        let fp = propagate(&self.p, k_dt);
        let q = self.params.q;
        let p = [
            [
                fp[0][0] + q * unit_q_sum[0][0],
                fp[0][1] + q * unit_q_sum[0][1],
            ],
            [
                fp[1][0] + q * unit_q_sum[1][0],
                fp[1][1] + q * unit_q_sum[1][1],
            ],
        ];
        (x, p)
    }

    /// Runs the filter over consecutive rows (`[n, features]`) and sums the innovation
    /// statistics of every row after the first.
    pub fn run(
        axis: Axis,
        params: AxisParams,
        dt: f64,
        rows: &[f64],
        features: usize,
    ) -> SequenceStats {
        let mut total = SequenceStats::default();
        let mut it = rows.chunks_exact(features);
        let Some(first) = it.next() else {
            return total;
        };
        let mut f = Self::start(axis, params, dt, first);
        for row in it {
            total.merge(&f.step(row));
        }
        total
    }
}

/// The state a filter starts from: the first row's position and (when observed) velocity.
pub(crate) fn initial_state(axis: Axis, params: AxisParams, first_row: &[f64]) -> [f64; 2] {
    let v = match (axis.velocity, params.r_velocity) {
        (Some(c), Some(_)) => first_row[c],
        _ => 0.0,
    };
    [first_row[axis.position], v]
}

/// One step's prediction of the state, `F x`.
pub(crate) fn predicted(x: [f64; 2], dt: f64) -> [f64; 2] {
    [x[0] + dt * x[1], x[1]]
}

/// The state corrected by gain `k` for innovation `e`: the filter's mean update, one
/// expression for the filter and for the gain schedule so that both give the same bits.
pub(crate) fn corrected(x: [f64; 2], k: [f64; 2], e: f64) -> [f64; 2] {
    [x[0] + k[0] * e, x[1] + k[1] * e]
}

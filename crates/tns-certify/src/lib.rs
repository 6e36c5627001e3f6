//! The gate and the certificate of System B.
//!
//! * [`Gate`]: accepts a network correction `r_h` only when it lies inside the prior's
//!   `(1 − α)` predictive ellipsoid, `d²_h = r_hᵀ S_h⁻¹ r_h ≤ χ²_k(1 − α)`, solved by
//!   Cholesky (never an explicit inverse). A rejected step returns the prior bit for bit.
//! * [`ConformalCalibration`]: split-conformal radii per target and horizon step.
//! * [`Certificate`]: what was tested, the statistic, the threshold, pass/fail, and the
//!   interval with its stated coverage, computed from the actual inputs.
//!
//! A certificate does **not** say that a forecast is correct. It says whether the network's
//! correction was statistically consistent with the physics prior, and gives an interval
//! whose marginal coverage is at least `1 − α` when calibration and test data are
//! exchangeable.
//!
//! ```
//! use tns_certify::{Gate, GateMode, GateScratch};
//! let gate = Gate::new(0.01, 2, GateMode::Reject).unwrap();
//! assert!((gate.threshold() - 9.2103).abs() < 1e-3);
//! let prior = [1.0, 2.0];
//! let cov = [1.0, 0.0, 0.0, 4.0];
//! let mut out = [0.0; 2];
//! let mut scratch = GateScratch::new(2);
//! let small = gate.apply(&prior, &[0.5, 1.0], &cov, &mut out, &mut scratch).unwrap();
//! assert!(small.passed && out == [1.5, 3.0]);
//! let large = gate.apply(&prior, &[5.0, 10.0], &cov, &mut out, &mut scratch).unwrap();
//! assert!(!large.passed && out == prior);
//! ```

mod certificate;
mod conformal;
mod gate;
pub mod linalg;

pub use certificate::{
    Certificate, CertificateInputs, DISCLAIMER, GateReport, IntervalReport, ModelIdentity,
    SolverReport, StreamReport,
};
pub use conformal::{
    AdaptiveConformal, ConformalCalibration, ConformalError, HOURS, HourRadii, Quantiles,
    ScoreScale, VOLATILITY_FLOOR, conformal_bounds, conformal_score, mean_abs_change,
    window_volatility,
};
pub use gate::{
    Gate, GateConfig, GateError, GateEvidence, GateMode, GateScratch, GateStep, MIN_GATE_ALPHA,
    ModeErrors, chi2_threshold,
};

//! Maximum-likelihood fit of `q` and `R` per axis.
//!
//! The innovation log-likelihood is maximised over the logarithms of the parameters by
//! coordinate ascent with golden-section line searches. Starting values come from the
//! moments of the first and second differences, and each line search spans a factor of
//! about 3,000 either side, so badly scaled data (prices in EUR/MWh sampled hourly, metres
//! at 2 kHz) fit the same way.

use crate::{Axis, AxisFilter, AxisParams, KalmanSpec, SequenceStats};

/// Rows used per axis for the fit: enough for a stable estimate, few enough to stay fast.
const MAX_FIT_ROWS: usize = 50_000;
const SWEEPS: usize = 3;
const LINE_SEARCH_ITERS: usize = 36;
const LOG_SPAN: f64 = 8.0;

/// Fits the parameters of every axis of `spec` on `segments` (each row-major
/// `[rows, features]`, gap-free). Returns one [`AxisParams`] per axis.
///
/// ```
/// use tns_data::synth::{trajectory, Regime, TrajectoryConfig};
/// use tns_kalman::{fit_params, Axis, KalmanSpec};
/// let cfg = TrajectoryConfig::compact(Regime::Cv, 20_000, 3);
/// let data = trajectory(&cfg);
/// let rows: Vec<&[f64]> = data.series()[0].segments.iter().map(|s| s.values.as_slice()).collect();
/// let spec = KalmanSpec { axes: vec![Axis { position: 0, velocity: Some(2) }], dt: cfg.dt };
/// let p = fit_params(&spec, &rows, 4)[0];
/// assert!((p.r_position / (cfg.pos_noise * cfg.pos_noise) - 1.0).abs() < 0.1);
/// ```
pub fn fit_params(spec: &KalmanSpec, segments: &[&[f64]], features: usize) -> Vec<AxisParams> {
    let mut budget = MAX_FIT_ROWS;
    let mut used: Vec<&[f64]> = Vec::new();
    for s in segments {
        if budget == 0 {
            break;
        }
        let rows = (s.len() / features).min(budget);
        if rows >= 3 {
            used.push(&s[..rows * features]);
            budget -= rows;
        }
    }
    spec.axes
        .iter()
        .map(|&axis| fit_axis(axis, spec.dt, &used, features))
        .collect()
}

fn fit_axis(axis: Axis, dt: f64, segments: &[&[f64]], features: usize) -> AxisParams {
    let start = moment_start(axis, dt, segments, features);
    // θ = [ln q, ln r_p, ln r_v?]
    let mut theta = vec![start.q.ln(), start.r_position.ln()];
    if let Some(rv) = start.r_velocity {
        theta.push(rv.ln());
    }
    let params_of = |t: &[f64]| AxisParams {
        q: t[0].exp(),
        r_position: t[1].exp(),
        r_velocity: t.get(2).map(|v| v.exp()),
        initial_velocity_var: start.initial_velocity_var,
    };
    let objective = |t: &[f64]| {
        let p = params_of(t);
        let mut total = SequenceStats::default();
        for s in segments {
            total.merge(&AxisFilter::run(axis, p, dt, s, features));
        }
        total.log_likelihood
    };
    for sweep in 0..SWEEPS {
        // Later sweeps search a narrower bracket around the current optimum.
        let span = LOG_SPAN / (1 << (2 * sweep)) as f64;
        for i in 0..theta.len() {
            let mut probe = theta.clone();
            let best = golden_section_max(theta[i] - span, theta[i] + span, |v| {
                probe[i] = v;
                objective(&probe)
            });
            theta[i] = best;
        }
    }
    params_of(&theta)
}

/// Moment estimates: measurement noise from the variance of first differences, process
/// noise from second differences, and the initial velocity spread from the first
/// differences divided by `dt`.
fn moment_start(axis: Axis, dt: f64, segments: &[&[f64]], features: usize) -> AxisParams {
    let diff_var = |col: usize, order: usize| {
        let mut acc = (0.0, 0usize);
        for s in segments {
            let x: Vec<f64> = s.chunks_exact(features).map(|r| r[col]).collect();
            let mut d = x;
            for _ in 0..order {
                d = d.windows(2).map(|w| w[1] - w[0]).collect();
            }
            acc.0 += d.iter().map(|v| v * v).sum::<f64>();
            acc.1 += d.len();
        }
        (acc.0 / acc.1.max(1) as f64).max(f64::MIN_POSITIVE.sqrt())
    };
    let d1 = diff_var(axis.position, 1);
    let d2 = diff_var(axis.position, 2);
    AxisParams {
        q: (d2 / dt.powi(4)).max(f64::MIN_POSITIVE.sqrt()),
        r_position: d2 / 6.0,
        r_velocity: axis.velocity.map(|c| diff_var(c, 1) / 2.0),
        initial_velocity_var: d1 / (dt * dt),
    }
}

/// Maximiser of a unimodal `f` on `[lo, hi]`.
fn golden_section_max(mut lo: f64, mut hi: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..LINE_SEARCH_ITERS {
        // NaN (a diverged filter) compares false and is treated as worse.
        if fa >= fb || fb.is_nan() {
            hi = b;
            b = a;
            fb = fa;
            a = hi - ratio * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + ratio * (hi - lo);
            fb = f(b);
        }
    }
    0.5 * (lo + hi)
}

//! Seeded, deterministic generators for the built-in demo and the tests.
//!
//! * [`trajectory`]: 2-D motion `[x, y, vx, vy]`, all four observed with Gaussian noise.
//! * [`ar_regime`]: the temporal-compare process
//!   `x_t = 0.8 x_{t-1} + drift(regime) + N(0, 0.3²)` plus an impulse every 37 steps.

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::{Dataset, Segment};

/// Motion regime of the trajectory generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Constant velocity with discrete white-noise acceleration: exactly the Kalman
    /// filter's model, so the filter is optimal (a sanity check for every network).
    Cv,
    /// Coordinated turns whose turn rate switches at random (exponential) times.
    Turn,
    /// A breathing spiral with exact derivatives.
    Spiral,
    /// Independent segments, each drawn from the three regimes above.
    Mixed,
}

impl std::str::FromStr for Regime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cv" => Ok(Self::Cv),
            "turn" => Ok(Self::Turn),
            "spiral" => Ok(Self::Spiral),
            "mixed" => Ok(Self::Mixed),
            _ => Err(format!(
                "unknown regime {s:?}; use cv, turn, spiral or mixed"
            )),
        }
    }
}

/// Settings of the trajectory generator (units: metres and seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryConfig {
    /// Motion regime.
    pub regime: Regime,
    /// Rows to generate (over all segments).
    pub rows: usize,
    /// Sampling interval in seconds.
    pub dt: f64,
    /// Typical initial speed (m/s).
    pub speed: f64,
    /// Standard deviation of the white-noise acceleration (m/s²), per axis.
    pub accel_std: f64,
    /// Standard deviation of the position measurement noise (m).
    pub pos_noise: f64,
    /// Standard deviation of the velocity measurement noise (m/s).
    pub vel_noise: f64,
    /// Largest absolute turn rate (rad/s) in the turn regime.
    pub max_turn_rate: f64,
    /// Mean time between turn-rate switches (s).
    pub mean_switch_time: f64,
    /// Rows per segment in the mixed regime.
    pub segment_rows: usize,
    /// Random seed.
    pub seed: u64,
}

impl TrajectoryConfig {
    /// The compact variant, 20 Hz sampling: used with 10-row windows → the next row.
    pub fn compact(regime: Regime, rows: usize, seed: u64) -> Self {
        Self {
            regime,
            rows,
            dt: 0.05,
            speed: 5.0,
            accel_std: 0.5,
            pos_noise: 0.05,
            vel_noise: 0.1,
            max_turn_rate: 1.0,
            mean_switch_time: 3.0,
            segment_rows: 400,
            seed,
        }
    }

    /// The seed design, 2 kHz sampling: used with 256-row windows → position 1000 rows
    /// (500 ms) ahead.
    pub fn seed_design(regime: Regime, rows: usize, seed: u64) -> Self {
        Self {
            dt: 0.0005,
            segment_rows: 20_000,
            ..Self::compact(regime, rows, seed)
        }
    }
}

/// Column names of trajectory data.
pub const TRAJECTORY_COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];

/// Generates trajectory data. Segments (one for a single regime, several for `mixed`) are
/// separated by a time gap so that no window spans two of them.
///
/// ```
/// use tns_data::synth::{trajectory, Regime, TrajectoryConfig};
/// let a = trajectory(&TrajectoryConfig::compact(Regime::Turn, 500, 1));
/// let b = trajectory(&TrajectoryConfig::compact(Regime::Turn, 500, 1));
/// assert_eq!(a, b); // seeded and deterministic
/// assert_eq!(a.columns(), ["x", "y", "vx", "vy"]);
/// ```
pub fn trajectory(config: &TrajectoryConfig) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut segments = Vec::new();
    let mut remaining = config.rows;
    let mut t0 = 0.0;
    while remaining > 0 {
        let (regime, rows) = match config.regime {
            Regime::Mixed => {
                let r = [Regime::Cv, Regime::Turn, Regime::Spiral][rng.random_range(0..3)];
                (r, remaining.min(config.segment_rows.max(1)))
            }
            r => (r, remaining),
        };
        let mut seg = match regime {
            Regime::Spiral => spiral_segment(config, rows, &mut rng),
            _ => motion_segment(config, regime, rows, &mut rng),
        };
        add_measurement_noise(config, &mut seg, &mut rng);
        seg.times = (0..rows).map(|i| t0 + i as f64 * config.dt).collect();
        // Leave a gap of 100 samples so loaders split the file back into segments.
        t0 += (rows + 100) as f64 * config.dt;
        remaining -= rows;
        segments.push(seg);
    }
    Dataset::single(
        TRAJECTORY_COLUMNS.iter().map(|c| c.to_string()).collect(),
        segments,
        config.dt,
    )
    .unwrap_or_else(|e| unreachable!("generator produced an inconsistent dataset: {e}"))
}

fn random_start(config: &TrajectoryConfig, rng: &mut ChaCha8Rng) -> [f64; 4] {
    let heading = rng.random_range(0.0..2.0 * PI);
    let speed = config.speed * rng.random_range(0.5..1.5);
    [
        rng.random_range(-50.0..50.0),
        rng.random_range(-50.0..50.0),
        speed * heading.cos(),
        speed * heading.sin(),
    ]
}

/// Constant velocity (turn rate 0) or coordinated turns, exact discretisation, plus
/// discrete white-noise acceleration held constant over each step.
fn motion_segment(
    config: &TrajectoryConfig,
    regime: Regime,
    rows: usize,
    rng: &mut ChaCha8Rng,
) -> Segment {
    let dt = config.dt;
    let accel = Normal::new(0.0, config.accel_std.max(0.0)).unwrap_or_else(|_| unreachable!());
    let [mut x, mut y, mut vx, mut vy] = random_start(config, rng);
    let mut omega = 0.0;
    let mut next_switch = 0.0;
    let mut values = Vec::with_capacity(rows * 4);
    for i in 0..rows {
        values.extend_from_slice(&[x, y, vx, vy]);
        let t = i as f64 * dt;
        if regime == Regime::Turn && t >= next_switch {
            omega = rng.random_range(-config.max_turn_rate..=config.max_turn_rate);
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            next_switch = t - config.mean_switch_time * u.ln();
        }
        let (ax, ay) = (accel.sample(rng), accel.sample(rng));
        if omega.abs() > 1e-9 {
            let (s, c) = (omega * dt).sin_cos();
            let (nx, ny) = (
                x + (s * vx - (1.0 - c) * vy) / omega,
                y + ((1.0 - c) * vx + s * vy) / omega,
            );
            let (nvx, nvy) = (c * vx - s * vy, s * vx + c * vy);
            (x, y, vx, vy) = (nx, ny, nvx, nvy);
        } else {
            x += vx * dt;
            y += vy * dt;
        }
        x += 0.5 * ax * dt * dt;
        y += 0.5 * ay * dt * dt;
        vx += ax * dt;
        vy += ay * dt;
    }
    Segment {
        values,
        times: Vec::new(),
    }
}

/// `r(t) = r0 (1 + 0.5 sin(μ t + φ))`, `θ(t) = θ0 + ω t`, with exact velocities.
fn spiral_segment(config: &TrajectoryConfig, rows: usize, rng: &mut ChaCha8Rng) -> Segment {
    let omega = rng.random_range(0.3..1.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let r0 = config.speed * rng.random_range(1.0..3.0);
    let mu = rng.random_range(0.05..0.3);
    let (phi, theta0) = (
        rng.random_range(0.0..2.0 * PI),
        rng.random_range(0.0..2.0 * PI),
    );
    let mut values = Vec::with_capacity(rows * 4);
    for i in 0..rows {
        let t = i as f64 * config.dt;
        let r = r0 * (1.0 + 0.5 * (mu * t + phi).sin());
        let dr = r0 * 0.5 * mu * (mu * t + phi).cos();
        let (s, c) = (theta0 + omega * t).sin_cos();
        values.extend_from_slice(&[r * c, r * s, dr * c - r * omega * s, dr * s + r * omega * c]);
    }
    Segment {
        values,
        times: Vec::new(),
    }
}

fn add_measurement_noise(config: &TrajectoryConfig, seg: &mut Segment, rng: &mut ChaCha8Rng) {
    let pos = Normal::new(0.0, config.pos_noise.max(0.0)).unwrap_or_else(|_| unreachable!());
    let vel = Normal::new(0.0, config.vel_noise.max(0.0)).unwrap_or_else(|_| unreachable!());
    for row in seg.values.chunks_exact_mut(4) {
        row[0] += pos.sample(rng);
        row[1] += pos.sample(rng);
        row[2] += vel.sample(rng);
        row[3] += vel.sample(rng);
    }
}

/// Settings of the AR-regime process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArRegimeConfig {
    /// Rows to generate.
    pub rows: usize,
    /// Per-step probability of switching to another regime.
    pub switch_prob: f64,
    /// Random seed.
    pub seed: u64,
}

/// Autoregressive coefficient of the AR-regime process.
pub const AR_COEF: f64 = 0.8;
/// Drift of each regime.
pub const AR_DRIFTS: [f64; 3] = [-0.2, 0.0, 0.2];
/// Innovation standard deviation.
pub const AR_NOISE: f64 = 0.3;
/// An impulse of this size is added every [`AR_IMPULSE_PERIOD`] steps.
pub const AR_IMPULSE: f64 = 1.0;
/// Period of the impulse.
pub const AR_IMPULSE_PERIOD: usize = 37;
/// A change beyond ± this value is class "down"/"up" in the 3-class task.
pub const AR_CLASS_THRESHOLD: f64 = 0.25;

/// AR-regime data plus the oracle: the conditional mean of each row given the past, the
/// regime and the impulse schedule (the best any forecaster can do).
#[derive(Debug, Clone, PartialEq)]
pub struct ArRegimeData {
    /// One column, `x`.
    pub dataset: Dataset,
    /// `E[x_t | x_{t-1}, regime_t, t]` for each row (row 0: its own value).
    pub oracle_mean: Vec<f64>,
}

/// Generates `x_t = 0.8 x_{t-1} + drift(regime_t) + impulse(t) + N(0, 0.3²)`.
///
/// ```
/// let d = tns_data::synth::ar_regime(&tns_data::synth::ArRegimeConfig { rows: 100, switch_prob: 0.02, seed: 3 });
/// assert_eq!(d.dataset.rows(), 100);
/// assert_eq!(d.oracle_mean.len(), 100);
/// ```
pub fn ar_regime(config: &ArRegimeConfig) -> ArRegimeData {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let noise = Normal::new(0.0, AR_NOISE).unwrap_or_else(|_| unreachable!());
    let mut regime = 1usize;
    let mut x = 0.0;
    let mut values = Vec::with_capacity(config.rows);
    let mut oracle_mean = Vec::with_capacity(config.rows);
    for t in 0..config.rows {
        if t == 0 {
            oracle_mean.push(x);
            values.push(x);
            continue;
        }
        if rng.random_bool(config.switch_prob.clamp(0.0, 1.0)) {
            regime = (regime + rng.random_range(1..3)) % 3;
        }
        let impulse = if t % AR_IMPULSE_PERIOD == 0 {
            AR_IMPULSE
        } else {
            0.0
        };
        let mean = AR_COEF * x + AR_DRIFTS[regime] + impulse;
        x = mean + noise.sample(&mut rng);
        oracle_mean.push(mean);
        values.push(x);
    }
    let times = (0..config.rows).map(|t| t as f64).collect();
    let dataset = Dataset::single(vec!["x".into()], vec![Segment { values, times }], 1.0)
        .unwrap_or_else(|e| unreachable!("generator produced an inconsistent dataset: {e}"));
    ArRegimeData {
        dataset,
        oracle_mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiral_velocities_are_the_derivatives_of_positions() {
        let mut cfg = TrajectoryConfig::compact(Regime::Spiral, 2000, 5);
        cfg.dt = 0.001;
        cfg.pos_noise = 0.0;
        cfg.vel_noise = 0.0;
        let d = trajectory(&cfg);
        let v = &d.series()[0].segments[0].values;
        for i in 1..1999 {
            let dx = (v[(i + 1) * 4] - v[(i - 1) * 4]) / (2.0 * cfg.dt);
            let dy = (v[(i + 1) * 4 + 1] - v[(i - 1) * 4 + 1]) / (2.0 * cfg.dt);
            assert!(
                (dx - v[i * 4 + 2]).abs() < 1e-3,
                "row {i}: {dx} vs {}",
                v[i * 4 + 2]
            );
            assert!((dy - v[i * 4 + 3]).abs() < 1e-3);
        }
    }

    #[test]
    fn turns_keep_speed_without_noise_and_change_heading() {
        let mut cfg = TrajectoryConfig::compact(Regime::Turn, 400, 9);
        cfg.accel_std = 0.0;
        cfg.pos_noise = 0.0;
        cfg.vel_noise = 0.0;
        let d = trajectory(&cfg);
        let v = &d.series()[0].segments[0].values;
        let speed = |i: usize| v[i * 4 + 2].hypot(v[i * 4 + 3]);
        let heading = |i: usize| v[i * 4 + 3].atan2(v[i * 4 + 2]);
        assert!((speed(0) - speed(399)).abs() < 1e-9);
        assert!((heading(0) - heading(399)).abs() > 1e-3);
        // Positions integrate the velocities exactly along the arc.
        let step = (v[4] - v[0]).hypot(v[5] - v[1]);
        assert!((step - speed(0) * cfg.dt).abs() < 1e-3 * step);
    }

    #[test]
    fn mixed_has_segments_and_cv_is_one_segment() {
        let mixed = trajectory(&TrajectoryConfig::compact(Regime::Mixed, 2000, 4));
        assert_eq!(mixed.series()[0].segments.len(), 5);
        assert_eq!(mixed.rows(), 2000);
        let cv = trajectory(&TrajectoryConfig::compact(Regime::Cv, 2000, 4));
        assert_eq!(cv.series()[0].segments.len(), 1);
        let other = trajectory(&TrajectoryConfig::compact(Regime::Cv, 2000, 5));
        assert_ne!(cv, other);
    }

    #[test]
    fn ar_regime_oracle_residuals_have_the_stated_noise() {
        let d = ar_regime(&ArRegimeConfig {
            rows: 20_000,
            switch_prob: 0.02,
            seed: 1,
        });
        let x = &d.dataset.series()[0].segments[0].values;
        let mse: f64 = x
            .iter()
            .zip(&d.oracle_mean)
            .skip(1)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / (x.len() - 1) as f64;
        assert!((mse - AR_NOISE * AR_NOISE).abs() < 0.005, "{mse}");
    }
}

//! The diagonal state-space model of [`Layer::S4dBlock`](crate::Layer::S4dBlock), in one
//! place for every backend.
//!
//! Per channel, `state` real modes `A_n = −exp(log_a_n)` and a step `Δ = exp(log_dt)`,
//! discretized by zero-order hold: `Ā_n = exp(Δ A_n)`, `B̄_n = (Ā_n − 1) / A_n` (with `B = 1`).
//! The output of a sequence `u` started from a zero state is
//! `z_t = Σ_n C_n s_{n,t} + D u_t` with `s_{n,t} = Ā_n s_{n,t−1} + B̄_n u_t`, which equals the
//! causal convolution `z_t = Σ_{k ≤ t} K_k u_{t−k} + D u_t` with the kernel
//! `K_k = Σ_n C_n B̄_n Ā_n^k`. The engine runs the recurrence (O(state) per step, what
//! streaming needs); training and the ONNX export use the kernel (one convolution).

/// The smallest step size the initialization draws (the S4D paper's).
pub const DT_MIN: f32 = 1e-3;
/// The largest step size the initialization draws.
pub const DT_MAX: f32 = 1e-1;

/// `(Ā, B̄)` of one mode from its stored `log_dt` and `log_a` (f64; `B̄` through `expm1`, so
/// it keeps its precision when `Δ A` is small).
pub fn discretize(log_dt: f64, log_a: f64) -> (f64, f64) {
    let a = -log_a.exp();
    let step = log_dt.exp() * a;
    (step.exp(), step.exp_m1() / a)
}

/// `(Ā, B̄)` of every mode, `[d, state]` each, from `log_dt` `[d]` and `log_a` `[d, state]`.
pub fn discretize_all(log_dt: &[f32], log_a: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let state = log_a.len() / log_dt.len().max(1);
    log_a
        .iter()
        .enumerate()
        .map(|(i, &la)| discretize(f64::from(log_dt[i / state.max(1)]), f64::from(la)))
        .unzip()
}

/// The convolution kernel `K` `[d, steps]` (`K[c][k] = Σ_n C_{c,n} B̄_{c,n} Ā_{c,n}^k`).
pub fn kernel(log_dt: &[f32], log_a: &[f32], c: &[f32], steps: usize) -> Vec<f64> {
    let (a_bar, b_bar) = discretize_all(log_dt, log_a);
    let state = log_a.len() / log_dt.len().max(1);
    let mut k = vec![0.0; log_dt.len() * steps];
    for (channel, row) in k.chunks_exact_mut(steps.max(1)).enumerate() {
        for n in channel * state..(channel + 1) * state {
            let mut term = f64::from(c[n]) * b_bar[n];
            for value in row.iter_mut() {
                *value += term;
                term *= a_bar[n];
            }
        }
    }
    k
}

/// The recurrence written plainly in f64, the reference the backends are tested against:
/// `u` is one sequence `[steps, d]`; `log_dt`, `log_a` `[d, state]`, `c` and `skip` as the
/// layer stores them. Returns `z` `[steps, d]`.
pub fn recurrence(log_dt: &[f64], log_a: &[f64], c: &[f64], skip: &[f64], u: &[f64]) -> Vec<f64> {
    let d = log_dt.len();
    let state = log_a.len() / d.max(1);
    let mut s = vec![0.0; d * state];
    let mut z = vec![0.0; u.len()];
    for (ut, zt) in u.chunks_exact(d.max(1)).zip(z.chunks_exact_mut(d.max(1))) {
        for ch in 0..d {
            zt[ch] = skip[ch] * ut[ch];
            for i in ch * state..(ch + 1) * state {
                let (a_bar, b_bar) = discretize(log_dt[ch], log_a[i]);
                s[i] = a_bar * s[i] + b_bar * ut[ch];
                zt[ch] += c[i] * s[i];
            }
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_convolution_kernel_matches_the_recurrence() {
        let (d, state, steps) = (3, 4, 200);
        let log_dt: Vec<f32> = (0..d)
            .map(|i| (0.002f32 * (i + 1) as f32 * 7.0).ln())
            .collect();
        let log_a: Vec<f32> = (0..d * state)
            .map(|i| ((i % state) as f32 + 1.0).ln() + 0.1 * i as f32)
            .collect();
        let c: Vec<f32> = (0..d * state)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let skip = [0.5, -0.25, 1.5];
        let u: Vec<f64> = (0..steps * d)
            .map(|i| ((i * 13 % 17) as f64 - 8.0) / 4.0)
            .collect();
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let expected = recurrence(&wide(&log_dt), &wide(&log_a), &wide(&c), &wide(&skip), &u);
        let k = kernel(&log_dt, &log_a, &c, steps);
        for t in 0..steps {
            for ch in 0..d {
                let conv: f64 = (0..=t)
                    .map(|j| k[ch * steps + j] * u[(t - j) * d + ch])
                    .sum();
                let got = conv + f64::from(skip[ch]) * u[t * d + ch];
                let want = expected[t * d + ch];
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "step {t} channel {ch}: kernel {got} recurrence {want}"
                );
            }
        }
    }

    #[test]
    fn zero_order_hold_tends_to_euler_for_small_steps() {
        // B̄ = (e^{ΔA} − 1)/A → Δ as Δ → 0, and Ā = e^{ΔA} stays in (0, 1).
        let (a_bar, b_bar) = discretize(1e-9f64.ln(), 3f64.ln());
        assert!((b_bar - 1e-9).abs() < 1e-17, "{b_bar}");
        assert!(a_bar < 1.0 && a_bar > 0.0);
        let (a_bar, b_bar) = discretize(0.5f64.ln(), 2f64.ln());
        assert!((a_bar - (-1f64).exp()).abs() < 1e-15);
        assert!((b_bar - (1.0 - (-1f64).exp()) / 2.0).abs() < 1e-15);
    }
}

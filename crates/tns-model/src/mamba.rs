//! The dimensions of a [`Layer::MambaBlock`](crate::Layer::MambaBlock) and the functions every
//! backend shares: the step-rank rule and softplus.

/// A Mamba block's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MambaDims {
    /// Residual channels `d`.
    pub d_model: usize,
    /// Inner channels `E = expand · d`.
    pub inner: usize,
    /// Modes per inner channel `N`.
    pub state: usize,
    /// Rank of the step projection `R = ⌈d / 16⌉` (Mamba's `dt_rank = "auto"`).
    pub rank: usize,
    /// Width of the causal depthwise convolution.
    pub conv: usize,
}

impl MambaDims {
    /// The sizes of a block over `d_model` channels.
    pub fn of(d_model: usize, state: usize, expand: usize, conv: usize) -> Self {
        Self {
            d_model,
            inner: expand * d_model,
            state,
            rank: d_model.div_ceil(16).max(1),
            conv,
        }
    }
}

/// `ln(1 + eˣ)`, without overflow for large `x` and without losing small values.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The `b` with `softplus(b) = y` (`y > 0`): `y + ln(1 − e^{−y})`.
pub fn softplus_inverse(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_inverts_and_keeps_its_range() {
        for y in [1e-4, 1e-3, 0.05, 0.1, 1.0, 30.0] {
            let b = softplus_inverse(y);
            assert!((softplus(b) - y).abs() <= 1e-12 * y.max(1.0), "{y}: {b}");
        }
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0);
        assert_eq!(MambaDims::of(32, 16, 2, 4).rank, 2);
        assert_eq!(MambaDims::of(8, 4, 2, 4).rank, 1);
    }
}

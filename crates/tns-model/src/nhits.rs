//! The pieces of [`Layer::Nhits`](crate::Layer::Nhits) every backend shares: the blocks with
//! their pooling, widths and tensor names, the pooling groups, and the interpolation of a
//! block's knots over the horizon.
//!
//! An N-HiTS block (Challu et al., 2023) reads the window's residual and the future block,
//! both max-pooled over time with its stack's kernel; a two-layer ReLU MLP maps them to a
//! backcast of the whole window (subtracted from the residual the next block reads) and a
//! few forecast knots per target, interpolated linearly over the horizon and summed over
//! the blocks. Stack `s` of `S` pools `pool^(S−1−s)` rows and forecasts
//! `max(H / pool^(S−1−s), 1)` knots: the first stacks see a coarse window and forecast
//! slow shapes, the last one every row and every step (NeuralForecast's defaults are
//! kernels 2, 2, 1 and knots H/4, H/2, H; `nhits:3,1,512,2` gives kernels 4, 2, 1).

use std::ops::Range;

use crate::{Layer, LayerNode};

/// One block of an N-HiTS layer, as every backend builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NhitsBlock {
    /// Name prefix of its tensors (`nhits.0`): `{prefix}.mlp.0.*`, `{prefix}.mlp.1.*`,
    /// `{prefix}.backcast.*` (all blocks but the last) and `{prefix}.forecast.*`.
    pub prefix: String,
    /// Rows per max-pooling group (kernel and stride).
    pub pool: usize,
    /// Pooled rows of the window.
    pub window_rows: usize,
    /// Pooled rows of the future block (0 without one).
    pub future_rows: usize,
    /// MLP input width: pooled window and pooled future block, flattened.
    pub inputs: usize,
    /// Forecast knots per target.
    pub knots: usize,
    /// Whether the block writes a backcast (every block but the last: nothing reads the
    /// last block's residual).
    pub backcast: bool,
}

/// What an N-HiTS layer reads and writes, from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhitsDims {
    /// Window rows `L`.
    pub steps: usize,
    /// Window channels `C`.
    pub channels: usize,
    /// Horizon `H`.
    pub horizon: usize,
    /// Targets `T` (the output is `[H, T]`).
    pub targets: usize,
    /// Future values per predicted step `F` (the future block is `[H, F]`).
    pub future: usize,
    /// MLP width.
    pub hidden: usize,
}

impl LayerNode {
    /// The dimensions of an N-HiTS layer (`None` for other layers).
    pub fn nhits_dims(&self) -> Option<NhitsDims> {
        match self.layer {
            Layer::Nhits {
                hidden,
                horizon,
                targets,
                future,
                ..
            } => {
                let channels = self.input.channels();
                Some(NhitsDims {
                    steps: self.input.len() / channels.max(1),
                    channels,
                    horizon,
                    targets,
                    future,
                    hidden,
                })
            }
            _ => None,
        }
    }

    /// The blocks of an N-HiTS layer, first to last (empty for other layers).
    pub fn nhits_blocks(&self) -> Vec<NhitsBlock> {
        let (
            Layer::Nhits {
                stacks,
                blocks,
                pool,
                ..
            },
            Some(d),
        ) = (self.layer, self.nhits_dims())
        else {
            return Vec::new();
        };
        let total = stacks * blocks;
        (0..total)
            .map(|k| {
                let ratio = pool.saturating_pow((stacks - 1 - k / blocks) as u32);
                let window_rows = d.steps.div_ceil(ratio);
                let future_rows = if d.future > 0 {
                    d.horizon.div_ceil(ratio)
                } else {
                    0
                };
                NhitsBlock {
                    prefix: format!("{}.{k}", self.name),
                    pool: ratio,
                    window_rows,
                    future_rows,
                    inputs: window_rows * d.channels + future_rows * d.future,
                    knots: (d.horizon / ratio).max(1),
                    backcast: k + 1 < total,
                }
            })
            .collect()
    }
}

/// The rows each max-pooling group of `rows` rows covers, in time order, anchored at the
/// last row: every group holds `pool` rows except the first, which holds what is left
/// (`rows mod pool` rows when that is not zero). The most recent rows always pool alike,
/// whatever the window's length (NeuralForecast pools the time-reversed window, the same
/// groups).
pub fn pool_groups(rows: usize, pool: usize) -> impl Iterator<Item = Range<usize>> {
    let pool = pool.max(1);
    let groups = rows.div_ceil(pool);
    (0..groups).map(move |g| {
        let end = rows - (groups - 1 - g) * pool;
        end.saturating_sub(pool)..end
    })
}

/// Linear interpolation of `knots` values over `horizon` steps, as PyTorch's
/// `F.interpolate(mode="linear", align_corners=False)` (NeuralForecast's): step `h` reads the
/// knot position `(h + ½)·knots/horizon − ½` (at least 0) and returns
/// `(1 − λ)·k[i] + λ·k[min(i + 1, knots − 1)]` with `i` its integer part and `λ` the rest.
/// One `(i, i + 1 or i, λ)` per step.
pub fn interpolation_taps(horizon: usize, knots: usize) -> Vec<(usize, usize, f64)> {
    let scale = knots as f64 / horizon.max(1) as f64;
    (0..horizon)
        .map(|h| {
            let position = ((h as f64 + 0.5) * scale - 0.5).max(0.0);
            let i = (position.floor() as usize).min(knots.saturating_sub(1));
            let next = (i + 1).min(knots.saturating_sub(1));
            (i, next, position - i as f64)
        })
        .collect()
}

/// [`interpolation_taps`] as a matrix `M [knots, horizon]`: `forecast[h] = Σ_j M[j, h] · k[j]`
/// (laid out so that a backend interpolates `[…, T, knots] · M`).
pub fn interpolation_matrix(horizon: usize, knots: usize) -> Vec<f64> {
    let mut m = vec![0.0; knots * horizon];
    for (h, (i, next, lambda)) in interpolation_taps(horizon, knots).into_iter().enumerate() {
        m[i * horizon + h] += 1.0 - lambda;
        m[next * horizon + h] += lambda;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetworkConfig, Shape};

    #[test]
    fn interpolation_matches_pytorchs_linear_formula() {
        // F.interpolate([[0, 1]], size=4, mode="linear") = [0, 0.25, 0.75, 1].
        let knots = [0.0, 1.0];
        let at = |h: usize, taps: &[(usize, usize, f64)]| {
            let (i, j, l) = taps[h];
            (1.0 - l) * knots[i] + l * knots[j]
        };
        let taps = interpolation_taps(4, 2);
        let values: Vec<f64> = (0..4).map(|h| at(h, &taps)).collect();
        assert_eq!(values, [0.0, 0.25, 0.75, 1.0]);
        // Direct formula over many sizes: the value at h of knots k_j = j² (a curve, so a
        // wrong position shows).
        for (horizon, n) in [(24, 6), (24, 12), (48, 5), (7, 3), (5, 5), (3, 1)] {
            let k: Vec<f64> = (0..n).map(|j| (j * j) as f64).collect();
            let m = interpolation_matrix(horizon, n);
            for h in 0..horizon {
                let x =
                    ((h as f64 + 0.5) * n as f64 / horizon as f64 - 0.5).clamp(0.0, n as f64 - 1.0);
                let (lo, hi) = (x.floor(), x.ceil());
                let direct = k[lo as usize] + (x - lo) * (k[hi as usize] - k[lo as usize]);
                let via: f64 = (0..n).map(|j| m[j * horizon + h] * k[j]).sum();
                assert!(
                    (direct - via).abs() < 1e-12,
                    "H {horizon} knots {n} step {h}"
                );
            }
            // Each step's weights sum to 1.
            assert!(
                (0..horizon)
                    .all(|h| ((0..n).map(|j| m[j * horizon + h]).sum::<f64>() - 1.0).abs() < 1e-12)
            );
        }
        // As many knots as steps: the identity.
        let id = interpolation_matrix(3, 3);
        assert_eq!(id, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn pooling_groups_end_at_the_last_row() {
        let groups: Vec<_> = pool_groups(7, 3).collect();
        assert_eq!(groups, [0..1, 1..4, 4..7]);
        assert_eq!(pool_groups(6, 2).collect::<Vec<_>>(), [0..2, 2..4, 4..6]);
        let short: Vec<_> = pool_groups(2, 4).collect();
        assert_eq!((short.len(), short[0].clone()), (1, 0..2));
        assert_eq!(pool_groups(3, 1).count(), 3);
    }

    #[test]
    fn nhits_blocks_and_parameters_follow_the_formula() {
        // L = 10, C = 3, H = 8, T = 2, F = 2; nhits:3,2,16,2 → kernels 4, 2, 1.
        let net: NetworkConfig = "nhits:3,2,16,2".parse().unwrap();
        assert_eq!(net.to_string(), "nhits:3,2,16,2");
        let input = Shape::Sequence {
            steps: 10,
            channels: 3,
        };
        let layers = net.layers(input, 8 * 2, 8, 16).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].output, Shape::Vector(16));
        let blocks = layers[0].nhits_blocks();
        let pools: Vec<_> = blocks.iter().map(|b| b.pool).collect();
        assert_eq!(pools, [4, 4, 2, 2, 1, 1]);
        let knots: Vec<_> = blocks.iter().map(|b| b.knots).collect();
        assert_eq!(knots, [2, 2, 4, 4, 8, 8]);
        let inputs: Vec<_> = blocks.iter().map(|b| b.inputs).collect();
        // ⌈10/4⌉·3 + ⌈8/4⌉·2 = 13, ⌈10/2⌉·3 + 4·2 = 23, 10·3 + 8·2 = 46.
        assert_eq!(inputs, [13, 13, 23, 23, 46, 46]);
        assert!(blocks[..5].iter().all(|b| b.backcast) && !blocks[5].backcast);
        let h = 16;
        let expected: usize = blocks
            .iter()
            .map(|b| {
                let backcast = if b.backcast { 30 * h + 30 } else { 0 };
                b.inputs * h + h + h * h + h + backcast + 2 * b.knots * h + 2 * b.knots
            })
            .sum();
        assert_eq!(layers[0].parameter_count(), expected);
        for bad in [
            "nhits:0,1,8,2",
            "nhits:1,0,8,2",
            "nhits:1,1,0,2",
            "nhits:1,1,8,0",
            "nhits:3,1,8",
            "nhits:64,1,8,2",
        ] {
            assert!(bad.parse::<NetworkConfig>().is_err(), "{bad} parsed");
        }
    }
}

//! Example networks that together use every [`Layer`](crate::Layer) type at two sizes or
//! more: what the conformance suite runs through every backend, and what a new layer type
//! adds an entry to.

use crate::NetworkConfig;

/// Window shapes `(lookback, features)` the conformance suite runs every example at.
pub const WINDOWS: [(usize, usize); 2] = [(6, 2), (10, 4)];

/// Known-future widths (values per predicted step) the suite runs every example with:
/// none, and two (a covariate column and one calendar pair are typical).
pub const FUTURE_WIDTHS: [usize; 2] = [0, 2];

/// Small networks covering every layer type, each at two sizes or more.
pub fn networks() -> Vec<NetworkConfig> {
    vec![
        NetworkConfig::Linear,
        NetworkConfig::Mlp { hidden: vec![8] },
        NetworkConfig::Mlp {
            hidden: vec![24, 12],
        },
        NetworkConfig::Gru { hidden: 5 },
        NetworkConfig::Gru { hidden: 16 },
        NetworkConfig::Lstm {
            hidden: 4,
            layers: 1,
        },
        NetworkConfig::Lstm {
            hidden: 6,
            layers: 2,
        },
        NetworkConfig::Tcn {
            channels: 3,
            kernel: 2,
            levels: 3,
        },
        NetworkConfig::Tcn {
            channels: 4,
            kernel: 3,
            levels: 2,
        },
        NetworkConfig::DLinear { kernel: 3 },
        NetworkConfig::DLinear { kernel: 5 },
        NetworkConfig::NHits {
            stacks: 2,
            blocks: 1,
            hidden: 8,
            pool: 2,
        },
        NetworkConfig::NHits {
            stacks: 3,
            blocks: 2,
            hidden: 6,
            pool: 2,
        },
        NetworkConfig::Transformer {
            d_model: 8,
            heads: 2,
            kv_heads: 1,
            layers: 1,
            patch: 1,
            stride: None,
            causal: true,
            flatten: false,
            independent: false,
        },
        NetworkConfig::Transformer {
            d_model: 8,
            heads: 4,
            kv_heads: 2,
            layers: 2,
            patch: 2,
            stride: None,
            causal: false,
            flatten: false,
            independent: false,
        },
        // Overlapping patches (PatchTST's stride) and a head on every token.
        NetworkConfig::Transformer {
            d_model: 8,
            heads: 2,
            kv_heads: 2,
            layers: 1,
            patch: 4,
            stride: Some(2),
            causal: false,
            flatten: true,
            independent: false,
        },
        // Channel independence (PatchTST): each channel its own causal token sequence.
        NetworkConfig::Transformer {
            d_model: 8,
            heads: 2,
            kv_heads: 1,
            layers: 2,
            patch: 2,
            stride: Some(1),
            causal: true,
            flatten: true,
            independent: true,
        },
        NetworkConfig::S4d {
            d_model: 4,
            state: 3,
            layers: 1,
        },
        NetworkConfig::S4d {
            d_model: 6,
            state: 8,
            layers: 2,
        },
        NetworkConfig::Mamba {
            d_model: 4,
            state: 3,
            expand: 2,
            conv: 2,
            layers: 1,
        },
        NetworkConfig::Mamba {
            d_model: 6,
            state: 4,
            expand: 2,
            conv: 4,
            layers: 2,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layer, Shape};

    #[test]
    fn examples_cover_every_layer_type_at_two_sizes() {
        for ty in Layer::TYPES {
            let sizes: std::collections::BTreeSet<(usize, usize)> = WINDOWS
                .iter()
                .flat_map(|&(steps, channels)| {
                    let input = Shape::Sequence { steps, channels };
                    FUTURE_WIDTHS
                        .iter()
                        .flat_map(|&future| {
                            networks()
                                .iter()
                                .flat_map(move |n| n.layers(input, 2 * future, 2, 2).unwrap())
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|l| l.layer.type_name() == ty.type_name())
                .map(|l| (l.input.len(), l.output.len()))
                .collect();
            assert!(
                sizes.len() >= 2,
                "layer type {} appears at sizes {sizes:?} in the examples; add examples",
                ty.type_name()
            );
        }
    }
}

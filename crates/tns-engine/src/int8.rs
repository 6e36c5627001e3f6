//! INT8 dense layers: per-output-channel INT8 weights, activations quantized on the fly to
//! 16-bit integers, products accumulated exactly in 32-bit integers.
//!
//! `y[o] = b[o] + s_w[o] · s_x · Σ_j q_w[o, j] · q_x[j]`, with `s_x = max|x| / A` per input
//! vector. `A` is as large as the i32 accumulator allows for this layer's width
//! (`A ≤ 32767`, `2 · ⌈n/2⌉ · 127 · A < 2³¹`), so activations keep 14–16 bits and the
//! accuracy change is the weights' 8 bits, not the activations'. The integer sums are exact,
//! so the AVX2 (`vpmaddwd`: 16 multiply–adds per instruction, twice the f32 FMA rate) and
//! the portable build produce identical accumulators; the f32 epilogue is the same scalar
//! code in both.

use tns_format::quantized_codes;
use tns_model::NamedTensor;

use crate::EngineError;
use crate::aligned::Aligned;
use crate::kernels::Kernels;

/// Output channels per packed block (one 256-bit register of i32 accumulators).
pub(crate) const BLOCK: usize = 8;

/// A dense layer with INT8 weights, packed for [`Kernels::qgemv`]: for each block of 8
/// outputs and each pair of inputs `(2p, 2p+1)`, 16 i16 values `w[o, 2p], w[o, 2p+1]` for
/// the block's 8 outputs (zero-padded).
#[derive(Debug, Clone)]
pub(crate) struct QDense {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pairs: usize,
    blocks: usize,
    packed: Aligned<i16>,
    scales: Aligned<f32>,
    bias: Aligned<f32>,
    /// Largest activation code `A`.
    limit: f32,
}

/// Buffers of one quantized product: activation codes (even length, zero-padded) and the
/// accumulators.
#[derive(Debug, Clone)]
pub(crate) struct QuantScratch {
    codes: Aligned<i16>,
    acc: Aligned<i32>,
}

impl QuantScratch {
    /// Bytes its buffers hold on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.codes.heap_bytes() + self.acc.heap_bytes()
    }

    /// Buffers for layers up to `inputs` wide and `outputs` tall.
    pub(crate) fn new(inputs: usize, outputs: usize) -> Self {
        Self {
            codes: Aligned::zeros(2 * inputs.div_ceil(2)),
            acc: Aligned::zeros(outputs.div_ceil(BLOCK) * BLOCK),
        }
    }
}

impl QDense {
    /// Packs a quantized weight (`q · s` values, as the model file loads them) with its row
    /// scales and bias.
    pub(crate) fn new(
        weight: &NamedTensor,
        scales: &NamedTensor,
        bias: &NamedTensor,
    ) -> Result<Self, EngineError> {
        let (outputs, inputs) = (weight.shape[0], weight.shape[1]);
        let codes = quantized_codes(weight, &scales.data).ok_or_else(|| {
            EngineError::Model(format!(
                "{} is declared INT8 but its values are not codes × scales",
                weight.name
            ))
        })?;
        let (pairs, blocks) = (inputs.div_ceil(2), outputs.div_ceil(BLOCK));
        let mut packed = Aligned::zeros(blocks * pairs * 2 * BLOCK);
        for (o, row) in codes.chunks_exact(inputs.max(1)).enumerate() {
            let (b, lane) = (o / BLOCK, o % BLOCK);
            for (j, &q) in row.iter().enumerate() {
                let (p, k) = (j / 2, j % 2);
                packed[((b * pairs + p) * BLOCK + lane) * 2 + k] = i16::from(q);
            }
        }
        let limit = (i32::MAX as usize / (2 * pairs.max(1) * 127)).min(i16::MAX as usize);
        Ok(Self {
            inputs,
            outputs,
            pairs,
            blocks,
            packed,
            scales: Aligned::from_slice(&scales.data),
            bias: Aligned::from_slice(&bias.data),
            limit: limit as f32,
        })
    }

    /// Bytes of weight codes (one per weight; the in-memory i16 packing is an engine detail).
    pub(crate) fn code_bytes(&self) -> usize {
        self.inputs * self.outputs
    }

    /// `y = b + W x`. No allocation.
    #[inline(always)]
    pub(crate) fn forward<K: Kernels>(&self, x: &[f32], y: &mut [f32], s: &mut QuantScratch) {
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !(max > 0.0 && max.is_finite()) {
            // All zero: the product is zero. Non-finite: let it propagate as the f32 path would.
            let fill = if max == 0.0 { 0.0 } else { f32::NAN };
            for (yo, &b) in y.iter_mut().zip(&self.bias) {
                *yo = b + fill;
            }
            return;
        }
        let to_code = self.limit / max;
        let codes = &mut s.codes[..2 * self.pairs];
        // |x · to_code| ≤ A ≤ 32767, so the conversions cannot saturate; a simple loop over
        // contiguous values, which the compiler vectorizes.
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (v * to_code).round_ties_even() as i32 as i16;
        }
        if self.inputs % 2 == 1 {
            codes[self.inputs] = 0;
        }
        let acc = &mut s.acc[..self.blocks * BLOCK];
        K::qgemv(&self.packed, codes, acc);
        let step = max / self.limit;
        for (((yo, &a), &sw), &b) in y
            .iter_mut()
            .zip(acc.iter())
            .zip(&self.scales)
            .zip(&self.bias)
        {
            *yo = b + (sw * step) * a as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Portable;

    /// A quantized layer of `rows × cols` with varied magnitudes per row.
    fn layer(rows: usize, cols: usize) -> QDense {
        let w = NamedTensor {
            name: "t.weight".into(),
            shape: vec![rows, cols],
            data: (0..rows * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0 * (1.0 + (i / cols) as f32))
                .collect(),
        };
        let b = NamedTensor {
            name: "t.bias".into(),
            shape: vec![rows],
            data: (0..rows).map(|r| r as f32 * 0.01).collect(),
        };
        let names = [w.name.clone()];
        let (_, q) = tns_format::quantize_int8(&[w, b.clone()], &names).unwrap();
        QDense::new(&q[0], &q[1], &b).unwrap()
    }

    fn check<K: Kernels>() {
        // Odd widths exercise the zero-padded pair, heights the partial block; 1024 inputs
        // is the seed shape's flattened window (the accumulator bound is tightest there).
        for (rows, cols) in [(1, 1), (7, 3), (96, 4), (96, 32), (131, 17), (4, 1024)] {
            let q = layer(rows, cols);
            let x: Vec<f32> = (0..cols).map(|j| (j as f32 * 0.3).sin() * 3.0).collect();
            let mut s = QuantScratch::new(cols, rows);
            let mut y = vec![f32::NAN; rows];
            q.forward::<K>(&x, &mut y, &mut s);
            // Exact reference of the same integer formula, in i64.
            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let codes: Vec<i64> = x
                .iter()
                .map(|v| (v * (q.limit / max)).round_ties_even() as i64)
                .collect();
            let step = max / q.limit;
            for (o, &got) in y.iter().enumerate() {
                let acc: i64 = (0..cols)
                    .map(|j| {
                        let (b, lane, p, k) = (o / BLOCK, o % BLOCK, j / 2, j % 2);
                        i64::from(q.packed[((b * q.pairs + p) * BLOCK + lane) * 2 + k]) * codes[j]
                    })
                    .sum();
                let want = q.bias[o] + (q.scales[o] * step) * acc as f32;
                assert_eq!(got, want, "{rows}×{cols} output {o}");
                // And close to the f32 product with the dequantized weights: only the
                // activation rounding (≤ half a step per input) separates them.
                let exact: f64 = (0..cols)
                    .map(|j| {
                        let (b, lane, p, k) = (o / BLOCK, o % BLOCK, j / 2, j % 2);
                        f64::from(q.packed[((b * q.pairs + p) * BLOCK + lane) * 2 + k])
                            * f64::from(q.scales[o])
                            * f64::from(x[j])
                    })
                    .sum::<f64>()
                    + f64::from(q.bias[o]);
                let bound = 0.5 * f64::from(step) * f64::from(q.scales[o]) * 127.0 * cols as f64;
                assert!(
                    (f64::from(y[o]) - exact).abs() <= bound + 1e-5,
                    "{rows}×{cols}"
                );
            }
        }
        // A zero input gives the bias exactly.
        let q = layer(9, 5);
        let mut y = vec![f32::NAN; 9];
        q.forward::<K>(&[0.0; 5], &mut y, &mut QuantScratch::new(5, 9));
        assert_eq!(y, &q.bias[..]);
    }

    #[test]
    fn int8_products_are_exact_portable() {
        check::<Portable>();
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn int8_products_are_exact_avx2() {
        if crate::Isa::detect() == crate::Isa::Avx2Fma {
            check::<crate::kernels::Avx2>();
        }
    }

    /// Every code at its extreme (weights ±127, activations ±A) on the widest layers: the
    /// i32 accumulator must hold the sum.
    fn extreme_inputs<K: Kernels>() {
        for cols in [1usize, 33, 1024, 1 << 14] {
            let weight = |sign: f32| NamedTensor {
                name: "w".into(),
                shape: vec![2, cols],
                data: vec![sign; 2 * cols],
            };
            let bias = NamedTensor {
                name: "b".into(),
                shape: vec![2],
                data: vec![0.0; 2],
            };
            let mut w = weight(1.0);
            w.data[cols..].fill(-1.0);
            let names = [w.name.clone()];
            let (_, q) = tns_format::quantize_int8(&[w], &names).unwrap();
            let layer = QDense::new(&q[0], &q[1], &bias).unwrap();
            let mut y = [0f32; 2];
            layer.forward::<K>(&vec![1.0; cols], &mut y, &mut QuantScratch::new(cols, 2));
            let want = cols as f32 * q[1].data[0] * 127.0;
            assert!(
                (y[0] - want).abs() <= 1e-5 * want,
                "{cols}: {} vs {want}",
                y[0]
            );
            assert!(
                (y[1] + want).abs() <= 1e-5 * want,
                "{cols}: {} vs -{want}",
                y[1]
            );
        }
    }

    #[test]
    fn the_accumulator_holds_extreme_sums_portable() {
        extreme_inputs::<Portable>();
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_accumulator_holds_extreme_sums_avx2() {
        if crate::Isa::detect() == crate::Isa::Avx2Fma {
            extreme_inputs::<crate::kernels::Avx2>();
        }
    }
}

//! Mamba's short causal depthwise convolution as one Candle op with a hand-written backward
//! pass.
//!
//! Per sequence, channel `e` and row `t`: `y_t = bias_e + Σ_j w_{e,j} v_{t−(k−1−j)}` (`k` taps;
//! rows before the first read zeros). As a graph of Candle ops it was a copy, a broadcast
//! product and a broadcast sum per tap over `[B, L, E]`, and its backward pass reduced every
//! tap's product over batch and time on one thread; here the forward is one pass over the
//! rows, the backward one more, rows of the batch in parallel in fixed shards of
//! [`SHARD_ROWS`](super::SHARD_ROWS). The forward adds the taps in the graph's order (the
//! same values); the weight gradients are summed in shard order, so a result does not depend
//! on the number of threads.

use candle_core::{Shape, Tensor};
use rayon::prelude::*;

use super::{Fused3, Kernels3, Real, SHARD_ROWS};

/// The convolution of `v` `[B, L, E]` with taps `w` `[E, k]` and `bias` `[E]` → `[B, L, E]`.
/// All f32 or all f64.
pub fn causal_depthwise_conv(v: &Tensor, w: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    v.contiguous()?.apply_op3(
        &w.contiguous()?,
        &bias.contiguous()?,
        Fused3(CausalDepthwiseConv),
    )
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    channels: usize,
    taps: usize,
}

impl Dims {
    fn of(v: &Shape, w: &Shape, bias: &Shape) -> candle_core::Result<Self> {
        let (batch, steps, channels) = v.dims3()?;
        let (rows, taps) = w.dims2()?;
        if rows != channels || taps == 0 || bias.elem_count() != channels {
            return Err(candle_core::Error::Msg(format!(
                "causal depthwise convolution: inputs {v:?}, taps {w:?} and bias {bias:?} do not fit (expected [B, L, E], [E, k] and [E], k ≥ 1)"
            )));
        }
        Ok(Self {
            batch,
            steps,
            channels,
            taps,
        })
    }

    /// How many rows back tap `j` reads.
    fn lag(&self, j: usize) -> usize {
        self.taps - 1 - j
    }
}

/// `w` `[E, k]` as `[k, E]`, so that a tap's weights lie along the channels.
fn by_tap<T: Real>(w: &[T], d: Dims) -> Vec<T> {
    (0..d.taps)
        .flat_map(|j| (0..d.channels).map(move |e| w[e * d.taps + j]))
        .collect()
}

/// One sequence `v` `[L, E]` → `y` `[L, E]`, `taps` as [`by_tap`] lays them out.
fn forward_row<T: Real>(v: &[T], taps: &[T], bias: &[T], d: Dims, y: &mut [T]) {
    let e = d.channels;
    for (t, yt) in y.chunks_exact_mut(e).enumerate() {
        yt.copy_from_slice(bias);
        for (j, w) in taps.chunks_exact(e).enumerate() {
            // Rows before the first are zeros: their terms add nothing.
            let Some(source) = t.checked_sub(d.lag(j)) else {
                continue;
            };
            let vs = &v[source * e..][..e];
            for ((y, &w), &x) in yt.iter_mut().zip(w).zip(vs) {
                *y = w * x + *y;
            }
        }
    }
}

/// One sequence's gradients from `g` `[L, E]`: writes `dv` `[L, E]`, adds to `d_taps` `[k, E]`
/// and `d_bias` `[E]`.
fn backward_row<T: Real>(
    v: &[T],
    taps: &[T],
    g: &[T],
    d: Dims,
    dv: &mut [T],
    d_taps: &mut [T],
    d_bias: &mut [T],
) {
    let e = d.channels;
    for (t, gt) in g.chunks_exact(e).enumerate() {
        for (b, &x) in d_bias.iter_mut().zip(gt) {
            *b = *b + x;
        }
        let tap_rows = taps.chunks_exact(e).zip(d_taps.chunks_exact_mut(e));
        for (j, (w, dw)) in tap_rows.enumerate() {
            let Some(source) = t.checked_sub(d.lag(j)) else {
                continue;
            };
            let vs = &v[source * e..][..e];
            let dvs = &mut dv[source * e..][..e];
            for c in 0..e {
                dvs[c] = w[c] * gt[c] + dvs[c];
                dw[c] = vs[c] * gt[c] + dw[c];
            }
        }
    }
}

/// The kernels of the op on `(v, w, bias)`.
struct CausalDepthwiseConv;

impl Kernels3 for CausalDepthwiseConv {
    type Dims = Dims;

    fn name(&self) -> &'static str {
        "causal depthwise convolution"
    }

    fn dims(&self, v: &Shape, w: &Shape, bias: &Shape) -> candle_core::Result<Dims> {
        Dims::of(v, w, bias)
    }

    fn output_shape(&self, d: Dims) -> Shape {
        Shape::from((d.batch, d.steps, d.channels))
    }

    fn forward<T: Real>(&self, v: &[T], w: &[T], bias: &[T], d: Dims) -> Vec<T> {
        let taps = by_tap(w, d);
        let per_row = (d.steps * d.channels).max(1);
        let mut y = vec![T::zero(); d.batch * d.steps * d.channels];
        y.par_chunks_mut(per_row)
            .zip(v.par_chunks(per_row))
            .for_each(|(y, v)| forward_row(v, &taps, bias, d, y));
        y
    }

    fn backward<T: Real>(
        &self,
        v: &[T],
        w: &[T],
        _: &[T],
        g: &[T],
        d: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let taps = by_tap(w, d);
        let (per_row, e) = ((d.steps * d.channels).max(1), d.channels);
        let mut dv = vec![T::zero(); v.len()];
        let partials: Vec<(Vec<T>, Vec<T>)> = dv
            .par_chunks_mut(SHARD_ROWS * per_row)
            .zip(v.par_chunks(SHARD_ROWS * per_row))
            .zip(g.par_chunks(SHARD_ROWS * per_row))
            .map(|((dv, v), g)| {
                let (mut d_taps, mut d_bias) = (vec![T::zero(); taps.len()], vec![T::zero(); e]);
                let rows = dv
                    .chunks_exact_mut(per_row)
                    .zip(v.chunks_exact(per_row))
                    .zip(g.chunks_exact(per_row));
                for ((dv, v), g) in rows {
                    backward_row(v, &taps, g, d, dv, &mut d_taps, &mut d_bias);
                }
                (d_taps, d_bias)
            })
            .collect();
        let (mut d_taps, mut d_bias) = (vec![T::zero(); taps.len()], vec![T::zero(); e]);
        for (dt, db) in partials {
            for (sum, x) in d_taps.iter_mut().zip(dt) {
                *sum = *sum + x;
            }
            for (sum, x) in d_bias.iter_mut().zip(db) {
                *sum = *sum + x;
            }
        }
        // Back from `[k, E]` to the weight's `[E, k]`.
        let dw = (0..e)
            .flat_map(|c| (0..d.taps).map(move |j| (c, j)))
            .map(|(c, j)| d_taps[j * e + c])
            .collect();
        (dv, dw, d_bias)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// `(v, w, bias)` in f64 and their sizes: 4 taps over 7 rows, so that the first rows'
    /// taps reach before the first row.
    fn case(batch: usize) -> ([Vec<f64>; 3], Dims) {
        let d = Dims {
            batch,
            steps: 7,
            channels: 5,
            taps: 4,
        };
        let wave = |n: usize, k: usize| -> Vec<f64> {
            (0..n)
                .map(|i| ((i * k % 23) as f64 - 11.0) / 13.0)
                .collect()
        };
        let n = d.batch * d.steps * d.channels;
        (
            [
                wave(n, 7),
                wave(d.channels * d.taps, 5),
                wave(d.channels, 3),
            ],
            d,
        )
    }

    /// The convolution as the definition reads, one output at a time.
    fn plain(x: &[Vec<f64>], d: Dims) -> Vec<f64> {
        let (v, w, bias) = (&x[0], &x[1], &x[2]);
        let mut y = Vec::with_capacity(v.len());
        for b in 0..d.batch {
            for t in 0..d.steps {
                for e in 0..d.channels {
                    let mut sum = bias[e];
                    for j in 0..d.taps {
                        if let Some(s) = t.checked_sub(d.lag(j)) {
                            sum += w[e * d.taps + j] * v[(b * d.steps + s) * d.channels + e];
                        }
                    }
                    y.push(sum);
                }
            }
        }
        y
    }

    fn vars(x: &[Vec<f64>], d: Dims) -> Vec<Var> {
        let cpu = &Device::Cpu;
        vec![
            Var::from_slice(&x[0], (d.batch, d.steps, d.channels), cpu).unwrap(),
            Var::from_slice(&x[1], (d.channels, d.taps), cpu).unwrap(),
            Var::from_slice(&x[2], d.channels, cpu).unwrap(),
        ]
    }

    fn conv(v: &[Var]) -> Tensor {
        causal_depthwise_conv(&v[0], &v[1], &v[2]).unwrap()
    }

    #[test]
    fn the_convolution_matches_its_definition() {
        let (x, d) = case(3);
        let got = conv(&vars(&x, d))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let want = plain(&x, d);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn the_convolution_gradients_match_finite_differences() {
        let (x, d) = case(3);
        let n = d.batch * d.steps * d.channels;
        let weights: Vec<f64> = (0..n).map(|i| ((i * 5 % 7) as f64 - 3.0) / 7.0).collect();
        let v = vars(&x, d);
        let w = Tensor::from_slice(&weights, (d.batch, d.steps, d.channels), &Device::Cpu).unwrap();
        let grads = (conv(&v) * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &v, &x, |x| {
            plain(x, d).iter().zip(&weights).map(|(o, w)| o * w).sum()
        });
    }

    #[test]
    fn the_convolution_does_not_depend_on_the_thread_count() {
        // More rows than one shard, so that the weight gradients are summed over shards.
        let (x, d) = case(2 * SHARD_ROWS + 3);
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let cpu = &Device::Cpu;
                let v = [
                    Var::from_slice(&narrow(&x[0]), (d.batch, d.steps, d.channels), cpu),
                    Var::from_slice(&narrow(&x[1]), (d.channels, d.taps), cpu),
                    Var::from_slice(&narrow(&x[2]), d.channels, cpu),
                ]
                .map(Result::unwrap);
                let y = causal_depthwise_conv(&v[0], &v[1], &v[2]).unwrap();
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![y.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
                for var in &v {
                    let g = grads.get(var.as_tensor()).unwrap();
                    out.push(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
                out
            })
        };
        assert_eq!(run(1), run(3));
    }
}

//! The transformer's attention as one Candle op with a hand-written backward pass:
//! `softmax(scale · Q Kᵀ) V` per head, grouped-query (a key/value head serves `H / KV` query
//! heads), causal or not.
//!
//! Why: as a graph it was the keys' and values' copies for each query head of their group,
//! a transposed copy of the keys, a batched product, the softmax, another product, and the
//! backward of each (four products, the group's sums), every one a tensor. Here a query's
//! scores live in one buffer of `P` values: the forward pass computes a query row's weights
//! and mixes the values; the backward pass recomputes the weights row by row (nothing is kept
//! between the passes) and accumulates the keys' and values' gradients into their own head.
//! Sequences of the batch run in parallel; within one, heads and queries go in order, so a
//! result does not depend on the number of threads.

use candle_core::{Shape, Tensor};
use rayon::prelude::*;

use super::{Fused3, Kernels3, Loops, MulAdd, Real, run_best, transpose_into};

/// `softmax(scale · q kᵀ) v` for `q` `[B, H, P, D]` and `k`, `v` `[B, KV, P, D]` (`KV`
/// dividing `H`; query head `h` reads key/value head `h / (H / KV)`) → `[B, H, P, D]`. With
/// `causal`, query `i` weighs only keys `j ≤ i`. All f32 or all f64.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Fused3(Attention { scale, causal }),
    )
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    tokens: usize,
    width: usize,
}

impl Dims {
    fn of(q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Self> {
        let (batch, heads, tokens, width) = q.dims4()?;
        let fits = match k.dims() {
            [b, kv_heads, p, d] => {
                *b == batch
                    && *kv_heads > 0
                    && heads % kv_heads == 0
                    && *p == tokens
                    && *d == width
                    && k == v
            }
            _ => false,
        };
        if !fits {
            return Err(candle_core::Error::Msg(format!(
                "attention: queries {q:?}, keys {k:?} and values {v:?} do not fit (expected [B, H, P, D] and [B, KV, P, D] twice, KV dividing H)"
            )));
        }
        Ok(Self {
            batch,
            heads,
            kv_heads: k.dims()[1],
            tokens,
            width,
        })
    }

    /// Values of one head, `[P, D]`.
    fn head(self) -> usize {
        self.tokens * self.width
    }
}

/// The op on `(q, k, v)`.
struct Attention {
    scale: f64,
    causal: bool,
}

impl Attention {
    /// Keys that query `i` weighs.
    fn keys(&self, i: usize, d: Dims) -> usize {
        if self.causal { i + 1 } else { d.tokens }
    }

    fn scale<T: Real>(&self) -> T {
        T::from(self.scale).unwrap_or_else(T::one)
    }
}

/// `out[j] = Σ_c x[c] · by_column[c·P + j]` for the first `out.len()` keys: one query (or one
/// output gradient) against every key (or value) at once, each column a multiply-add along the
/// keys.
#[inline(always)]
fn against_columns<T: Real, M: MulAdd>(x: &[T], by_column: &[T], tokens: usize, out: &mut [T]) {
    out.iter_mut().for_each(|o| *o = T::zero());
    for (c, &xc) in x.iter().enumerate() {
        let column = &by_column[c * tokens..][..out.len()];
        for (o, &k) in out.iter_mut().zip(column) {
            *o = M::mul_add(xc, k, *o);
        }
    }
}

/// Query `qi`'s weights over the keys `keys_t` (`[D, P]`), written to `w` (one per key it
/// weighs).
#[inline(always)]
fn weights<T: Real, M: MulAdd>(qi: &[T], keys_t: &[T], tokens: usize, scale: T, w: &mut [T]) {
    against_columns::<T, M>(qi, keys_t, tokens, w);
    let max = w.iter().fold(T::neg_infinity(), |m, &v| m.max(v * scale));
    w.iter_mut().for_each(|v| *v = *v * scale - max);
    T::exp_in_place(w);
    let sum = w.iter().fold(T::zero(), |s, &v| s + v);
    w.iter_mut().for_each(|v| *v = *v / sum);
}

/// One sequence forward: `out` `[H, P, D]` from its queries `[H, P, D]` and keys and values
/// `[KV, P, D]`.
#[inline(always)]
fn forward_sequence<T: Real, M: MulAdd>(
    op: &Attention,
    (q, k, v): (&[T], &[T], &[T]),
    d: Dims,
    out: &mut [T],
) {
    let (head, group, scale) = (d.head(), d.heads / d.kv_heads, op.scale::<T>());
    // A key/value head's keys as `[D, P]`, so that a product with one query runs along the
    // keys; transposed once for its group.
    let mut keys_t = vec![T::zero(); head];
    let mut w = vec![T::zero(); d.tokens];
    for (h, out) in out.chunks_exact_mut(head).enumerate() {
        let kv = (h / group) * head;
        if h % group == 0 {
            transpose_into(&k[kv..kv + head], d.tokens, d.width, &mut keys_t);
        }
        let values = &v[kv..kv + head];
        let queries = &q[h * head..][..head];
        for (i, (qi, oi)) in queries
            .chunks_exact(d.width)
            .zip(out.chunks_exact_mut(d.width))
            .enumerate()
        {
            let w = &mut w[..op.keys(i, d)];
            weights::<T, M>(qi, &keys_t, d.tokens, scale, w);
            for (&wj, vj) in w.iter().zip(values.chunks_exact(d.width)) {
                for (o, &x) in oi.iter_mut().zip(vj) {
                    *o = M::mul_add(wj, x, *o);
                }
            }
        }
    }
}

/// One sequence backward from the output's gradient `g` `[H, P, D]`: writes `dq` `[H, P, D]`
/// and `dk`, `dv` `[KV, P, D]` (each key/value head's summed over its group, in head order).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_sequence<T: Real, M: MulAdd>(
    op: &Attention,
    (q, k, v): (&[T], &[T], &[T]),
    g: &[T],
    d: Dims,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (head, group, scale) = (d.head(), d.heads / d.kv_heads, op.scale::<T>());
    // Keys and values as `[D, P]`, transposed once for each key/value head's group.
    let (mut keys_t, mut values_t) = (vec![T::zero(); head], vec![T::zero(); head]);
    let (mut w, mut dw) = (vec![T::zero(); d.tokens], vec![T::zero(); d.tokens]);
    for (h, dq) in dq.chunks_exact_mut(head).enumerate() {
        let kv = (h / group) * head;
        if h % group == 0 {
            transpose_into(&k[kv..kv + head], d.tokens, d.width, &mut keys_t);
            transpose_into(&v[kv..kv + head], d.tokens, d.width, &mut values_t);
        }
        let keys = &k[kv..kv + head];
        let (dk, dv) = (&mut dk[kv..kv + head], &mut dv[kv..kv + head]);
        let (queries, grads) = (&q[h * head..][..head], &g[h * head..][..head]);
        for (i, ((qi, gi), dqi)) in queries
            .chunks_exact(d.width)
            .zip(grads.chunks_exact(d.width))
            .zip(dq.chunks_exact_mut(d.width))
            .enumerate()
        {
            let n = op.keys(i, d);
            let (w, dw) = (&mut w[..n], &mut dw[..n]);
            weights::<T, M>(qi, &keys_t, d.tokens, scale, w);
            // dw_j = g_i · v_j; dv_j += w_j g_i.
            against_columns::<T, M>(gi, &values_t, d.tokens, dw);
            for (&wj, dvj) in w.iter().zip(dv.chunks_exact_mut(d.width)) {
                for (dv, &gv) in dvj.iter_mut().zip(gi) {
                    *dv = M::mul_add(wj, gv, *dv);
                }
            }
            // Through the softmax: the scaled score's gradient ds_j = w_j (dw_j − Σ w dw).
            let mean = w
                .iter()
                .zip(dw.iter())
                .fold(T::zero(), |s, (&a, &b)| s + a * b);
            for ((&wj, &dwj), (kj, dkj)) in w
                .iter()
                .zip(dw.iter())
                .zip(keys.chunks_exact(d.width).zip(dk.chunks_exact_mut(d.width)))
            {
                let ds = wj * (dwj - mean) * scale;
                for ((dq, dk), (&qv, &kv)) in
                    dqi.iter_mut().zip(dkj.iter_mut()).zip(qi.iter().zip(kj))
                {
                    *dq = M::mul_add(ds, kv, *dq);
                    *dk = M::mul_add(ds, qv, *dk);
                }
            }
        }
    }
}

/// [`forward_sequence`] as [`Loops`].
struct ForwardSequence<'a, T> {
    op: &'a Attention,
    qkv: (&'a [T], &'a [T], &'a [T]),
    d: Dims,
    out: &'a mut [T],
}

impl<T: Real> Loops for ForwardSequence<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<M: MulAdd>(self) {
        forward_sequence::<T, M>(self.op, self.qkv, self.d, self.out);
    }
}

/// [`backward_sequence`] as [`Loops`].
struct BackwardSequence<'a, T> {
    op: &'a Attention,
    qkv: (&'a [T], &'a [T], &'a [T]),
    g: &'a [T],
    d: Dims,
    dq: &'a mut [T],
    dk: &'a mut [T],
    dv: &'a mut [T],
}

impl<T: Real> Loops for BackwardSequence<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<M: MulAdd>(self) {
        backward_sequence::<T, M>(self.op, self.qkv, self.g, self.d, self.dq, self.dk, self.dv);
    }
}

impl Kernels3 for Attention {
    type Dims = Dims;

    fn name(&self) -> &'static str {
        "fused attention"
    }

    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
        Dims::of(q, k, v)
    }

    fn output_shape(&self, d: Dims) -> Shape {
        Shape::from((d.batch, d.heads, d.tokens, d.width))
    }

    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T], d: Dims) -> Vec<T> {
        let (per_q, per_kv) = (d.heads * d.head(), d.kv_heads * d.head());
        let mut out = vec![T::zero(); q.len()];
        out.par_chunks_mut(per_q.max(1))
            .enumerate()
            .for_each(|(b, out)| {
                let qkv = (
                    &q[b * per_q..][..per_q],
                    &k[b * per_kv..][..per_kv],
                    &v[b * per_kv..][..per_kv],
                );
                run_best(ForwardSequence {
                    op: self,
                    qkv,
                    d,
                    out,
                });
            });
        out
    }

    fn backward<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        g: &[T],
        d: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (per_q, per_kv) = ((d.heads * d.head()).max(1), (d.kv_heads * d.head()).max(1));
        let mut dq = vec![T::zero(); q.len()];
        let (mut dk, mut dv) = (vec![T::zero(); k.len()], vec![T::zero(); v.len()]);
        dq.par_chunks_mut(per_q)
            .zip(dk.par_chunks_mut(per_kv))
            .zip(dv.par_chunks_mut(per_kv))
            .enumerate()
            .for_each(|(b, ((dq, dk), dv))| {
                let qkv = (
                    &q[b * per_q..][..per_q],
                    &k[b * per_kv..][..per_kv],
                    &v[b * per_kv..][..per_kv],
                );
                let g = &g[b * per_q..][..per_q];
                run_best(BackwardSequence {
                    op: self,
                    qkv,
                    g,
                    d,
                    dq,
                    dk,
                    dv,
                });
            });
        (dq, dk, dv)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::gradcheck::spread as values;

    /// The graph the transformer used before: the group's copies, the product, the masked
    /// softmax, the product.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal: bool) -> Tensor {
        let (b, heads, p, width) = q.dims4().unwrap();
        let kv_heads = k.dim(1).unwrap();
        let group = heads / kv_heads;
        let share = |t: &Tensor| {
            t.unsqueeze(2)
                .unwrap()
                .broadcast_as((b, kv_heads, group, p, width))
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, heads, p, width))
                .unwrap()
        };
        let (k, v) = (share(k), share(v));
        let scores = (q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap() * scale).unwrap();
        let scores = if causal {
            let mask: Vec<f64> = (0..p * p)
                .map(|at| if at % p > at / p { -1e9 } else { 0.0 })
                .collect();
            let mask = Tensor::from_vec(mask, (p, p), q.device())
                .and_then(|m| m.to_dtype(q.dtype()))
                .unwrap();
            scores.broadcast_add(&mask).unwrap()
        } else {
            scores
        };
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)
            .unwrap()
            .matmul(&v)
            .unwrap()
    }

    #[test]
    fn the_fused_attention_matches_the_graph_and_its_gradients() {
        // Four query heads over two key/value heads, and one head per group.
        for (heads, kv_heads) in [(4, 2), (2, 2)] {
            let (b, p, width) = (3, 6, 5);
            for dtype in [DType::F64, DType::F32] {
                let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let var = |n: usize, k: usize, shape: &[usize]| {
                    let t = Tensor::from_vec(values(n, k, 1.5), shape, &Device::Cpu)
                        .and_then(|t| t.to_dtype(dtype))
                        .unwrap();
                    Var::from_tensor(&t).unwrap()
                };
                let q = var(b * heads * p * width, 11, &[b, heads, p, width]);
                let k = var(b * kv_heads * p * width, 7, &[b, kv_heads, p, width]);
                let v = var(b * kv_heads * p * width, 13, &[b, kv_heads, p, width]);
                let w = Tensor::from_vec(
                    values(b * heads * p * width, 5, 1.0),
                    (b, heads, p, width),
                    &Device::Cpu,
                )
                .and_then(|t| t.to_dtype(dtype))
                .unwrap();
                for causal in [false, true] {
                    let scale = 0.45;
                    let want = reference(&q, &k, &v, scale, causal);
                    let got = attention(&q, &k, &v, scale, causal).unwrap();
                    let close = |got: &Tensor, want: &Tensor| {
                        crate::gradcheck::assert_close(got, want, tolerance);
                    };
                    close(&got, &want);
                    let grads =
                        |t: &Tensor| (t * &w).unwrap().sum_all().unwrap().backward().unwrap();
                    let (want_grads, got_grads) = (grads(&want), grads(&got));
                    for x in [&q, &k, &v] {
                        close(got_grads.get(x).unwrap(), want_grads.get(x).unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_attention_gradients_match_finite_differences() {
        let (b, heads, kv_heads, p, width) = (2, 2, 1, 4, 3);
        let x = [
            values(b * heads * p * width, 11, 1.2),
            values(b * kv_heads * p * width, 7, 1.2),
            values(b * kv_heads * p * width, 13, 1.2),
        ];
        let shapes = [
            [b, heads, p, width],
            [b, kv_heads, p, width],
            [b, kv_heads, p, width],
        ];
        let vars: Vec<Var> = x
            .iter()
            .zip(&shapes)
            .map(|(x, s)| Var::from_slice(x, s, &Device::Cpu).unwrap())
            .collect();
        let weights = values(b * heads * p * width, 5, 1.0);
        let scale = 0.7;
        let loss = (attention(&vars[0], &vars[1], &vars[2], scale, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            * Tensor::new(weights.as_slice(), &Device::Cpu).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let grads = loss.backward().unwrap();
        crate::gradcheck::assert_gradients_match(&grads, &vars, &x, |x| {
            let mut total = 0.0;
            for bb in 0..b {
                for h in 0..heads {
                    let kvh = h / (heads / kv_heads);
                    let row = |t: &[f64], hs: usize, hh: usize, i: usize| {
                        t[((bb * hs + hh) * p + i) * width..][..width].to_vec()
                    };
                    for i in 0..p {
                        let qi = row(&x[0], heads, h, i);
                        let s: Vec<f64> = (0..=i)
                            .map(|j| {
                                let kj = row(&x[1], kv_heads, kvh, j);
                                qi.iter().zip(&kj).map(|(a, b)| a * b).sum::<f64>() * scale
                            })
                            .collect();
                        let max = s.iter().cloned().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for c in 0..width {
                            let o: f64 = (0..=i)
                                .map(|j| e[j] / sum * row(&x[2], kv_heads, kvh, j)[c])
                                .sum();
                            total += o * weights[((bb * heads + h) * p + i) * width + c];
                        }
                    }
                }
            }
            total
        });
    }

    #[test]
    fn the_fused_attention_does_not_depend_on_the_thread_count() {
        let (b, heads, kv_heads, p, width) = (5, 4, 2, 7, 4);
        let t = |n: usize, k: usize, shape: &[usize]| {
            let data: Vec<f32> = values(n, k, 1.0).iter().map(|&v| v as f32).collect();
            Var::from_slice(&data, shape, &Device::Cpu).unwrap()
        };
        let q = t(b * heads * p * width, 11, &[b, heads, p, width]);
        let k = t(b * kv_heads * p * width, 7, &[b, kv_heads, p, width]);
        let v = t(b * kv_heads * p * width, 13, &[b, kv_heads, p, width]);
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let o = attention(&q, &k, &v, 0.5, false).unwrap();
                let grads = o.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                [
                    o.clone(),
                    grads.get(&q).unwrap().clone(),
                    grads.get(&k).unwrap().clone(),
                ]
                .iter()
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn shapes_that_do_not_fit_are_an_error() {
        let cpu = &Device::Cpu;
        let q = Tensor::zeros((1, 3, 4, 2), DType::F32, cpu).unwrap();
        let k = Tensor::zeros((1, 2, 4, 2), DType::F32, cpu).unwrap();
        assert!(attention(&q, &k, &k, 1.0, false).is_err());
    }
}

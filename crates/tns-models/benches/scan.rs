//! Criterion bench of Mamba's selective scan in training: one forward and backward pass of
//! the fused op ([`tns_models::fused::selective_scan`]) at a long lookback, for batches from
//! one row (which the op cuts into chunks along time) to 128 (training's default).
//! `cargo bench -p tns-models --bench scan`; `bench/train/scan.sh` runs it on 1 and 2 threads
//! with glibc keeping freed memory, as `tns` training does, and writes
//! `results/train/scan.md`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tns_models::fused::selective_scan;

/// Steps, inner channels and modes: lookback 512 and the zoo's Mamba (d_model 32, expand 2,
/// state 16).
const STEPS: usize = 512;
const INNER: usize = 64;
const STATE: usize = 16;

/// `n` values in `[lo, lo + span)`, spread deterministically.
fn spread(n: usize, k: usize, lo: f32, span: f32) -> Vec<f32> {
    (0..n)
        .map(|i| lo + span * ((i * k % 97) as f32 / 97.0))
        .collect()
}

fn inputs(batch: usize) -> candle_core::Result<Vec<Var>> {
    let cpu = &Device::Cpu;
    let (rows_e, rows_n) = (batch * STEPS * INNER, batch * STEPS * STATE);
    Ok(vec![
        Var::from_vec(spread(rows_e, 7, 0.01, 0.2), (batch, STEPS, INNER), cpu)?,
        Var::from_vec(spread(rows_e, 5, -1.0, 2.0), (batch, STEPS, INNER), cpu)?,
        Var::from_vec(spread(INNER * STATE, 3, -4.0, 3.9), (INNER, STATE), cpu)?,
        Var::from_vec(spread(rows_n, 11, -1.0, 2.0), (batch, STEPS, STATE), cpu)?,
        Var::from_vec(spread(rows_n, 13, -1.0, 2.0), (batch, STEPS, STATE), cpu)?,
        Var::from_vec(spread(INNER, 17, -1.0, 2.0), INNER, cpu)?,
    ])
}

fn train_step(v: &[Var]) -> candle_core::Result<Tensor> {
    let o = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5])?;
    let grads = o.sqr()?.sum_all()?.backward()?;
    grads
        .get(v[2].as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient for A".into()))
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("selective scan, L {STEPS}, E {INNER}, N {STATE}"));
    group.sample_size(20);
    for batch in [1, 4, 16, 128] {
        let v = inputs(batch).expect("bench inputs");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("forward+backward, batch {batch}"), |b| {
            b.iter(|| black_box(train_step(black_box(&v)).expect("scan")))
        });
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);

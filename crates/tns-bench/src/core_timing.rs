//! `tns bench-core`: the clock and the FMA timing of the core it runs on, measured, so that
//! per-step times can be put in cycles beside the FMA bounds where the machine has no
//! cycle counter (this VM's `perf stat` reports none).

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

/// What `tns bench-core` prints (JSON).
#[derive(Serialize)]
struct CoreTiming {
    /// Clock while busy (GHz): a chain of dependent integer adds, one cycle each on every
    /// x86-64 core.
    clock_ghz: f64,
    /// Cycles from one FMA to the next that reads its result (256-bit registers).
    fma_latency_cycles: f64,
    /// Independent FMA instructions per cycle on the widest registers the kernels use.
    fma_per_cycle: f64,
    /// f32 lanes of those registers.
    fma_lanes: u32,
}

/// Runs `tns bench-core`: measures and prints [`CoreTiming`] as JSON.
pub fn core_timing() -> Result<()> {
    let Some(timing) = measure() else {
        bail!("bench-core needs an x86-64 CPU with AVX2 and FMA");
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", serde_json::to_string_pretty(&timing)?)?;
    Ok(())
}

/// Seconds per iteration of `run` over `iterations`, the fastest of three runs (a slower
/// run is the machine's, not the loop's).
fn seconds_per_iteration(iterations: u64, run: &dyn Fn(u64)) -> f64 {
    (0..3)
        .map(|_| {
            let t0 = Instant::now();
            run(black_box(iterations));
            t0.elapsed().as_secs_f64() / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<CoreTiming> {
    use std::arch::asm;
    use std::arch::x86_64::*;
    if tns_engine::Isa::detect() != tns_engine::Isa::Avx2Fma {
        return None;
    }
    /// 16 dependent adds per iteration, so that the loop's own counter and branch (which
    /// run beside them) do not set the pace.
    fn add_chain(iterations: u64) {
        let mut x = 0u64;
        for _ in 0..iterations {
            // SAFETY: register arithmetic only; no memory, stack or flags the compiler
            // relies on across the block.
            unsafe {
                asm!(
                    "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                    "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                    "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                    "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                    x = inout(reg) x,
                    options(nomem, nostack),
                );
            }
        }
        black_box(x);
    }
    #[target_feature(enable = "avx2,fma")]
    fn fma_chain(iterations: u64) {
        let (mut a, b, c) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(0.999_999),
            _mm256_set1_ps(1e-7),
        );
        for _ in 0..iterations {
            a = _mm256_fmadd_ps(a, b, c);
        }
        black_box(_mm256_cvtss_f32(a));
    }
    let add = seconds_per_iteration(200_000_000, &add_chain) / 16.0;
    // SAFETY: the CPU has AVX2 and FMA (checked above).
    let fma = seconds_per_iteration(400_000_000, &|n| unsafe { fma_chain(n) });
    let peak = crate::measured_fma_peak()?;
    let clock_ghz = 1e-9 / add;
    Some(CoreTiming {
        clock_ghz,
        fma_latency_cycles: fma / add,
        fma_per_cycle: peak.giga_fmas / clock_ghz,
        fma_lanes: peak.lanes,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<CoreTiming> {
    None
}

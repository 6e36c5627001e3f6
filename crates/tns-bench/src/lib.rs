//! The benchmark harness behind `tns bench`: the measurement protocol of PRODUCT.md §8 on
//! the inference engine — single-sample latency distributions, per-stage breakdown, batch
//! throughput against the core's FMA peak, peak RSS of a serving process, and the
//! environment — for the compact and the seed-design shape. Writes JSON, a markdown table,
//! raw latencies and plots. The `tns` binary parses the arguments ([`BenchArgs`]) and calls
//! [`run`]; the RSS measurement re-runs the calling binary as `tns bench-rss` ([`rss_child`]).
//! This is an application layer like the binary itself, so its errors are `anyhow`'s.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::write_atomic;
use tns_data::{Dataset, SplitFractions, WindowSpec};
use tns_engine::{Engine, Predictor};
use tns_eval::{Int8Report, quantize_with_report};
use tns_eval::{SeriesToPlot, plot_latency_histograms};
use tns_format::save_model;
use tns_model::{ModelConfig, ModelKind, NamedTensor, NetworkConfig};
use tns_train::{FitOptions, TrainConfig, fit_model, parse_axes};

mod core_timing;
mod inputs;
mod stream;
mod tail;
mod zoo;
pub use core_timing::core_timing;
pub use inputs::{InputsArgs, inputs};
pub use stream::{StreamArgs, stream};
pub use tail::{TailArgs, tail};
pub use zoo::{ZooArgs, zoo};

/// Options of the benchmark.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which shapes to measure.
    #[arg(long, value_enum, default_value = "both")]
    shape: ShapeChoice,
    /// Timed single-sample calls per model (PRODUCT.md §8: at least 100,000).
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Untimed warm-up calls per model (at least 10,000).
    #[arg(long, default_value_t = 10_000)]
    warmup: usize,
    /// Distinct windows the inputs are drawn from (at least 10,000).
    #[arg(long, default_value_t = 10_000)]
    windows: usize,
    /// Training epochs of the benchmarked models (latency does not depend on how well they
    /// are trained; fallbacks, which do, stay in the distribution).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Core clock in GHz for the FMA peak (default: the peak is measured with an FMA loop).
    #[arg(long)]
    peak_ghz: Option<f64>,
    /// Also time System B over this network (`--network mlp:64,64`), beside the presets.
    #[arg(long)]
    network: Option<NetworkConfig>,
    /// Output directory.
    #[arg(long, default_value = "results/bench")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ShapeChoice {
    Compact,
    Seed,
    Both,
}

/// The hidden `tns bench-rss` child: loads one model, predicts, reports its peak RSS and
/// its resident memory by kind at the end (`VmHWM RssAnon RssFile`, KiB, on one line).
#[derive(Args, Debug)]
pub struct RssArgs {
    /// Model file.
    model: PathBuf,
    /// Predictions to make before reading the peak.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
}

#[derive(Serialize)]
struct Environment {
    cpu: String,
    logical_cpus: usize,
    cores_used_single: usize,
    rustc: &'static str,
    profile: &'static str,
    target_features_compiled: Vec<&'static str>,
    isa_selected: &'static str,
    git_sha: &'static str,
    tns_version: &'static str,
    peak_gflops_per_core: f64,
    peak_derivation: String,
}

#[derive(Serialize, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
    /// Bootstrap 95% confidence interval of P99.9 (1,000 resamples).
    p999_ci: [f64; 2],
}

#[derive(Serialize)]
struct Stages {
    /// Input checks + Kalman filter / last value (ns, mean).
    prior: f64,
    /// Normalization + network (ns, mean).
    network: f64,
    /// Correction, gate, conformal interval (ns, mean).
    gate_and_certificate: f64,
    /// Sum of the stages (ns, mean; two more timer reads than an unstaged call).
    sum: f64,
    /// The unstaged single-sample mean for comparison (ns).
    unstaged_mean: f64,
}

#[derive(Serialize)]
struct ModelResult {
    kind: String,
    file: String,
    parameters: usize,
    macs: usize,
    /// Latency per call, ns, timer overhead included (see `timer_overhead_ns`).
    latency_ns: Percentiles,
    fallback_rate: f64,
    stages_ns: Stages,
    peak_rss_kib: Option<u64>,
    /// What the process held resident at the end, by kind: anonymous memory (heap, stacks,
    /// relocated tables; the process's own) and file-backed pages (the mapped binary and
    /// libraries, shared with every process that maps them, in the page cache's granules).
    rss_at_end_kib: Option<RssSplit>,
    raw_latencies: String,
}

/// Resident memory by kind, KiB (`RssAnon` and `RssFile` of `/proc/self/status`).
#[derive(Serialize, Clone, Copy)]
struct RssSplit {
    anon: u64,
    file: u64,
}

#[derive(Serialize)]
struct Throughput {
    model: &'static str,
    batch: usize,
    threads: usize,
    windows_per_second: f64,
    gflops: f64,
    /// GFLOP/s over the peak of the cores used.
    peak_share: f64,
}

#[derive(Serialize)]
struct ShapeResult {
    shape: &'static str,
    input: [usize; 2],
    output: [usize; 2],
    lead: usize,
    models: Vec<ModelResult>,
    /// System B − System A with the same network architecture (ns).
    b_minus_a_ns: BMinusA,
    throughput: Vec<Throughput>,
    /// INT8 against f32, per GRU model.
    int8: Vec<Int8Result>,
    peer_inputs: String,
}

#[derive(Serialize)]
struct Int8Result {
    kind: &'static str,
    file_bytes_f32: u64,
    file_bytes_int8: u64,
    /// INT8 P50 / f32 P50 (single sample, whole prediction).
    latency_p50_ratio: f64,
    /// INT8 mean / f32 mean.
    latency_mean_ratio: f64,
    /// INT8 network stage / f32 network stage (means).
    network_ns_ratio: f64,
    accuracy: Int8Report,
}

#[derive(Serialize)]
struct BMinusA {
    p50: f64,
    p999: f64,
    mean: f64,
    /// Per stage, the difference of the stage means: what System B adds to the same network
    /// (prior, gate), apart from the network stage's run-to-run spread.
    stages: [f64; 3],
}

#[derive(Serialize)]
struct Protocol {
    calls: usize,
    warmup: usize,
    distinct_windows: usize,
    timer: &'static str,
    timer_overhead_ns: f64,
    black_box: bool,
}

#[derive(Serialize)]
struct BenchReport {
    environment: Environment,
    protocol: Protocol,
    shapes: Vec<ShapeResult>,
    seconds: f64,
}

const COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];
const KINDS: [ModelKind; 4] = [
    ModelKind::Persistence,
    ModelKind::Kalman,
    ModelKind::SystemA,
    ModelKind::SystemB,
];

/// Runs the benchmark and writes its results under `args.out`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.calls < 1000 || args.windows == 0 {
        bail!("--calls must be at least 1000 and --windows at least 1");
    }
    let start = Instant::now();
    std::fs::create_dir_all(args.out.join("models"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    let environment = environment(args.peak_ghz);
    let timer_overhead_ns = timer_overhead();
    println!(
        "{} ({} logical CPUs), kernels {}, timer overhead {timer_overhead_ns:.1} ns",
        environment.cpu, environment.logical_cpus, environment.isa_selected
    );
    let mut shapes = Vec::new();
    for shape in [Shape::Compact, Shape::Seed] {
        let wanted = match args.shape {
            ShapeChoice::Both => true,
            ShapeChoice::Compact => shape == Shape::Compact,
            ShapeChoice::Seed => shape == Shape::Seed,
        };
        if wanted {
            shapes.push(bench_shape(shape, &args, &environment)?);
        }
    }
    let report = BenchReport {
        environment,
        protocol: Protocol {
            calls: args.calls,
            warmup: args.warmup,
            distinct_windows: args.windows,
            timer: "std::time::Instant (clock_gettime(CLOCK_MONOTONIC) on Linux)",
            timer_overhead_ns,
            black_box: true,
        },
        shapes,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.out.join("bench.json"), json.as_bytes())?;
    let table = markdown(&report);
    write_atomic(&args.out.join("bench.md"), table.as_bytes())?;
    println!("\n{table}");
    println!(
        "wrote {}/bench.{{json,md}}, latency histograms and raw latencies in {:.0} s",
        args.out.display(),
        report.seconds
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Compact,
    Seed,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Seed => "seed",
        }
    }
}

fn bench_shape(shape: Shape, args: &BenchArgs, env: &Environment) -> Result<ShapeResult> {
    let (data, lookback, lead, targets, stride): (Dataset, usize, usize, &[&str], usize) =
        match shape {
            Shape::Compact => (
                trajectory(&TrajectoryConfig::compact(Regime::Mixed, 24_000, 7)),
                10,
                1,
                &COLUMNS,
                1,
            ),
            Shape::Seed => (
                trajectory(&TrajectoryConfig::seed_design(Regime::Mixed, 60_000, 7)),
                256,
                1000,
                &["x", "y"],
                16,
            ),
        };
    let spec = WindowSpec {
        lookback,
        horizon: 1,
        lead,
        stride,
        origin_every: stride,
        targets: data.column_indices(targets)?,
        future: Vec::new(),
        calendar: None,
    };
    let splits = data.windows(&spec, &SplitFractions::default())?;
    let target_names: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
    let axes = parse_axes(None, &data, &target_names)?;
    println!(
        "\n{} shape: [{lookback}, 4] → [1, {}] at lead {lead}; training the benchmarked models ({} epochs)",
        shape.name(),
        targets.len(),
        args.epochs
    );
    let windows = timing_windows(&data, lookback, args.windows)?;
    let per = lookback * COLUMNS.len();
    let options = FitOptions {
        train: TrainConfig {
            epochs: args.epochs,
            ..TrainConfig::default()
        },
        progress: true,
        ..FitOptions::default()
    };
    let mut models = Vec::new();
    let mut latencies = Vec::new();
    let mut engines = Vec::new();
    for kind in KINDS {
        let mut config = ModelConfig::new(kind.name(), kind, &COLUMNS, targets, lookback, 1, lead);
        config.kalman_axes = Some(axes.clone());
        config.seed = 7;
        let trained = fit_model(&config, data.dt(), &splits, &options)
            .with_context(|| format!("training {}", kind.name()))?;
        let file = args
            .out
            .join("models")
            .join(format!("{}-{}.tns", shape.name(), kind.name()));
        trained.save(&file)?;
        let (result, lat) = measure_model(kind.name(), &file, &windows, per, args, shape)?;
        models.push(result);
        latencies.push(lat);
        engines.push((kind, Arc::new(Engine::load(&file)?), trained.tensors));
    }
    let mut names: Vec<String> = KINDS.iter().map(|k| k.name().to_string()).collect();
    if let Some(network) = &args.network {
        let name = format!("system-b ({network})");
        let mut config = ModelConfig::new(
            &name,
            ModelKind::SystemB,
            &COLUMNS,
            targets,
            lookback,
            1,
            lead,
        );
        config.network = Some(network.clone());
        config.kalman_axes = Some(axes.clone());
        config.seed = 7;
        let trained = fit_model(&config, data.dt(), &splits, &options)
            .with_context(|| format!("training {name}"))?;
        let file = args.out.join("models").join(format!(
            "{}-system-b-{}.tns",
            shape.name(),
            network.to_string().replace([':', ','], "-")
        ));
        trained.save(&file)?;
        let (result, lat) = measure_model(&name, &file, &windows, per, args, shape)?;
        models.push(result);
        latencies.push(lat);
        names.push(name);
    }
    // INT8 versions of the GRU models, recalibrated on the same splits and timed the same way.
    let mut int8 = Vec::new();
    for (kind, engine, tensors) in &engines {
        if !matches!(kind, ModelKind::SystemA | ModelKind::SystemB) {
            continue;
        }
        let (manifest, q_tensors, accuracy) = quantize_with_report(
            engine.manifest(),
            tensors,
            &splits,
            spec.span().div_ceil(stride),
        )?;
        let label = format!("{}-int8", kind.name());
        let file = args
            .out
            .join("models")
            .join(format!("{}-{label}.tns", shape.name()));
        save_model(&file, &manifest, &q_tensors)?;
        let (result, _) = measure_model(&label, &file, &windows, per, args, shape)?;
        let f32_result = &models[KINDS.iter().position(|k| k == kind).unwrap_or(0)];
        let f32_file = PathBuf::from(&f32_result.file);
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        println!("  {}", tns_eval::summary(&accuracy));
        int8.push(Int8Result {
            kind: kind.name(),
            file_bytes_f32: size(&f32_file),
            file_bytes_int8: size(&file),
            latency_p50_ratio: result.latency_ns.p50 / f32_result.latency_ns.p50,
            latency_mean_ratio: result.latency_ns.mean / f32_result.latency_ns.mean,
            network_ns_ratio: result.stages_ns.network / f32_result.stages_ns.network,
            accuracy,
        });
        models.push(result);
    }
    let svg = args.out.join(format!("latency-{}.svg", shape.name()));
    plot_latency_histograms(
        &svg,
        &format!(
            "single-sample latency, {} shape, {} calls per model",
            shape.name(),
            args.calls
        ),
        &names
            .iter()
            .zip(&latencies)
            .map(|(name, l)| SeriesToPlot {
                name: name.clone(),
                values: l.iter().map(|ns| ns / 1000.0).collect(),
            })
            .collect::<Vec<_>>(),
    )?;
    let at = |k: ModelKind| KINDS.iter().position(|x| *x == k).unwrap_or(0);
    let (a, b) = (
        &models[at(ModelKind::SystemA)],
        &models[at(ModelKind::SystemB)],
    );
    let (sa, sb) = (&a.stages_ns, &b.stages_ns);
    let (a, b) = (&a.latency_ns, &b.latency_ns);
    let b_minus_a_ns = BMinusA {
        p50: b.p50 - a.p50,
        p999: b.p999 - a.p999,
        mean: b.mean - a.mean,
        stages: [
            sb.prior - sa.prior,
            sb.network - sa.network,
            sb.gate_and_certificate - sa.gate_and_certificate,
        ],
    };
    let mut throughput = Vec::new();
    for (kind, engine, _) in &engines {
        if !matches!(kind, ModelKind::SystemA | ModelKind::SystemB) {
            continue;
        }
        for threads in [1, 2] {
            for batch in [1, 8, 64, 512, 4096] {
                let t = time_batch(engine, &windows, per, batch, threads)?;
                let macs = engine.network().map_or(0, |n| n.macs()) as f64;
                let gflops = t * 2.0 * macs / 1e9;
                throughput.push(Throughput {
                    model: kind.name(),
                    batch,
                    threads,
                    windows_per_second: t,
                    gflops,
                    peak_share: gflops / (env.peak_gflops_per_core * threads as f64),
                });
            }
        }
    }
    // Inputs and outputs of System A's network for the peer script (same weights, same
    // normalized windows: the peers must reproduce these outputs before they are timed).
    let (_, engine_a, tensors_a) = &engines[at(ModelKind::SystemA)];
    let peer_inputs = args.out.join(format!("peers-{}.safetensors", shape.name()));
    write_peer_inputs(&peer_inputs, engine_a, tensors_a, &windows, per)?;
    Ok(ShapeResult {
        shape: shape.name(),
        input: [lookback, COLUMNS.len()],
        output: [1, targets.len()],
        lead,
        models,
        b_minus_a_ns,
        throughput,
        int8,
        peer_inputs: peer_inputs.display().to_string(),
    })
}

/// Times one model file on the engine compiled from it (what users run): single-sample
/// latency distribution, stages, raw latencies file, peak RSS of a fresh process.
fn measure_model(
    label: &str,
    file: &Path,
    windows: &[f64],
    per: usize,
    args: &BenchArgs,
    shape: Shape,
) -> Result<(ModelResult, Vec<f64>)> {
    // Benchmark what users run: the engine compiled from the file on disk.
    let engine = Arc::new(Engine::load(file)?);
    let (lat, fallbacks) = time_single(&engine, windows, per, args.warmup, args.calls)?;
    let stages = time_stages(&engine, windows, per, args.calls, mean(&lat))?;
    let raw = args
        .out
        .join(format!("latencies-{}-{label}.bin", shape.name()));
    write_raw(&raw, &lat)?;
    let rss = rss_of_child(file);
    let result = ModelResult {
        kind: label.to_string(),
        file: file.display().to_string(),
        parameters: engine.manifest().config.parameter_count(),
        macs: engine.network().map_or(0, |n| n.macs()),
        latency_ns: percentiles(&lat),
        fallback_rate: fallbacks as f64 / args.calls as f64,
        stages_ns: stages,
        peak_rss_kib: rss.map(|r| r.peak),
        rss_at_end_kib: rss.map(|r| r.split),
        raw_latencies: raw.display().to_string(),
    };
    println!(
        "  {:<12} P50 {:>8.0} ns  P99.9 {:>8.0} ns  max {:>9.0} ns  (prior {:.0} + network {:.0} + gate {:.0} ns)",
        label,
        result.latency_ns.p50,
        result.latency_ns.p999,
        result.latency_ns.max,
        result.stages_ns.prior,
        result.stages_ns.network,
        result.stages_ns.gate_and_certificate
    );
    Ok((result, lat))
}

/// `n` windows of consecutive rows at seeded random offsets in the generated series.
fn timing_windows(data: &Dataset, lookback: usize, n: usize) -> Result<Vec<f64>> {
    let f = data.columns().len();
    let segments: Vec<&[f64]> = data
        .series()
        .iter()
        .flat_map(|s| s.segments.iter())
        .map(|s| s.values.as_slice())
        .filter(|v| v.len() / f >= lookback)
        .collect();
    if segments.is_empty() {
        bail!("no segment holds {lookback} rows");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut out = Vec::with_capacity(n * lookback * f);
    for _ in 0..n {
        let seg = segments[rng.random_range(0..segments.len())];
        let start = rng.random_range(0..=seg.len() / f - lookback);
        out.extend_from_slice(&seg[start * f..(start + lookback) * f]);
    }
    Ok(out)
}

/// Single-sample latencies (ns) over `calls` calls cycling through the windows, after
/// `warmup` untimed calls; and the number of calls that fell back to the prior.
fn time_single(
    engine: &Arc<Engine>,
    windows: &[f64],
    per: usize,
    warmup: usize,
    calls: usize,
) -> Result<(Vec<f64>, usize)> {
    let mut predictor = Predictor::new(engine.clone());
    let n = windows.len() / per;
    for i in 0..warmup {
        let w = &windows[(i % n) * per..(i % n + 1) * per];
        black_box(predictor.predict(black_box(w))?);
    }
    let mut lat = Vec::with_capacity(calls);
    let mut fallbacks = 0;
    for i in 0..calls {
        let w = &windows[(i % n) * per..(i % n + 1) * per];
        let t0 = Instant::now();
        let p = predictor.predict(black_box(w));
        let elapsed = t0.elapsed();
        let p = black_box(p)?;
        fallbacks += usize::from(p.fallback_used());
        lat.push(elapsed.as_nanos() as f64);
    }
    Ok((lat, fallbacks))
}

/// Mean time of each stage, timed within the same calls so that the stages sum to the
/// staged total exactly.
fn time_stages(
    engine: &Arc<Engine>,
    windows: &[f64],
    per: usize,
    calls: usize,
    unstaged_mean: f64,
) -> Result<Stages> {
    let mut predictor = Predictor::new(engine.clone());
    let n = windows.len() / per;
    let mut sums = [0u128; 3];
    for i in 0..calls {
        let w = black_box(&windows[(i % n) * per..(i % n + 1) * per]);
        let t0 = Instant::now();
        predictor.stage_prior(w)?;
        let t1 = Instant::now();
        predictor.stage_network(w);
        let t2 = Instant::now();
        predictor.stage_gate()?;
        let t3 = Instant::now();
        black_box(predictor.prediction());
        sums[0] += (t1 - t0).as_nanos();
        sums[1] += (t2 - t1).as_nanos();
        sums[2] += (t3 - t2).as_nanos();
    }
    let m = |s: u128| s as f64 / calls as f64;
    let (prior, network, gate) = (m(sums[0]), m(sums[1]), m(sums[2]));
    Ok(Stages {
        prior,
        network,
        gate_and_certificate: gate,
        sum: prior + network + gate,
        unstaged_mean,
    })
}

/// Windows per second of `predict_batch` at one batch size on `threads` threads, over at
/// least 0.3 s of repeated batches.
fn time_batch(
    engine: &Engine,
    windows: &[f64],
    per: usize,
    batch: usize,
    threads: usize,
) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let n = windows.len() / per;
    let mut out = vec![engine.empty_prediction(); batch];
    if batch > n {
        bail!("batch {batch} is larger than the {n} timing windows");
    }
    let slice = |offset: usize| {
        let start = offset % (n - batch + 1);
        &windows[start * per..(start + batch) * per]
    };
    pool.install(|| -> Result<f64> {
        let mut offset = 0;
        // Warm-up: one pass over the windows.
        while offset < n {
            engine.predict_batch(slice(offset), &mut out)?;
            offset += batch;
        }
        let (mut done, t0) = (0usize, Instant::now());
        while done < 8 * batch.max(512) || t0.elapsed().as_secs_f64() < 0.3 {
            engine.predict_batch(black_box(slice(offset)), &mut out)?;
            black_box(&out);
            done += batch;
            offset += batch;
        }
        Ok(done as f64 / t0.elapsed().as_secs_f64())
    })
}

fn percentiles(lat: &[f64]) -> Percentiles {
    let mut sorted = lat.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = |s: &[f64], p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    // Bootstrap of P99.9: resample with replacement, take the quantile by selection.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut resample = vec![0.0; lat.len()];
    let mut estimates: Vec<f64> = (0..1000)
        .map(|_| {
            for r in resample.iter_mut() {
                *r = lat[rng.random_range(0..lat.len())];
            }
            let k = ((0.999 * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            *resample.select_nth_unstable_by(k, f64::total_cmp).1
        })
        .collect();
    estimates.sort_by(f64::total_cmp);
    Percentiles {
        p50: q(&sorted, 0.5),
        p90: q(&sorted, 0.9),
        p99: q(&sorted, 0.99),
        p999: q(&sorted, 0.999),
        max: sorted[sorted.len() - 1],
        mean: mean(lat),
        p999_ci: [q(&estimates, 0.025), q(&estimates, 0.975)],
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Median of back-to-back `Instant` reads: the cost the timer adds to every sample.
fn timer_overhead() -> f64 {
    let mut d: Vec<f64> = (0..100_000)
        .map(|_| {
            let t0 = Instant::now();
            (black_box(Instant::now()) - t0).as_nanos() as f64
        })
        .collect();
    d.sort_by(f64::total_cmp);
    d[d.len() / 2]
}

fn write_raw(path: &Path, lat: &[f64]) -> Result<()> {
    let bytes: Vec<u8> = lat
        .iter()
        .flat_map(|&ns| (ns as u32).to_le_bytes())
        .collect();
    write_atomic(path, &bytes)?;
    Ok(())
}

fn write_peer_inputs(
    path: &Path,
    engine: &Engine,
    tensors: &[NamedTensor],
    windows: &[f64],
    per: usize,
) -> Result<()> {
    let net = engine.network().context("System A has a network")?;
    let n = (windows.len() / per).min(2000);
    let mut inputs = vec![0f32; n * per];
    let mut outputs = vec![0f32; n * net.outputs()];
    let mut scratch = net.scratch();
    for i in 0..n {
        let x = &mut inputs[i * per..(i + 1) * per];
        engine
            .pipeline()
            .normalize_into(&windows[i * per..(i + 1) * per], x);
        net.forward(
            x,
            &mut outputs[i * net.outputs()..(i + 1) * net.outputs()],
            &mut scratch,
        );
    }
    let c = &engine.manifest().config;
    let mut all = tensors.to_vec();
    all.push(NamedTensor {
        name: "bench.inputs".into(),
        shape: vec![n, c.lookback, c.features.len()],
        data: inputs,
    });
    all.push(NamedTensor {
        name: "bench.outputs".into(),
        shape: vec![n, net.outputs()],
        data: outputs,
    });
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = all
        .iter()
        .map(|t| {
            let bytes: &[u8] = bytemuck_f32(&t.data);
            Ok((
                t.name.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    bytes,
                )?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is the
    // slice's size in bytes and the lifetime is the input's.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The table's RSS cell: `peak (anon + file)` in MiB.
fn rss_cell(peak: Option<u64>, split: Option<RssSplit>) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    match (peak, split) {
        (Some(p), Some(s)) => format!("{:.1} ({:.1} + {:.1})", mib(p), mib(s.anon), mib(s.file)),
        (Some(p), None) => format!("{:.1}", mib(p)),
        _ => "n/a".into(),
    }
}

/// What `tns bench-rss` reports: the peak and, at the end, the split by kind (KiB).
#[derive(Clone, Copy)]
struct ChildRss {
    peak: u64,
    split: RssSplit,
}

/// Runs `tns bench-rss MODEL` in a fresh process and reads the `VmHWM RssAnon RssFile` line
/// it prints.
fn rss_of_child(model: &Path) -> Option<ChildRss> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .arg("bench-rss")
        .arg(model)
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let mut fields = line.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(peak)), Some(Ok(anon)), Some(Ok(file)), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    Some(ChildRss {
        peak,
        split: RssSplit { anon, file },
    })
}

/// The child side: load, predict, print `VmHWM RssAnon RssFile` in KiB.
pub fn rss_child(args: RssArgs) -> Result<()> {
    let engine = Arc::new(Engine::load(&args.model)?);
    let mut predictor = Predictor::new(engine.clone());
    let mut window = vec![0.0; engine.input_len()];
    let f = engine.manifest().config.features.len();
    for i in 0..args.calls {
        for (k, v) in window.iter_mut().enumerate() {
            *v = ((i + k / f) as f64 * 0.01).sin();
        }
        black_box(predictor.predict(&window)?);
    }
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no {name} line in /proc/self/status"))
    };
    let (hwm, anon, file) = (field("VmHWM:")?, field("RssAnon:")?, field("RssFile:")?);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{hwm} {anon} {file}")?;
    Ok(())
}

/// The CPU's model name (`/proc/cpuinfo`).
fn environment_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn environment(peak_ghz: Option<f64>) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = environment_cpu();
    let mhz = cpuinfo
        .lines()
        .filter_map(|l| l.strip_prefix("cpu MHz"))
        .filter_map(|v| v.trim_start_matches([' ', '\t', ':']).parse::<f64>().ok())
        .fold(0.0, f64::max);
    let isa = tns_engine::Isa::detect();
    let (peak, derivation) = match (peak_ghz, measured_fma_peak()) {
        (Some(ghz), _) => {
            let lanes = if isa.uses_avx512() {
                16.0
            } else if isa == tns_engine::Isa::Avx2Fma {
                8.0
            } else {
                4.0
            };
            (
                ghz * 2.0 * lanes * 2.0,
                format!("--peak-ghz {ghz} × 2 FMA pipes × {lanes} f32 lanes × 2 flops per FMA"),
            )
        }
        (None, Some(peak)) => (
            peak.giga_fmas * f64::from(peak.lanes) * 2.0,
            format!(
                "measured: 10 independent {}-bit FMA chains in registers ({:.2} G FMA instructions/s × {} lanes × 2 flops{}; `cpu MHz` says {:.2} GHz nominal)",
                peak.lanes * 32,
                peak.giga_fmas,
                peak.lanes,
                peak.narrower.map_or(String::new(), |g| format!(
                    ": the widest registers the kernels use here; 256-bit chains give {g:.2} G/s, {:.1} GFLOP/s",
                    g * 16.0
                )),
                mhz / 1000.0
            ),
        ),
        (None, None) => (
            mhz / 1000.0 * 2.0 * 4.0 * 2.0,
            "`cpu MHz` × 2 pipes × 4 f32 lanes (SSE) × 2 flops (no AVX2/FMA to measure)".into(),
        ),
    };
    let mut compiled = Vec::new();
    for (name, on) in [
        ("sse2", cfg!(target_feature = "sse2")),
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("neon", cfg!(target_feature = "neon")),
    ] {
        if on {
            compiled.push(name);
        }
    }
    Environment {
        cpu,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cores_used_single: 1,
        rustc: env!("TNS_RUSTC_VERSION"),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        target_features_compiled: compiled,
        isa_selected: isa.name(),
        git_sha: env!("TNS_GIT_SHA"),
        tns_version: env!("CARGO_PKG_VERSION"),
        peak_gflops_per_core: peak,
        peak_derivation: derivation,
    }
}

fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let e = &r.environment;
    s.push_str(&format!(
        "Environment: {} · {} logical CPUs · kernels {} · {} · {} · git {} · timer overhead {:.0} ns (included in every sample) · {} timed calls after {} warm-up calls over {} distinct windows\n\n",
        e.cpu, e.logical_cpus, e.isa_selected, e.rustc, e.profile, e.git_sha, r.protocol.timer_overhead_ns, r.protocol.calls, r.protocol.warmup, r.protocol.distinct_windows
    ));
    for shape in &r.shapes {
        s.push_str(&format!(
            "### {} shape: [{}, {}] → [{}, {}], lead {}\n\n",
            shape.shape,
            shape.input[0],
            shape.input[1],
            shape.output[0],
            shape.output[1],
            shape.lead
        ));
        s.push_str("| model | P50 µs | P90 µs | P99 µs | P99.9 µs [95% CI] | max µs | prior µs | network µs | gate+cert µs | fallbacks | peak RSS MiB (anon + file at end) |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for m in &shape.models {
            let l = &m.latency_ns;
            s.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} [{:.2}, {:.2}] | {:.1} | {:.2} | {:.2} | {:.2} | {:.2}% | {} |\n",
                m.kind,
                l.p50 / 1e3,
                l.p90 / 1e3,
                l.p99 / 1e3,
                l.p999 / 1e3,
                l.p999_ci[0] / 1e3,
                l.p999_ci[1] / 1e3,
                l.max / 1e3,
                m.stages_ns.prior / 1e3,
                m.stages_ns.network / 1e3,
                m.stages_ns.gate_and_certificate / 1e3,
                100.0 * m.fallback_rate,
                rss_cell(m.peak_rss_kib, m.rss_at_end_kib)
            ));
        }
        let d = &shape.b_minus_a_ns;
        s.push_str(&format!(
            "\nSystem B − System A (same GRU architecture): P50 {:+.2} µs, P99.9 {:+.2} µs, mean {:+.2} µs; by stage means: prior {:+.2} µs, network {:+.2} µs, gate+cert {:+.2} µs (prior and gate+cert together {:+.2} µs)\n\n",
            d.p50 / 1e3,
            d.p999 / 1e3,
            d.mean / 1e3,
            d.stages[0] / 1e3,
            d.stages[1] / 1e3,
            d.stages[2] / 1e3,
            (d.stages[0] + d.stages[2]) / 1e3,
        ));
        s.push_str("| model | batch | threads | windows/s | GFLOP/s | share of FMA peak |\n|---|---|---|---|---|---|\n");
        for t in &shape.throughput {
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.1}% |\n",
                t.model,
                t.batch,
                t.threads,
                t.windows_per_second,
                t.gflops,
                100.0 * t.peak_share
            ));
        }
        if !shape.int8.is_empty() {
            s.push_str("\n| INT8 vs f32 | weights (bytes) | file (bytes) | P50 ratio | mean ratio | network-stage ratio | test MSE f32 → int8 | ΔMSE 95% CI | coverage f32 → int8 (f32 radii) → int8 (recalibrated) |\n|---|---|---|---|---|---|---|---|---|\n");
            for q in &shape.int8 {
                let a = &q.accuracy;
                let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
                s.push_str(&format!(
                    "| {} | {} → {} ({:.2}×) | {} → {} ({:.2}×) | {:.2} | {:.2} | {:.2} | {:.4e} → {:.4e} ({:+.2}%) | [{:.2e}, {:.2e}] | {} → {} → {} |\n",
                    q.kind,
                    a.weight_bytes_f32,
                    a.weight_bytes_int8,
                    a.weight_ratio,
                    q.file_bytes_f32,
                    q.file_bytes_int8,
                    q.file_bytes_f32 as f64 / q.file_bytes_int8.max(1) as f64,
                    q.latency_p50_ratio,
                    q.latency_mean_ratio,
                    q.network_ns_ratio,
                    a.test_mse_f32,
                    a.test_mse_int8,
                    100.0 * a.mse_change,
                    a.mse_diff.low,
                    a.mse_diff.high,
                    pct(a.coverage_f32),
                    pct(a.coverage_int8_f32_radii),
                    pct(a.coverage_int8),
                ));
            }
        }
        s.push('\n');
    }
    s.push_str(&format!("FMA peak: {}.\n", e.peak_derivation));
    s
}

/// The measured FMA peak of one core: ten independent chains of FMAs in registers (enough to
/// cover the FMA latency on two pipes), in the widest registers the engine's kernels use here
/// (256-bit, or 512-bit where the CPU has AVX-512F, which the AVX2 kernels call on for long
/// products): FMA instructions per second, with the lanes per instruction.
fn measured_fma_peak() -> Option<FmaPeak> {
    #[cfg(target_arch = "x86_64")]
    if tns_engine::Isa::detect() == tns_engine::Isa::Avx2Fma {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iterations: usize) -> f32 {
            let mut acc = [_mm256_set1_ps(1.0); 10];
            let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            for _ in 0..iterations {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, b, c);
                }
            }
            acc.iter().map(|a| _mm256_cvtss_f32(*a)).sum()
        }
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn chains512(iterations: usize) -> f32 {
            let mut acc = [_mm512_set1_ps(1.0); 10];
            let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            for _ in 0..iterations {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, b, c);
                }
            }
            acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
        }
        let iterations = 50_000_000;
        let rate = |run: &dyn Fn(usize) -> f32| {
            let t0 = Instant::now();
            black_box(run(black_box(iterations)));
            (iterations * 10) as f64 / t0.elapsed().as_secs_f64() / 1e9
        };
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        let narrow = rate(&|n| unsafe { chains256(n) });
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected; AVX2 and FMA checked above.
            let wide = rate(&|n| unsafe { chains512(n) });
            return Some(FmaPeak {
                giga_fmas: wide,
                lanes: 16,
                narrower: Some(narrow),
            });
        }
        return Some(FmaPeak {
            giga_fmas: narrow,
            lanes: 8,
            narrower: None,
        });
    }
    None
}

/// FMA instructions per second (billions) of `lanes` f32 lanes each, and those of 256-bit
/// registers where the peak is the 512-bit one.
struct FmaPeak {
    giga_fmas: f64,
    lanes: u32,
    narrower: Option<f64>,
}

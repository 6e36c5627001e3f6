//! `tns bench-stream`: what one new observation costs a streamed state-space network
//! (S4D, Mamba) at growing lookbacks, beside re-running the whole window, on the engine. The
//! weights are freshly initialized (the cost of a step does not depend on their values), so
//! no training is needed at lookbacks no window of which could be trained on here. Beside the
//! network, a whole session push (`Session::push`: checks, the network, the base, the
//! interval) is timed with the state carried (`Session::carried`) and with the window re-run.
//! Last, a System B whose structural Kalman prior reads a long context (a daily seasonal,
//! `--prior-context` rows) while its MLP reads the last day: a session push with the prior
//! filtered along the stream against one that filters each context afresh.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tns_data::write_atomic;
use tns_engine::{Engine, Isa, NetworkPlan, Session};
use tns_format::Manifest;
use tns_model::{InputNormalization, ModelConfig, ModelKind, NamedTensor, NetworkConfig};

use crate::{Percentiles, percentiles};

/// Options of `tns bench-stream`.
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Networks to time (`;`-separated; only networks that stream).
    #[arg(
        long,
        value_delimiter = ';',
        default_value = "s4d:32,16,2;mamba:32,16,2,4,2"
    )]
    networks: Vec<NetworkConfig>,
    /// Lookbacks (rows of the window the network is built for).
    #[arg(long, value_delimiter = ',', default_value = "64,512,4096")]
    lookbacks: Vec<usize>,
    /// Prior contexts (rows the structural prior of the System B case reads).
    #[arg(long, value_delimiter = ',', default_value = "168,672,4096")]
    prior_contexts: Vec<usize>,
    /// Timed pushes per network and lookback (after as many untimed ones).
    #[arg(long, default_value_t = 100_000)]
    pushes: usize,
    /// Output directory (`streaming.json`, `streaming.md`).
    #[arg(long, default_value = "results/zoo")]
    out: PathBuf,
}

#[derive(Serialize)]
struct StreamRun {
    network: String,
    lookback: usize,
    features: usize,
    /// Bytes of the carried state and the step's buffers.
    stream_bytes: usize,
    push_ns: Percentiles,
    /// One forward pass over a whole window (what a session without a carried state pays
    /// per observation).
    window_ns: Percentiles,
    window_calls: usize,
    /// A session push with the network's state carried.
    session_carried_ns: Percentiles,
    /// A session push that re-runs the window.
    session_window_ns: Percentiles,
}

/// One structural-prior context length: session pushes with the prior carried and re-run.
#[derive(Serialize)]
struct PriorRun {
    context: usize,
    states: usize,
    session_carried_ns: Percentiles,
    session_window_ns: Percentiles,
    window_calls: usize,
}

/// Everything `streaming.json` holds.
#[derive(Serialize)]
struct StreamReport {
    networks: Vec<StreamRun>,
    structural_prior: Vec<PriorRun>,
}

/// A System B model over one hourly column `y`: a structural prior (local level, daily
/// seasonal with 4 harmonics: 9 states) over `context` rows, an MLP(32) over the last 24,
/// horizon 24, a split-conformal interval; fixed variances and fresh weights.
fn structural_engine(context: usize) -> Result<Engine> {
    use tns_kalman::{Season, StructuralParams, StructuralSpec, Trend};
    let mut config = ModelConfig::new(
        "stream-b",
        ModelKind::SystemB,
        &["y"],
        &["y"],
        context,
        24,
        1,
    );
    config.network = Some(NetworkConfig::Mlp { hidden: vec![32] });
    config.network_lookback = Some(24);
    config.structural = Some(StructuralSpec {
        trend: Trend::Level,
        seasons: vec![Season {
            period: 24.0,
            harmonics: 4,
        }],
        initial_variance: 1e6,
        regressors: Vec::new(),
    });
    config.validate()?;
    let tensors = tns_models::Network::init(&config, &Device::Cpu)?.to_tensors()?;
    let axes = config.kalman_axes.clone().unwrap_or_default();
    let kalman = tns_model::KalmanParameters {
        spec: tns_kalman::KalmanSpec {
            axes: axes.clone(),
            dt: 1.0,
        },
        params: axes
            .iter()
            .map(|_| tns_kalman::AxisParams {
                q: 0.02,
                r_position: 0.05,
                r_velocity: None,
                initial_velocity_var: 1.0,
            })
            .collect(),
        structural: vec![StructuralParams {
            level: 0.05,
            slope: None,
            seasonal: vec![0.001],
            observation: 0.2,
            regression: Vec::new(),
            damping: None,
            log_likelihood: 0.0,
        }],
    };
    unit_engine(config, &tensors, Some(kalman))
}

/// Session pushes of the structural System B at each prior context.
fn structural_runs(contexts: &[usize], pushes: usize) -> Result<Vec<PriorRun>> {
    // An hourly daily cycle with noise, 4096 rows, repeated.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rows: Vec<Vec<f64>> = (0..4096)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 24.0;
            vec![50.0 + 10.0 * phase.sin() + rng.random_range(-1.0..1.0)]
        })
        .collect();
    let mut runs = Vec::new();
    for &context in contexts {
        let engine = std::sync::Arc::new(structural_engine(context)?);
        let mut carried = Session::new(engine.clone()).carried()?;
        let mut windowed = Session::new(engine);
        for row in rows.iter().cycle().take(context) {
            carried.push(row)?;
            windowed.push(row)?;
        }
        let window_calls = (2_000_000 / context).clamp(200, pushes);
        let session_carried_ns = time_session(&mut carried, &rows, pushes)?;
        let session_window_ns = time_session(&mut windowed, &rows, window_calls)?;
        eprintln!(
            "structural System B, prior context {context}: session push P50 {:.2} µs carried, {:.2} µs filtering the context afresh",
            session_carried_ns.p50 / 1e3,
            session_window_ns.p50 / 1e3
        );
        runs.push(PriorRun {
            context,
            states: 9,
            session_carried_ns,
            session_window_ns,
            window_calls,
        });
    }
    Ok(runs)
}

/// A System A model over `config` with absolute inputs (unit statistics) and a split-conformal
/// interval, so that a session runs every stage.
fn session_engine(config: &ModelConfig, tensors: &[NamedTensor]) -> Result<Engine> {
    let mut config = config.clone();
    config.absolute_inputs = true;
    unit_engine(config, tensors, None)
}

/// An engine over `config` with unit normalization statistics (every column absolute unless
/// the description takes it relative), unit residual scales, `kalman` and a split-conformal
/// interval of radius 1: every stage of a prediction runs, with numbers that do not matter
/// for its cost.
fn unit_engine(
    config: ModelConfig,
    tensors: &[NamedTensor],
    kalman: Option<tns_model::KalmanParameters>,
) -> Result<Engine> {
    let features = config.features.len();
    let width = config.output_width();
    let relative = !config.absolute_inputs && config.kind.base() == tns_model::Base::KalmanPrior;
    let normalization = InputNormalization {
        mean: vec![0.0; features],
        std: vec![1.0; features],
        relative: vec![relative; features],
        future_mean: Vec::new(),
        future_std: Vec::new(),
    };
    let conformal = tns_certify::ConformalCalibration {
        alpha: 0.1,
        n_calibration: 100,
        radii: vec![1.0; width],
        scale: tns_certify::ScoreScale::Absolute,
        by_hour: None,
        quantile_regression: false,
    };
    let manifest = Manifest {
        format: tns_format::FORMAT_TAG.into(),
        format_version: 1,
        ..Manifest::unsaved(
            config,
            normalization,
            vec![1.0; width],
            kalman,
            Some(conformal),
        )
    };
    Ok(Engine::new(manifest, tensors)?)
}

/// Push latencies of `session` over `calls` rows after as many untimed ones.
fn time_session(session: &mut Session, rows: &[Vec<f64>], calls: usize) -> Result<Percentiles> {
    let mut lat = Vec::with_capacity(calls);
    for i in 0..2 * calls {
        let row = &rows[i % rows.len()];
        let t0 = Instant::now();
        black_box(session.push(black_box(row))?);
        if i >= calls {
            lat.push(t0.elapsed().as_nanos() as f64);
        }
    }
    Ok(percentiles(&lat))
}

/// Runs `tns bench-stream`.
pub fn stream(args: StreamArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let columns = ["x", "y", "vx", "vy"];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut runs = Vec::new();
    for network in &args.networks {
        for &lookback in &args.lookbacks {
            let mut config = ModelConfig::new(
                "stream",
                ModelKind::SystemA,
                &columns,
                &columns,
                lookback,
                1,
                1,
            );
            config.network = Some(network.clone());
            config.validate()?;
            let tensors = tns_models::Network::init(&config, &Device::Cpu)?.to_tensors()?;
            let plan = NetworkPlan::new(&config, &tensors, false, Isa::detect())?;
            let mut stream = plan.stream()?;
            let rows: Vec<f32> = (0..4096 * columns.len())
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let mut out = vec![0.0; plan.outputs()];
            let row = |i: usize| &rows[(i % 4096) * columns.len()..(i % 4096 + 1) * columns.len()];
            for i in 0..args.pushes {
                plan.stream_push(&mut stream, row(i), &[], &mut out);
            }
            let mut lat = Vec::with_capacity(args.pushes);
            for i in 0..args.pushes {
                let t0 = Instant::now();
                plan.stream_push(&mut stream, black_box(row(i)), &[], &mut out);
                lat.push(t0.elapsed().as_nanos() as f64);
                black_box(&out);
            }
            let push_ns = percentiles(&lat);
            // The window: as many calls as take about as long as 200k pushes would.
            let window: Vec<f32> = (0..lookback * columns.len())
                .map(|i| rows[i % rows.len()])
                .collect();
            let mut scratch = plan.scratch();
            let window_calls = (200_000 / lookback).clamp(50, 20_000);
            let mut lat = Vec::with_capacity(window_calls);
            for i in 0..2 * window_calls {
                let t0 = Instant::now();
                plan.forward(black_box(&window), &mut out, &mut scratch);
                if i >= window_calls {
                    lat.push(t0.elapsed().as_nanos() as f64);
                }
            }
            let window_ns = percentiles(&lat);
            // Whole sessions: warmed past the lookback, then timed.
            let engine = std::sync::Arc::new(session_engine(&config, &tensors)?);
            let session_rows: Vec<Vec<f64>> = rows
                .chunks_exact(columns.len())
                .map(|r| r.iter().map(|&v| f64::from(v)).collect())
                .collect();
            let mut carried = Session::new(engine.clone()).carried()?;
            let mut windowed = Session::new(engine);
            for row in session_rows.iter().cycle().take(lookback) {
                carried.push(row)?;
                windowed.push(row)?;
            }
            let session_carried_ns = time_session(&mut carried, &session_rows, args.pushes)?;
            let session_window_ns = time_session(&mut windowed, &session_rows, window_calls)?;
            eprintln!(
                "{network} lookback {lookback}: push P50 {:.2} µs, window P50 {:.1} µs, session push P50 {:.2} µs carried, {:.1} µs re-running the window",
                push_ns.p50 / 1e3,
                window_ns.p50 / 1e3,
                session_carried_ns.p50 / 1e3,
                session_window_ns.p50 / 1e3
            );
            runs.push(StreamRun {
                network: network.to_string(),
                lookback,
                features: columns.len(),
                stream_bytes: stream.heap_bytes(),
                push_ns,
                window_ns,
                window_calls,
                session_carried_ns,
                session_window_ns,
            });
        }
    }
    let structural_prior = structural_runs(&args.prior_contexts, args.pushes)?;
    let mut md = vec![
        format!(
            "Produced by `tns bench-stream` (engine, {} ISA, one core; System A networks over [lookback, 4] → 1 with freshly initialized weights; {} timed pushes after as many untimed ones; the window column times `NetworkPlan::forward` over a whole window, what each observation costs without a carried state; the session columns time a whole `Session::push` with absolute inputs and an interval, with the state carried (`carry_state`) and re-running the window):",
            format!("{:?}", Isa::detect()),
            args.pushes
        ),
        String::new(),
        "| network | lookback | stream state bytes | push P50 µs | push P99.9 µs | window P50 µs | window / push at P50 | session carried P50 µs | session carried P99.9 µs | session window P50 µs |".into(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    for r in &runs {
        md.push(format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.0}× | {:.2} | {:.2} | {:.1} |",
            r.network,
            r.lookback,
            r.stream_bytes,
            r.push_ns.p50 / 1e3,
            r.push_ns.p999 / 1e3,
            r.window_ns.p50 / 1e3,
            r.window_ns.p50 / r.push_ns.p50,
            r.session_carried_ns.p50 / 1e3,
            r.session_carried_ns.p999 / 1e3,
            r.session_window_ns.p50 / 1e3
        ));
    }
    md.extend([
        String::new(),
        "System B with a structural prior (local level + daily seasonal with 4 harmonics: 9 states; one hourly column, horizon 24) over a prior context of growing length, its MLP(32) over the last 24 rows: a whole `Session::push` with the prior filtered along the stream (`carry_state`) and filtering each context afresh (the gains are precomputed, so that costs O(context × states)):".into(),
        String::new(),
        "| prior context | session carried P50 µs | session carried P99.9 µs | session re-filtering P50 µs | session re-filtering P99.9 µs |".into(),
        "|---:|---:|---:|---:|---:|".into(),
    ]);
    for r in &structural_prior {
        md.push(format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.context,
            r.session_carried_ns.p50 / 1e3,
            r.session_carried_ns.p999 / 1e3,
            r.session_window_ns.p50 / 1e3,
            r.session_window_ns.p999 / 1e3
        ));
    }
    write_atomic(
        &args.out.join("streaming.json"),
        serde_json::to_string_pretty(&StreamReport {
            networks: runs,
            structural_prior,
        })?
        .as_bytes(),
    )?;
    let path = args.out.join("streaming.md");
    write_atomic(&path, (md.join("\n") + "\n").as_bytes())?;
    println!("{}", md.join("\n"));
    eprintln!("wrote {}", path.display());
    Ok(())
}

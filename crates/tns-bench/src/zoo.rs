//! `tns bench-zoo`: single-sample latency of every network architecture on the engine, at
//! the compact shape (`[10, 4]` → next row), a real-data shape (`[168, 4]` → 24 steps) and a
//! long window (`[512, 4]` → 24 steps, for the networks that read one), and each one's
//! training throughput (one epoch),
//! with the exported ONNX graph of each model and the timing windows written beside, so that
//! `bench/zoo/run.sh` times ONNX Runtime on the same graphs and windows in the same run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::{SplitFractions, WindowSpec, write_atomic};
use tns_model::{ModelConfig, ModelKind, NetworkConfig};
use tns_train::{FitOptions, TrainConfig, fit_model};

use crate::{Percentiles, bytemuck_f32, percentiles, time_single, timing_windows};

/// Options of `tns bench-zoo`.
#[derive(Args, Debug)]
pub struct ZooArgs {
    /// Networks to time (`;`-separated `--network` forms).
    #[arg(
        long,
        value_delimiter = ';',
        default_value = "linear;mlp:64,64;gru:32;lstm:32;tcn:16,3,6;dlinear:25;nhits:3,1,64,2;nhits:3,1,512,2;transformer:32,4,2,2,2;s4d:32,16,2;mamba:32,16,2,4,2"
    )]
    networks: Vec<NetworkConfig>,
    /// Shapes to time them at (`,`-separated: compact, real-data, long).
    #[arg(long, value_delimiter = ',', default_value = "compact,real-data,long")]
    shapes: Vec<ZooShape>,
    /// Timed single-sample calls per model.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Untimed warm-up calls per model.
    #[arg(long, default_value_t = 10_000)]
    warmup: usize,
    /// Output directory (`zoo.json`, the ONNX graphs, the windows).
    #[arg(long, default_value = "target/zoo")]
    out: PathBuf,
}

/// A window shape of the zoo's table.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZooShape {
    /// `[10, 4]` → the next row.
    Compact,
    /// `[168, 4]` → 24 steps.
    RealData,
    /// `[512, 4]` → 24 steps.
    Long,
}

/// One timed model.
#[derive(Serialize)]
struct ZooRun {
    network: String,
    shape: &'static str,
    lookback: usize,
    features: usize,
    horizon: usize,
    parameters: usize,
    macs: usize,
    /// The exported graph and the timing windows (f32, `[n, lookback, features]`).
    onnx: String,
    windows: String,
    engine_ns: Percentiles,
    /// Training throughput of its one epoch on Candle (every core; validation included).
    train_windows_per_second: Option<f64>,
}

/// Runs `tns bench-zoo`.
pub fn zoo(args: ZooArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let columns = ["x", "y", "vx", "vy"];
    let data = trajectory(&TrajectoryConfig::compact(Regime::Turn, 4000, 7));
    let mut runs = Vec::new();
    let shapes = [
        (ZooShape::Compact, "compact", 10, 1),
        (ZooShape::RealData, "real-data", 168, 24),
        (ZooShape::Long, "long", 512, 24),
    ];
    for (_, shape, lookback, horizon) in
        shapes.into_iter().filter(|(s, ..)| args.shapes.contains(s))
    {
        for network in &args.networks {
            let mut config = ModelConfig::new(
                "zoo",
                ModelKind::SystemA,
                &columns,
                &columns,
                lookback,
                horizon,
                1,
            );
            config.network = Some(network.clone());
            // A network that cannot read this window (a TCN's receptive field, a patch that
            // does not divide the lookback) is left out of this shape.
            if let Err(e) = config.validate() {
                eprintln!("{shape} {network}: skipped ({e})");
                continue;
            }
            let spec = WindowSpec {
                horizon,
                ..WindowSpec::next_step(lookback, data.column_indices(&columns)?)
            };
            let splits = data.windows(&spec, &SplitFractions::default())?;
            // Latency does not depend on how well a model is trained: one epoch.
            let options = FitOptions {
                train: TrainConfig {
                    epochs: 1,
                    ..TrainConfig::default()
                },
                choose_gate: false,
                ..FitOptions::default()
            };
            let model = fit_model(&config, data.dt(), &splits, &options)?;
            let stem = format!("{shape}-{}", network.to_string().replace([':', ','], "-"));
            let onnx_path = args.out.join(format!("{stem}.onnx"));
            let onnx = tns_onnx::export(&model.manifest, &model.tensors)?;
            write_atomic(&onnx_path, &tns_onnx::encode(&onnx))?;
            let engine = Arc::new(model.engine()?);
            let per = engine.input_len();
            let windows = timing_windows(&data, lookback, 10_000)?;
            let windows_path = args.out.join(format!("{stem}.windows.f32"));
            let f32s: Vec<f32> = windows.iter().map(|&v| v as f32).collect();
            write_atomic(&windows_path, bytemuck_f32(&f32s))?;
            let (lat, _) = time_single(&engine, &windows, per, args.warmup, args.calls)?;
            let engine_ns = percentiles(&lat);
            eprintln!(
                "{shape} {network}: engine P50 {:.2} µs, P99.9 {:.2} µs",
                engine_ns.p50 / 1e3,
                engine_ns.p999 / 1e3
            );
            runs.push(ZooRun {
                network: network.to_string(),
                shape,
                lookback,
                features: columns.len(),
                horizon,
                parameters: config.parameter_count(),
                macs: engine.network().map_or(0, |n| n.macs()),
                onnx: onnx_path.display().to_string(),
                windows: windows_path.display().to_string(),
                engine_ns,
                train_windows_per_second: model
                    .manifest
                    .training
                    .as_ref()
                    .zip(model.history.first())
                    .map(|(t, epoch)| t.train_windows as f64 / epoch.seconds),
            });
        }
    }
    let path = args.out.join("zoo.json");
    write_atomic(&path, serde_json::to_string_pretty(&runs)?.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

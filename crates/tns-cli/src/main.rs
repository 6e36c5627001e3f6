//! `tns`: generate data, train, evaluate and backtest models, predict with certificates (one
//! window or a whole file), benchmark, quantize, export and serve them, run the demo.

mod backtest;
mod calibrate;
mod data_args;
mod demo;
mod inspect;
mod lr_find;
mod outputs;
mod quantize;
mod score_file;
mod serve;
mod tune;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;
use tns_job::{EvalArgs, TrainSetup};

use tns_engine::{Engine, Predictor};

#[derive(Parser)]
#[command(
    name = "tns",
    version,
    about = "Temporal Neural Solver: certified microsecond forecasts for small temporal models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for training and batch prediction (default: every core, or RAYON_NUM_THREADS).
    /// A seeded training run gives the same model for any thread count.
    #[arg(long, global = true, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train (or fit) one model and write its model file.
    Train(Box<TrainCommand>),
    /// Evaluate model files on the test split of a dataset and compare them.
    Eval(EvalCommand),
    /// Rolling-origin backtest: fit every model on the history before each of several test
    /// periods and score it on the forecasts inside the period.
    Backtest(Box<backtest::BacktestArgs>),
    /// Predict one window and print the prediction with its certificate (JSON).
    Predict(PredictCommand),
    /// Generate trajectory data, train System A and B, evaluate every model, write plots.
    Demo(demo::DemoArgs),
    /// Measure the inference engine (latency distribution, stages, throughput, RSS) on
    /// both shapes, following the project's measurement rules.
    Bench(tns_bench::BenchArgs),
    /// Print what a model file holds (manifest, sizes, calibration, checksum).
    Inspect(inspect::InspectArgs),
    /// Learning-rate range test: train from fresh weights while the learning rate grows
    /// geometrically, and suggest a peak learning rate from the loss curve.
    LrFind(Box<lr_find::LrFindArgs>),
    /// Hyper-parameter search: random trials over learning rate, network and lookback with
    /// successive halving, in parallel, resumable; writes a table, a plot and the best model.
    Tune(Box<tune::TuneArgs>),
    /// Recalibrate a trained model's conformal interval (method, level or window) on its
    /// calibration split, without retraining.
    Calibrate(calibrate::CalibrateArgs),
    /// Quantize a model's weights to INT8, recalibrate its conformal radii and report the
    /// accuracy change.
    Quantize(quantize::QuantizeArgs),
    /// Serve models over HTTP: native and KServe V2 APIs, sessions, metrics, hot reload.
    Serve(serve::ServeArgs),
    /// Export a model for other runtimes.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Child process of `tns bench`: load one model, predict, print the peak RSS (KiB).
    #[command(hide = true)]
    BenchRss(tns_bench::RssArgs),
    /// Single-sample engine latency of every network architecture at the compact and a
    /// real-data shape, with each model's ONNX graph for `bench/zoo/run.sh`.
    BenchZoo(tns_bench::ZooArgs),
    /// Per-observation cost of a streamed S4D or Mamba network at growing lookbacks, beside
    /// re-running the window.
    BenchStream(tns_bench::StreamArgs),
    /// Where the slowest single-sample calls come from: the compact models timed as they are,
    /// pinned, with pages locked and under SCHED_FIFO, beside the OS's page faults, context
    /// switches, interrupts and steal over each run (Linux).
    BenchTail(tns_bench::TailArgs),
    /// Single-window latency of the native engine on given model inputs (the WASM build's
    /// benchmark, `web/test`, runs it beside its own).
    #[command(hide = true)]
    BenchInputs(tns_bench::InputsArgs),
    /// The core's clock, FMA latency and FMA rate, measured (JSON; `bench/long/steps.sh`).
    #[command(hide = true)]
    BenchCore,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a generated dataset as CSV (time column `t`).
    Synth {
        /// `trajectory` or `ar-regime`.
        generator: String,
        #[command(flatten)]
        synth: tns_job::SynthArgs,
        /// Output CSV path.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Write an ONNX file (opset 17, standard operators, dynamic batch) that computes the
    /// forecast, the base, the correction, the gate outcome and the conformal interval.
    Onnx {
        /// Model file.
        model: PathBuf,
        /// Output `.onnx` path.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct TrainCommand {
    #[command(flatten)]
    setup: TrainSetup,
    /// Output model file.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct EvalCommand {
    #[command(flatten)]
    args: EvalArgs,
    /// Model files; the reference is --reference, else the first System B model, else the
    /// first model.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Write plots into this folder: forecasts with the interval, MAE by step, coverage by
    /// hour of day.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Predicted rows shown in the forecast plot.
    #[arg(long, default_value_t = 168)]
    plot_points: usize,
    /// Write every test forecast as CSV (model, series, origin time, step, target,
    /// prediction, interval, actual).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Write the report (markdown) and results (JSON) with this path stem.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct PredictCommand {
    /// Model file.
    model: PathBuf,
    /// Window as JSON (`{"window": [[f1, f2, …], …]}` or a bare array of rows) or CSV with a
    /// header naming the model's features (the last `lookback` rows are used).
    #[arg(short, long, required_unless_present = "data", conflicts_with = "data")]
    input: Option<PathBuf>,
    /// Score a whole CSV instead (streaming, bounded memory): a forecast at every complete
    /// window, with the model's time, series and feature columns; needs --output.
    #[arg(long, requires = "output")]
    data: Option<PathBuf>,
    /// Forecasts CSV for --data (written as OUTPUT.partial, renamed at the end; an
    /// interrupted run resumes from OUTPUT.partial).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// With --data: a forecast every N rows of each series (default 1).
    #[arg(long, default_value_t = 1)]
    origin_every: usize,
}

/// Largest allocation glibc serves from its heaps rather than from `mmap` (the most
/// `mallopt` accepts on 64-bit Linux).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of a heap that glibc keeps rather than hands back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Keeps freed memory in the process. Training (Candle) allocates and frees a tensor of up to
/// megabytes per operation from several threads; by default glibc returns such blocks to the
/// kernel (`munmap`, or trimming the threads' heaps), so the next allocation faults its pages
/// in again and every return interrupts the other cores to flush their TLBs. Kept, the GRU,
/// Mamba and transformer trained 1.12–1.23× faster at lookback 168 and System A 1.19–1.25×
/// at lookback 336, for 5–11% more peak memory (results/train/ab-allocator.md); memory freed
/// after the peak stays with the process until it ends. The server, long-running and with
/// small allocations, keeps glibc's defaults, and so does `tns bench-rss`, whose peak RSS
/// stands for a serving process's, and any run whose environment sets glibc's own malloc
/// settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    let tuned = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "GLIBC_TUNABLES",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some());
    if tuned {
        return;
    }
    // SAFETY: `mallopt` only changes glibc's allocator parameters (a rejected value leaves
    // them as they were); it runs in `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Lets a closed pipe end the program quietly, as other command-line tools do
/// (`tns eval … | head`): Rust ignores SIGPIPE, which turns the next write into a panic.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL only changes this process's disposition of SIGPIPE; it
    // runs first in `main`, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> Result<()> {
    #[cfg(unix)]
    default_sigpipe();
    let cli = Cli::parse();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !matches!(cli.command, Command::Serve(_) | Command::BenchRss(_)) {
        keep_freed_memory();
    }
    if let Some(threads) = cli.threads {
        // SAFETY: set before any thread is spawned (parsing arguments spawns none).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    match cli.command {
        Command::Data {
            command:
                DataCommand::Synth {
                    generator,
                    synth,
                    output,
                },
        } => {
            outputs::check_output(&output, &[])?;
            let data = synth.generate(&generator)?;
            data.write_csv(&output)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "wrote {} rows × {} columns to {}",
                data.rows(),
                data.columns().len(),
                output.display()
            );
            Ok(())
        }
        Command::Train(cmd) => train(*cmd),
        Command::Eval(cmd) => eval(cmd),
        Command::Backtest(args) => backtest::run(*args),
        Command::Predict(cmd) => predict(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => tns_bench::run(args),
        Command::BenchRss(args) => tns_bench::rss_child(args),
        Command::BenchZoo(args) => tns_bench::zoo(args),
        Command::BenchStream(args) => tns_bench::stream(args),
        Command::BenchTail(args) => tns_bench::tail(args),
        Command::BenchInputs(args) => tns_bench::inputs(args),
        Command::BenchCore => tns_bench::core_timing(),
        Command::Inspect(args) => inspect::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::LrFind(args) => lr_find::run(*args),
        Command::Tune(args) => tune::run(*args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Export {
            command: ExportCommand::Onnx { model, output },
        } => export_onnx(&model, &output),
    }
}

/// Creates the folder a report or forecasts file goes into, before any work.
pub(crate) fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        None => Ok(()),
    }
}

fn train(cmd: TrainCommand) -> Result<()> {
    let data = &cmd.setup.data;
    if let Some(dir) = cmd.output.parent().filter(|p| !p.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "the output folder {} does not exist; create it or choose another -o",
            dir.display()
        );
    }
    let data_file = data.data.as_deref().into_iter().collect::<Vec<_>>();
    outputs::check_output(&cmd.output, &data_file)?;
    if let Some(dir) = &cmd.setup.train.run_dir {
        // Checked before any work: a missing folder would fail after the first epoch.
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let model = tns_job::train(&cmd.setup, true, None)?;
    let manifest = model.save(&cmd.output)?;
    if let Some(t) = &manifest.training {
        eprintln!(
            "best epoch {} of {} (validation loss {:.5}), {:.1} s",
            t.best_epoch, t.epochs_run, t.best_val_loss, t.seconds
        );
    }
    eprintln!(
        "wrote {} (sha256 {})",
        cmd.output.display(),
        &manifest.sha256()[..16]
    );
    Ok(())
}

fn eval(cmd: EvalCommand) -> Result<()> {
    let mut inputs: Vec<&Path> = cmd.models.iter().map(PathBuf::as_path).collect();
    inputs.extend(cmd.args.data.data.as_deref());
    let reports = cmd
        .report
        .iter()
        .flat_map(|stem| [stem.with_extension("md"), stem.with_extension("json")]);
    for path in reports.chain(cmd.predictions.iter().cloned()) {
        outputs::check_output(&path, &inputs)?;
    }
    for path in cmd.report.iter().chain(&cmd.predictions) {
        ensure_parent(path)?;
    }
    let mut models = cmd
        .models
        .iter()
        .map(|p| Engine::load(p).with_context(|| format!("loading {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    unique_names(&mut models, &cmd.models);
    let tns_job::Evaluation {
        report,
        test,
        series,
    } = tns_job::evaluate(&models, &cmd.args)?;
    println!("{}", report.table);
    if let Some(stem) = cmd.report {
        report.write(&stem)?;
    }
    if let Some(dir) = cmd.plots {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for path in report.plot(&dir, &test, cmd.plot_points)? {
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = cmd.predictions {
        report.write_predictions(&path, &test, &series)?;
    }
    Ok(())
}

/// Gives models that share a name distinct ones for the table: `name (file stem)`, and
/// `name (file stem) #k` where the stems are the same too.
fn unique_names(models: &mut [Engine], paths: &[PathBuf]) {
    let names: Vec<String> = models
        .iter()
        .map(|m| m.manifest().config.name.clone())
        .collect();
    let shared = |list: &[String], i: usize| list.iter().filter(|n| **n == list[i]).count() > 1;
    let mut fresh: Vec<String> = (0..names.len())
        .map(|i| {
            if !shared(&names, i) {
                return names[i].clone();
            }
            let stem = paths[i]
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            format!("{} ({stem})", names[i])
        })
        .collect();
    let first_pass = fresh.clone();
    for (i, name) in fresh.iter_mut().enumerate() {
        if shared(&first_pass, i) {
            name.push_str(&format!(" #{}", i + 1));
        }
    }
    for (m, name) in models.iter_mut().zip(&fresh) {
        if *name != m.manifest().config.name {
            m.rename(name);
        }
    }
}

fn predict(cmd: PredictCommand) -> Result<()> {
    // The inference engine, not the training stack: what a server would run.
    let engine = Arc::new(
        Engine::load(&cmd.model).with_context(|| format!("loading {}", cmd.model.display()))?,
    );
    if let (Some(data), Some(output)) = (&cmd.data, &cmd.output) {
        outputs::check_output(output, &[data, &cmd.model])?;
        if cmd.origin_every == 0 {
            bail!("--origin-every must be at least 1");
        }
        return score_file::run(engine, data, output, cmd.origin_every);
    }
    let input = cmd
        .input
        .context("give -i WINDOW or --data FILE --output FILE")?;
    let window = data_args::read_input(&input, &engine)?;
    let mut predictor = Predictor::new(engine.clone());
    let prediction = predictor.predict(&window)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&engine.certificate(prediction))?
    );
    Ok(())
}

fn export_onnx(model: &Path, output: &Path) -> Result<()> {
    outputs::check_output(output, &[model])?;
    let (manifest, tensors) = tns_format::load_model(model)?;
    let onnx = tns_onnx::export(&manifest, &tensors)
        .with_context(|| format!("exporting {}", model.display()))?;
    let bytes = tns_onnx::encode(&onnx);
    tns_data::write_atomic(output, &bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    let graph = onnx.graph.as_ref();
    let outputs: Vec<&str> = graph
        .map(|g| g.output.iter().filter_map(|o| o.name.as_deref()).collect())
        .unwrap_or_default();
    let future = manifest.config.future.as_ref().map_or(String::new(), |f| {
        format!(
            " and future [batch, {}, {}] ({})",
            manifest.config.horizon,
            f.width(),
            f.names().join(", ")
        )
    });
    println!(
        "wrote {} ({} bytes, opset {}, {} nodes); input window [batch, {}, {}]{future}; outputs: {}",
        output.display(),
        bytes.len(),
        tns_onnx::OPSET,
        graph.map_or(0, |g| g.node.len()),
        manifest.config.lookback,
        manifest.config.features.len(),
        outputs.join(", ")
    );
    Ok(())
}

//! `tns bench-tail`: where the slowest single-sample calls come from. The same calls as
//! `tns bench` are timed under four conditions, each adding one remedy to the last: as the
//! scheduler places the thread, pinned to one CPU, with every page locked in memory
//! (`mlockall`, which also pre-faults them), and under a real-time scheduling policy
//! (`SCHED_FIFO`, so no other thread of the machine preempts it). Beside each run the
//! operating system's own counters over the same loop say what happened to the thread:
//! page faults and context switches (`getrusage(RUSAGE_THREAD)`), interrupts on its CPU
//! (`/proc/interrupts`) and time the hypervisor took from it (steal, `/proc/stat`). A
//! control loop of fixed arithmetic (no memory, no engine) as long as a GRU call separates
//! what the machine does to any code from what the engine does; and the times of the slow
//! calls, folded onto the period of the kernel's timer tick, say how many of them the tick
//! itself explains.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::write_atomic;
use tns_engine::{Engine, Predictor};
use tns_format::load_model;

use crate::{Percentiles, percentiles, timing_windows};

/// Options of `tns bench-tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// Model files of the compact shape (`[10, 4]` windows of the generated `mixed`
    /// trajectory) to time; the default is the models `tns bench` keeps.
    #[arg(
        long = "model",
        default_values = [
            "results/bench/models/compact-persistence.tns",
            "results/bench/models/compact-kalman.tns",
            "results/bench/models/compact-system-a.tns",
            "results/bench/models/compact-system-b.tns",
        ]
    )]
    models: Vec<PathBuf>,
    /// Timed calls per model and condition.
    #[arg(long, default_value_t = 200_000)]
    calls: usize,
    /// Untimed warm-up calls before each timed run.
    #[arg(long, default_value_t = 10_000)]
    warmup: usize,
    /// The CPU the pinned conditions run on (default: the last one).
    #[arg(long)]
    cpu: Option<usize>,
    /// Duration (µs) of the control: a chain of arithmetic that reads no memory.
    #[arg(long, default_value_t = 2.0)]
    control_us: f64,
    /// Output directory (`tail.json`, `tail.md`).
    #[arg(long, default_value = "results/tail")]
    out: PathBuf,
}

/// Latency thresholds (µs) above which calls are counted.
const THRESHOLDS_US: [f64; 4] = [5.0, 10.0, 20.0, 50.0];

/// Calls slower than this (µs) are the "slow" ones whose times are kept.
const SLOW_US: f64 = 10.0;

/// Half-width of the phase window around the slow calls' mean phase, as a share of the
/// tick period: calls spread evenly over the period fall in it by chance with twice this
/// probability.
const PHASE_WINDOW: f64 = 0.025;

/// What each condition adds to the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Condition {
    /// Wherever the scheduler puts the thread.
    AsIs,
    /// Pinned to one CPU (`sched_setaffinity`).
    Pinned,
    /// Pinned, every page of the process locked and pre-faulted (`mlockall`).
    PinnedLocked,
    /// Pinned, locked, and `SCHED_FIFO` (preempted by nothing but the kernel).
    PinnedLockedFifo,
}

impl Condition {
    const ALL: [Self; 4] = [
        Self::AsIs,
        Self::Pinned,
        Self::PinnedLocked,
        Self::PinnedLockedFifo,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::AsIs => "as is",
            Self::Pinned => "pinned",
            Self::PinnedLocked => "pinned + mlockall",
            Self::PinnedLockedFifo => "pinned + mlockall + SCHED_FIFO",
        }
    }
}

/// What the operating system counted for the timing thread over one loop.
#[derive(Debug, Clone, Default, Serialize)]
struct OsCounters {
    minor_faults: i64,
    major_faults: i64,
    voluntary_switches: i64,
    involuntary_switches: i64,
    /// Interrupts on the CPU(s) the loop ran on, summed over every source.
    interrupts: u64,
    /// The sources with the most interrupts on those CPUs, most first.
    interrupt_sources: Vec<(String, u64)>,
    /// Time the hypervisor ran something else on those CPUs (ms; `/proc/stat` counts it in
    /// ticks of 10 ms, so short loops read 0 or 10).
    steal_ms: f64,
}

/// One timed loop.
#[derive(Serialize)]
struct TailRun {
    condition: Condition,
    /// The model's file stem, or the control's description.
    model: String,
    /// Whether the condition could be set up (`SCHED_FIFO` and `mlockall` need privileges);
    /// when not, the run is as the condition before it plus the error.
    setup_error: Option<String>,
    calls: usize,
    seconds: f64,
    latency_ns: Percentiles,
    /// Calls slower than each of [`THRESHOLDS_US`].
    slower_than_us: Vec<(f64, usize)>,
    /// When each call slower than [`SLOW_US`] started (ns after the loop's start).
    #[serde(skip)]
    slow_starts_ns: Vec<f64>,
    /// Of the calls slower than [`SLOW_US`], how many started within ±[`PHASE_WINDOW`] of
    /// a tick period of the others' mean phase (filled once the tick rate is known).
    tick_locked: Option<TickLocking>,
    os: OsCounters,
}

/// How many slow calls keep step with the timer tick.
#[derive(Serialize, Clone, Copy)]
struct TickLocking {
    slow_calls: usize,
    in_phase: usize,
    /// The share expected by chance (`2 × PHASE_WINDOW`).
    chance: f64,
    /// Mean resultant length of the phases (0: spread evenly, 1: all at one phase).
    resultant: f64,
}

impl TickLocking {
    fn of(starts_ns: &[f64], period_ns: f64) -> Option<Self> {
        if starts_ns.is_empty() {
            return None;
        }
        let angles: Vec<f64> = starts_ns
            .iter()
            .map(|t| std::f64::consts::TAU * (t / period_ns).fract())
            .collect();
        let (sin, cos) = angles
            .iter()
            .fold((0.0, 0.0), |(s, c), a| (s + a.sin(), c + a.cos()));
        let n = angles.len() as f64;
        let mean = sin.atan2(cos);
        let window = std::f64::consts::TAU * PHASE_WINDOW;
        let in_phase = angles
            .iter()
            .filter(|a| {
                let d = (*a - mean).rem_euclid(std::f64::consts::TAU);
                d.min(std::f64::consts::TAU - d) <= window
            })
            .count();
        Some(Self {
            slow_calls: angles.len(),
            in_phase,
            chance: 2.0 * PHASE_WINDOW,
            resultant: (sin * sin + cos * cos).sqrt() / n,
        })
    }
}

#[derive(Serialize)]
struct TailReport {
    cpu: String,
    logical_cpus: usize,
    pinned_cpu: usize,
    /// Timer ticks per second on the pinned CPU while it ran the pinned loops (interrupts
    /// of the local timer, `LOC`), or `None` without that line.
    local_timer_hz: Option<f64>,
    /// The CONFIG_HZ nearest that rate: the period the slow calls' phases are taken in.
    tick_hz: Option<f64>,
    git_sha: &'static str,
    runs: Vec<TailRun>,
}

/// Runs the study and writes `tail.json` and `tail.md` under `--out`.
pub fn tail(args: TailArgs) -> Result<()> {
    if args.calls < 1000 {
        bail!("--calls must be at least 1000");
    }
    let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned_cpu = args.cpu.unwrap_or(logical_cpus - 1);
    if pinned_cpu >= logical_cpus {
        bail!(
            "--cpu {pinned_cpu}: this machine has CPUs 0 to {}",
            logical_cpus - 1
        );
    }
    let mut engines = Vec::new();
    for path in &args.models {
        let (manifest, tensors) = load_model(path)
            .with_context(|| format!("{}: run `tns bench` first to write it", path.display()))?;
        let engine = Engine::new(manifest, &tensors)
            .with_context(|| format!("compiling {}", path.display()))?;
        if engine.input_len() != 10 * 4 {
            bail!(
                "{} takes {} inputs; bench-tail times models of the compact shape ([10, 4])",
                path.display(),
                engine.input_len()
            );
        }
        let stem = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        engines.push((stem, Arc::new(engine)));
    }
    let control_steps = calibrate_control(args.control_us);
    let data = trajectory(&TrajectoryConfig::compact(Regime::Mixed, 24_000, 7));
    let windows = timing_windows(&data, 10, 10_000)?;
    let mut runs = Vec::new();
    for condition in Condition::ALL {
        let setup_error = os::enter(condition, pinned_cpu).err();
        if let Some(e) = &setup_error {
            println!("{}: not set up ({e})", condition.name());
        }
        runs.push(timed(
            condition,
            &format!("control ({:.1} µs of arithmetic)", args.control_us),
            &setup_error,
            args.calls,
            |_| {
                black_box(arithmetic_chain(black_box(control_steps)));
                Ok(())
            },
        )?);
        for (stem, engine) in &engines {
            let mut predictor = Predictor::new(engine.clone());
            let per = engine.input_len();
            let n = windows.len() / per;
            let mut call = |i: usize| -> Result<()> {
                let w = &windows[(i % n) * per..(i % n + 1) * per];
                black_box(predictor.predict(black_box(w))?);
                Ok(())
            };
            for i in 0..args.warmup {
                call(i)?;
            }
            runs.push(timed(condition, stem, &setup_error, args.calls, call)?);
        }
        let last = &runs[runs.len() - 1];
        println!(
            "{}: last model P99.9 {:.2} µs, max {:.1} µs, {} interrupts",
            condition.name(),
            last.latency_ns.p999 / 1e3,
            last.latency_ns.max / 1e3,
            last.os.interrupts
        );
    }
    os::leave();
    let local_timer_hz = {
        let (ticks, seconds) = runs.iter().filter(|r| r.condition != Condition::AsIs).fold(
            (0u64, 0.0),
            |(t, s), r| {
                let loc =
                    r.os.interrupt_sources
                        .iter()
                        .find(|(name, _)| name == "LOC")
                        .map_or(0, |(_, n)| *n);
                (t + loc, s + r.seconds)
            },
        );
        (ticks > 0).then(|| ticks as f64 / seconds)
    };
    // The kernel's tick runs at CONFIG_HZ exactly; the measured rate only says which. The
    // phases need the exact period: 1% off drifts a whole period over a run of 100 ticks.
    let tick_hz = local_timer_hz.map(|hz| {
        [100.0, 250.0, 300.0, 1000.0]
            .into_iter()
            .min_by(|a: &f64, b: &f64| (a - hz).abs().total_cmp(&(b - hz).abs()))
            .unwrap_or(hz)
    });
    if let Some(hz) = tick_hz {
        for run in &mut runs {
            run.tick_locked = TickLocking::of(&run.slow_starts_ns, 1e9 / hz);
        }
    }
    let report = TailReport {
        cpu: crate::environment_cpu(),
        logical_cpus,
        pinned_cpu,
        local_timer_hz,
        tick_hz,
        git_sha: env!("TNS_GIT_SHA"),
        runs,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(
        &args.out.join("tail.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let table = markdown(&report);
    write_atomic(&args.out.join("tail.md"), table.as_bytes())?;
    println!("\n{table}\nwrote {}/tail.{{json,md}}", args.out.display());
    Ok(())
}

/// Times `calls` calls of `call` (given the call's index) and reads the OS counters around
/// the whole loop.
fn timed(
    condition: Condition,
    model: &str,
    setup_error: &Option<String>,
    calls: usize,
    mut call: impl FnMut(usize) -> Result<()>,
) -> Result<TailRun> {
    // Written before the loop, so that no first touch of their pages faults inside it.
    let mut lat = vec![0.0; calls];
    let start = Instant::now();
    let mut starts = vec![start; calls];
    let before = os::Snapshot::take();
    for (i, (ns, started)) in lat.iter_mut().zip(&mut starts).enumerate() {
        let t0 = Instant::now();
        call(i)?;
        *ns = t0.elapsed().as_nanos() as f64;
        *started = t0;
    }
    let seconds = (Instant::now() - starts[0]).as_secs_f64();
    let slow_starts_ns = lat
        .iter()
        .zip(&starts)
        .filter(|(ns, _)| **ns > SLOW_US * 1e3)
        .map(|(_, t0)| t0.duration_since(start).as_nanos() as f64)
        .collect();
    let os = os::Snapshot::take().since(&before);
    let slower_than_us = THRESHOLDS_US
        .iter()
        .map(|&us| (us, lat.iter().filter(|&&ns| ns > us * 1e3).count()))
        .collect();
    Ok(TailRun {
        condition,
        model: model.to_string(),
        setup_error: setup_error.clone(),
        calls,
        seconds,
        latency_ns: percentiles(&lat),
        slower_than_us,
        slow_starts_ns,
        tick_locked: None,
        os,
    })
}

/// A chain of `steps` dependent multiply-adds: work of a fixed length that touches no memory.
fn arithmetic_chain(steps: u64) -> f64 {
    let mut x = 1.0f64;
    for _ in 0..steps {
        x = x * 0.999_999 + 1e-7;
    }
    x
}

/// The chain length that takes `us` microseconds here (median of repeated runs).
fn calibrate_control(us: f64) -> u64 {
    let probe = 10_000u64;
    let mut ns: Vec<f64> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            black_box(arithmetic_chain(black_box(probe)));
            t0.elapsed().as_nanos() as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    let per_step = ns[ns.len() / 2] / probe as f64;
    ((us * 1e3 / per_step.max(1e-3)) as u64).max(1)
}

fn markdown(r: &TailReport) -> String {
    let mut s = format!(
        "Tail study (`tns bench-tail`): {} · {} logical CPUs · pinned conditions on CPU {} · git {} · local timer {} on that CPU; phases taken in the period of {}\n\n",
        r.cpu,
        r.logical_cpus,
        r.pinned_cpu,
        r.git_sha,
        r.local_timer_hz
            .map_or_else(|| "not reported".to_string(), |hz| format!("{hz:.0} Hz")),
        r.tick_hz
            .map_or_else(|| "no tick".to_string(), |hz| format!("a {hz:.0} Hz tick")),
    );
    s.push_str(
        "| condition | model | calls | P50 µs | P99.9 µs | max µs | > 5 µs | > 10 µs | > 20 µs | > 50 µs | > 10 µs in phase with the tick | interrupts (per s) | top sources | ctx switches vol/invol | page faults minor/major | steal ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &r.runs {
        let counts: Vec<String> = run
            .slower_than_us
            .iter()
            .map(|(_, n)| n.to_string())
            .collect();
        let sources: Vec<String> = run
            .os
            .interrupt_sources
            .iter()
            .take(3)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let condition = match &run.setup_error {
            Some(_) => format!("{} (not set up)", run.condition.name()),
            None => run.condition.name().to_string(),
        };
        s.push_str(&format!(
            "| {condition} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} ({:.0}) | {} | {}/{} | {}/{} | {:.0} |\n",
            run.model,
            run.calls,
            run.latency_ns.p50 / 1e3,
            run.latency_ns.p999 / 1e3,
            run.latency_ns.max / 1e3,
            counts.join(" | "),
            run.tick_locked.map_or("–".into(), |t| format!(
                "{} of {} (chance {:.0}%)",
                t.in_phase,
                t.slow_calls,
                100.0 * t.chance
            )),
            run.os.interrupts,
            run.os.interrupts as f64 / run.seconds,
            sources.join(", "),
            run.os.voluntary_switches,
            run.os.involuntary_switches,
            run.os.minor_faults,
            run.os.major_faults,
            run.os.steal_ms,
        ));
    }
    // The summary: the share of slow calls the tick explains, and the control against the
    // engine, over every run.
    let (mut slow, mut in_phase, mut ticks) = (0, 0, 0);
    for run in &r.runs {
        if let Some(t) = run.tick_locked {
            slow += t.slow_calls;
            in_phase += t.in_phase;
        }
        ticks += run
            .os
            .interrupt_sources
            .iter()
            .filter(|(name, _)| name == "LOC")
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    let rate = |control: bool| {
        let (n, seconds) = r
            .runs
            .iter()
            .filter(|run| run.model.starts_with("control") == control)
            .fold((0usize, 0.0), |(n, t), run| {
                (n + run.slow_starts_ns.len(), t + run.seconds)
            });
        n as f64 / seconds.max(1e-9)
    };
    s.push_str(&format!(
        "\nOver every run: {in_phase} of the {slow} calls slower than {SLOW_US} µs started within ±{:.1}% of a tick period of their run's mean phase (chance alone: {:.0}%), against {ticks} local timer interrupts; calls slower than {SLOW_US} µs per second of loop: {:.0} in the control, {:.0} in the models.\n",
        100.0 * PHASE_WINDOW,
        200.0 * PHASE_WINDOW,
        rate(true),
        rate(false),
    ));
    s
}

/// The operating-system side: setting a condition up, and reading the counters.
mod os {
    use super::{Condition, OsCounters};

    /// Sets up `condition` on the calling thread, on top of the conditions before it.
    pub(super) fn enter(condition: Condition, cpu: usize) -> Result<(), String> {
        match condition {
            Condition::AsIs => Ok(()),
            Condition::Pinned => pin(Some(cpu)),
            Condition::PinnedLocked => {
                // SAFETY: `mlockall` takes flags only; it changes the process's paging, not
                // its memory's contents.
                let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
                errno_unless_zero(rc, "mlockall")
            }
            Condition::PinnedLockedFifo => {
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: `param` is a valid `sched_param` for the duration of the call; pid
                // 0 is the calling thread.
                let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                errno_unless_zero(rc, "sched_setscheduler(SCHED_FIFO)")
            }
        }
    }

    /// Undoes every condition: the normal policy, unlocked pages, every CPU.
    pub(super) fn leave() {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in `enter`; each call only resets what `enter` set, and failures (a
        // condition that was never set up) leave the thread as it is.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
            libc::munlockall();
        }
        let _ = pin(None);
    }

    /// Pins the calling thread to `cpu`, or lets it run on every CPU.
    fn pin(cpu: Option<usize>) -> Result<(), String> {
        // SAFETY: an all-zero `cpu_set_t` is the empty set, a valid value of the type.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for c in (0..cpus).filter(|&c| cpu.is_none_or(|want| want == c)) {
            // SAFETY: `c` is below the number of CPUs, within `cpu_set_t`'s capacity.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling
        // thread.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        errno_unless_zero(rc, "sched_setaffinity")
    }

    fn errno_unless_zero(rc: i32, what: &str) -> Result<(), String> {
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", std::io::Error::last_os_error()))
        }
    }

    /// The counters at one moment.
    pub(super) struct Snapshot {
        usage: libc::rusage,
        /// The CPU the thread was on.
        cpu: Option<usize>,
        /// Per interrupt source, per CPU.
        interrupts: Vec<(String, Vec<u64>)>,
        /// Steal ticks per CPU.
        steal: Vec<u64>,
    }

    impl Snapshot {
        pub(super) fn take() -> Self {
            // SAFETY: an all-zero `rusage` is a valid value; `getrusage` fills it for the
            // calling thread.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `usage` is a valid, writable `rusage`.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
            // SAFETY: no arguments; returns the CPU or −1.
            let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok();
            Self {
                usage,
                cpu,
                interrupts: interrupts(),
                steal: steal_ticks(),
            }
        }

        /// What happened between `before` and this snapshot, on the CPU the thread ran on
        /// (both CPUs it was seen on, if it moved).
        pub(super) fn since(&self, before: &Snapshot) -> OsCounters {
            let cpus: Vec<usize> = match (before.cpu, self.cpu) {
                (Some(a), Some(b)) if a == b => vec![a],
                (Some(a), Some(b)) => vec![a, b],
                _ => Vec::new(),
            };
            let mut sources: Vec<(String, u64)> = self
                .interrupts
                .iter()
                .filter_map(|(name, counts)| {
                    let old = before.interrupts.iter().find(|(n, _)| n == name)?;
                    let delta: u64 = cpus
                        .iter()
                        .map(|&c| {
                            let now = counts.get(c).copied().unwrap_or(0);
                            now.saturating_sub(old.1.get(c).copied().unwrap_or(0))
                        })
                        .sum();
                    (delta > 0).then(|| (name.clone(), delta))
                })
                .collect();
            sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let steal: u64 = cpus
                .iter()
                .map(|&c| {
                    let now = self.steal.get(c).copied().unwrap_or(0);
                    now.saturating_sub(before.steal.get(c).copied().unwrap_or(0))
                })
                .sum();
            // SAFETY: no arguments; the number of clock ticks per second.
            let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let (now, old) = (&self.usage, &before.usage);
            OsCounters {
                minor_faults: now.ru_minflt - old.ru_minflt,
                major_faults: now.ru_majflt - old.ru_majflt,
                voluntary_switches: now.ru_nvcsw - old.ru_nvcsw,
                involuntary_switches: now.ru_nivcsw - old.ru_nivcsw,
                interrupts: sources.iter().map(|(_, n)| n).sum(),
                interrupt_sources: sources,
                steal_ms: steal as f64 * 1e3 / ticks_per_second,
            }
        }
    }

    /// `/proc/interrupts`: per source (its number or name), the count on each CPU.
    fn interrupts() -> Vec<(String, Vec<u64>)> {
        let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
        let mut lines = text.lines();
        let cpus = lines.next().map_or(0, |h| h.split_whitespace().count());
        lines
            .filter_map(|line| {
                let (name, rest) = line.split_once(':')?;
                let counts: Vec<u64> = rest
                    .split_whitespace()
                    .take(cpus)
                    .map_while(|v| v.parse().ok())
                    .collect();
                (!counts.is_empty()).then(|| (name.trim().to_string(), counts))
            })
            .collect()
    }

    /// `/proc/stat`: the steal ticks of each CPU (`cpuN` lines, 8th value).
    fn steal_ticks() -> Vec<u64> {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .nth(8)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_locking_tells_periodic_from_spread_starts() {
        let period = 4e6;
        // Slow calls one per tick, 0.3 ms after it, with 20 µs of jitter.
        let locked: Vec<f64> = (0..100)
            .map(|k| k as f64 * period + 3e5 + (k % 5) as f64 * 5e3)
            .collect();
        let t = TickLocking::of(&locked, period).unwrap();
        assert_eq!((t.in_phase, t.slow_calls), (100, 100));
        assert!(t.resultant > 0.99);
        // Starts spread evenly over the period (a golden-ratio sequence of phases).
        let spread: Vec<f64> = (0..1000)
            .map(|k| (k as f64 * 0.618_034).fract() * period + k as f64 * period)
            .collect();
        let t = TickLocking::of(&spread, period).unwrap();
        assert!(t.in_phase <= 60, "{} of 1000 in phase", t.in_phase);
        assert!(t.resultant < 0.05);
        assert!(TickLocking::of(&[], period).is_none());
    }
}

//! `tns tune`: random search over the learning rate, the network (width and depth) and the
//! lookback, with successive halving (the synchronous form of ASHA): every trial trains for
//! the first rung's epochs, the best `1/eta` go on to `eta` times as many, and so on up to
//! `--epochs`. The trials of a rung train in parallel. Trial 0 is the configuration given on
//! the command line (the default, unless options say otherwise) and always goes on to the
//! full budget, so the table shows what the search gained over it.
//!
//! Each trial trains in its own run folder (checkpoint and per-epoch metrics) with the whole
//! `--epochs` budget as its schedule, stopping at the rung's epoch count; a promoted trial
//! resumes from its checkpoint. `tune.json` is rewritten after every trial, so a killed run
//! started again with the same arguments skips what is done and resumes the rest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tns_eval::LossCurve;
use tns_model::NetworkConfig;

use tns_job::TrainSetup;

/// Arguments of `tns tune`.
#[derive(Args)]
pub struct TuneArgs {
    /// The data, the model (trial 0 trains it as given, the others change its network and
    /// lookback) and its training (`--epochs` is the largest budget a trial gets).
    #[command(flatten)]
    setup: TrainSetup,
    /// Trials, counting trial 0.
    #[arg(long, default_value_t = 9, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    trials: usize,
    /// Epochs of the first rung.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    min_epochs: usize,
    /// Halving rate: a rung keeps the best 1/eta of its trials and gives them eta times the
    /// epochs.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    eta: usize,
    /// Networks to draw from (`;`-separated).
    #[arg(
        long,
        value_delimiter = ';',
        default_value = "gru:16;gru:32;gru:64;mlp:64;mlp:64,64;mlp:128,128"
    )]
    networks: Vec<NetworkConfig>,
    /// Lookbacks to draw from.
    #[arg(long, value_delimiter = ',', default_value = "10,20,40")]
    lookbacks: Vec<usize>,
    /// Smallest learning rate (drawn log-uniformly).
    #[arg(long, default_value_t = 3e-4)]
    lr_min: f64,
    /// Largest learning rate.
    #[arg(long, default_value_t = 3e-2)]
    lr_max: f64,
    /// Seed of the search (the draws), apart from the models' seed.
    #[arg(long, default_value_t = 0)]
    search_seed: u64,
    /// Folder of the run: trials/, tune.json, tune.md, tune.svg and best.tns.
    #[arg(short, long)]
    out: PathBuf,
}

/// One trial: its configuration and what each rung measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Trial {
    id: usize,
    lr: f64,
    network: String,
    lookback: usize,
    /// `(epochs trained, validation MSE in data units)` per rung reached.
    rungs: Vec<(usize, f64)>,
}

/// What `tune.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TuneState {
    /// The arguments the trials were drawn from, so that a resumed run checks it continues
    /// the same search.
    search: String,
    trials: Vec<Trial>,
}

/// Epochs at the end of each rung: `min_epochs · eta^k`, the last one `max_epochs`.
fn rung_epochs(min_epochs: usize, eta: usize, max_epochs: usize) -> Vec<usize> {
    let mut rungs = Vec::new();
    let mut e = min_epochs.min(max_epochs);
    while e < max_epochs {
        rungs.push(e);
        e = e.saturating_mul(eta);
    }
    rungs.push(max_epochs);
    rungs
}

/// Runs `tns tune`.
pub fn run(args: TuneArgs) -> Result<()> {
    if !(args.lr_min > 0.0 && args.lr_max >= args.lr_min) {
        bail!(
            "--lr-min and --lr-max must satisfy 0 < min ≤ max, got {} and {}",
            args.lr_min,
            args.lr_max
        );
    }
    if args.networks.is_empty() || args.lookbacks.contains(&0) || args.lookbacks.is_empty() {
        bail!("--networks and --lookbacks need at least one entry each, lookbacks ≥ 1");
    }
    let trials_dir = args.out.join("trials");
    std::fs::create_dir_all(&trials_dir)
        .with_context(|| format!("creating {}", trials_dir.display()))?;
    let dataset = args.setup.data.load()?;
    let split = args.setup.data.split()?.unwrap_or_default();
    let base_network = args
        .setup
        .model
        .config(&dataset)?
        .network
        .map(|n| n.to_string());
    let Some(base_network) = base_network else {
        bail!(
            "a {} model has no network to tune",
            args.setup.model.model.name()
        );
    };
    let search = format!(
        "trials {} rungs {:?} networks {:?} lookbacks {:?} lr [{}, {}] seed {} model {} epochs {}",
        args.trials,
        rung_epochs(args.min_epochs, args.eta, args.setup.train.epochs),
        args.networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        args.lookbacks,
        args.lr_min,
        args.lr_max,
        args.search_seed,
        args.setup.model.model.name(),
        args.setup.train.epochs
    );
    let state_path = args.out.join("tune.json");
    let mut state = match std::fs::read(&state_path) {
        Ok(bytes) => {
            let state: TuneState = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", state_path.display()))?;
            if state.search != search {
                bail!(
                    "{} holds another search ({}); choose another --out or repeat its arguments",
                    state_path.display(),
                    state.search
                );
            }
            eprintln!("resuming the search in {}", args.out.display());
            state
        }
        Err(_) => TuneState {
            trials: draw_trials(&args, &base_network),
            search,
        },
    };
    let rungs = rung_epochs(args.min_epochs, args.eta, args.setup.train.epochs);
    let mut alive: Vec<usize> = (0..state.trials.len()).collect();
    for (k, &epochs) in rungs.iter().enumerate() {
        let todo: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&i| state.trials[i].rungs.len() <= k)
            .collect();
        eprintln!(
            "rung {}: {} trials to {epochs} epochs ({} already done)",
            k + 1,
            alive.len(),
            alive.len() - todo.len()
        );
        let results: Vec<(usize, Result<f64>)> = todo
            .par_iter()
            .map(|&i| {
                let trial = &state.trials[i];
                (
                    i,
                    train_trial(&args, &dataset, &split, trial, epochs, &trials_dir),
                )
            })
            .collect();
        for (i, result) in results {
            let loss = result.with_context(|| format!("trial {i}"))?;
            state.trials[i].rungs.push((epochs, loss));
            tns_data::write_atomic(
                &state_path,
                serde_json::to_string_pretty(&state)?.as_bytes(),
            )?;
        }
        if k + 1 == rungs.len() {
            break;
        }
        alive.sort_by(|&a, &b| {
            let loss = |i: usize| state.trials[i].rungs[k].1;
            loss(a).total_cmp(&loss(b))
        });
        alive.truncate(alive.len().div_ceil(args.eta).max(1));
        // Trial 0, the configuration given, always goes on: the baseline the search is
        // measured against at the full budget.
        if !alive.contains(&0) {
            alive.push(0);
        }
    }
    // The best of the trials that reached the last rung (trial 0 is among them).
    let best = alive
        .iter()
        .copied()
        .filter(|&i| state.trials[i].rungs.len() == rungs.len())
        .min_by(|&a, &b| {
            let last = |i: usize| state.trials[i].rungs.last().map_or(f64::INFINITY, |r| r.1);
            last(a).total_cmp(&last(b))
        })
        .context("no trial finished")?;
    let best_path = args.out.join("best.tns");
    std::fs::copy(trial_model(&trials_dir, best), &best_path)
        .with_context(|| format!("writing {}", best_path.display()))?;
    let table = report(&state, best, &rungs);
    tns_data::write_atomic(&args.out.join("tune.md"), table.as_bytes())?;
    let curves = state
        .trials
        .iter()
        .filter_map(|t| {
            let history = read_history(&trials_dir, t.id)?;
            Some(LossCurve {
                name: format!("trial {}", t.id),
                train: history.iter().map(|m| m.train_loss).collect(),
                val: history.iter().map(|m| m.val_loss).collect(),
            })
        })
        .collect::<Vec<_>>();
    tns_eval::plot_loss_curves(&args.out.join("tune.svg"), &curves)?;
    println!("{table}");
    println!("best: trial {best}, written to {}", best_path.display());
    Ok(())
}

/// Trial 0 as given; the others drawn from the space with the search seed.
fn draw_trials(args: &TuneArgs, base_network: &str) -> Vec<Trial> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.search_seed);
    let (lo, hi) = (args.lr_min.ln(), args.lr_max.ln());
    let mut trials = vec![Trial {
        id: 0,
        lr: args.setup.train.lr,
        network: base_network.to_string(),
        lookback: args.setup.model.lookback,
        rungs: Vec::new(),
    }];
    for id in 1..args.trials {
        let lr = if hi > lo {
            rng.random_range(lo..hi).exp()
        } else {
            args.lr_min
        };
        trials.push(Trial {
            id,
            lr,
            network: args.networks[rng.random_range(0..args.networks.len())].to_string(),
            lookback: args.lookbacks[rng.random_range(0..args.lookbacks.len())],
            rungs: Vec::new(),
        });
    }
    trials
}

fn trial_model(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("trial-{id}.tns"))
}

fn read_history(dir: &Path, id: usize) -> Option<Vec<tns_train::EpochMetrics>> {
    let text = std::fs::read(dir.join(format!("trial-{id}.metrics.json"))).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The trial's model description: the given one with the trial's lookback and network.
fn model_config(
    args: &TuneArgs,
    dataset: &tns_data::Dataset,
    trial: &Trial,
) -> Result<tns_model::ModelConfig> {
    let mut model = args.setup.model.clone();
    model.lookback = trial.lookback;
    model.network = Some(trial.network.parse().map_err(anyhow::Error::msg)?);
    model.name = Some(format!("trial-{}", trial.id));
    let mut config = model.config(dataset)?;
    args.setup.train.apply_heads(&mut config)?;
    Ok(config)
}

/// Mean squared error of a model's forecasts on the validation windows, in data units: the
/// measure trials are ranked by. (The training loss is normalized by each trial's own residual
/// scales, which change with the lookback, so it does not compare trials.)
fn validation_mse(engine: &tns_engine::Engine, val: &tns_data::WindowSet) -> Result<f64> {
    let predictions = engine.predict_all(&val.inputs())?;
    let (sum, n) = predictions
        .iter()
        .flat_map(|p| p.values().iter())
        .zip(val.outputs())
        .fold((0.0, 0usize), |(s, n), (p, y)| {
            (s + (p - y) * (p - y), n + 1)
        });
    Ok(sum / n.max(1) as f64)
}

/// Trains (or resumes) one trial up to `epochs` epochs (the weights of its best validation
/// epoch so far are kept); returns their validation MSE in data units.
fn train_trial(
    args: &TuneArgs,
    dataset: &tns_data::Dataset,
    split: &tns_data::Split,
    trial: &Trial,
    epochs: usize,
    dir: &Path,
) -> Result<f64> {
    let config = model_config(args, dataset, trial)?;
    let window = args.setup.model.window_spec(&config, dataset)?;
    let splits = dataset.windows_split(&window, split)?;
    let done = read_history(dir, trial.id).map_or(0, |h| h.len());
    let saved = trial_model(dir, trial.id);
    if done >= epochs && saved.is_file() {
        // Trained to this rung before a kill, but not recorded in tune.json.
        let config = model_config(args, dataset, trial)?;
        let window = args.setup.model.window_spec(&config, dataset)?;
        let val = dataset.windows_split(&window, split)?.val;
        return validation_mse(&tns_engine::Engine::load(&saved)?, &val);
    }
    let mut train = args.setup.train.clone();
    train.lr = trial.lr;
    let mut options = train.options(false)?;
    options.run_dir = Some(dir.to_path_buf());
    options.resume = true;
    options.stop_after = Some(epochs.saturating_sub(done).max(1));
    options.choose_gate = args.setup.model.choose_gate();
    let fitted = tns_train::fit_model(&config, dataset.dt(), &splits, &options)?;
    fitted.save(&saved)?;
    let loss = validation_mse(&fitted.engine()?, &splits.val)?;
    eprintln!(
        "trial {} (lr {:.2e}, {}, lookback {}): {} epochs, validation MSE {loss:.5}",
        trial.id,
        trial.lr,
        trial.network,
        trial.lookback,
        fitted.history.len()
    );
    Ok(loss)
}

/// The markdown table of every trial.
fn report(state: &TuneState, best: usize, rungs: &[usize]) -> String {
    let mut s = format!(
        "Successive halving over {} trials, rungs at {rungs:?} epochs; trial 0 is the configuration given. Validation MSE (data units, the weights of the best epoch so far) at each rung a trial reached.\n\n| trial | lr | network | lookback |",
        state.trials.len()
    );
    for e in rungs {
        s.push_str(&format!(" {e} epochs |"));
    }
    s.push_str(" outcome |\n|---:|---:|---|---:|");
    s.push_str(&"---:|".repeat(rungs.len()));
    s.push_str("---|\n");
    for t in &state.trials {
        s.push_str(&format!(
            "| {} | {:.2e} | {} | {} |",
            t.id, t.lr, t.network, t.lookback
        ));
        for k in 0..rungs.len() {
            s.push_str(&match t.rungs.get(k) {
                Some((_, loss)) => format!(" {loss:.5} |"),
                None => " — |".into(),
            });
        }
        let outcome = if t.id == best {
            "best".to_string()
        } else if t.rungs.len() == rungs.len() {
            "finished".to_string()
        } else {
            format!("stopped after rung {}", t.rungs.len())
        };
        s.push_str(&format!(" {outcome} |\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_by_eta_up_to_the_budget() {
        assert_eq!(rung_epochs(3, 3, 27), vec![3, 9, 27]);
        assert_eq!(rung_epochs(3, 3, 20), vec![3, 9, 20]);
        assert_eq!(rung_epochs(5, 2, 5), vec![5]);
        assert_eq!(rung_epochs(10, 3, 4), vec![4]);
    }
}

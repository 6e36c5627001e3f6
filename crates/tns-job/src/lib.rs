//! Training and evaluation jobs from their options, defined once.
//!
//! The options are clap arguments ([`TrainSetup`], [`EvalArgs`]): the `tns` binary reads them
//! from its command line, and the Python package parses its keyword arguments into the same
//! structs (`lookback=168` is `--lookback 168`), so both front ends share every option, default
//! and check. [`train`] and [`evaluate`] are the steps both then run. Errors are `anyhow`
//! values: this crate is the shared edge of the two front ends, where messages are written for
//! the user.

mod options;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use tns_data::WindowSet;
use tns_engine::Engine;
use tns_train::{TrainMonitor, TrainedModel};

pub use options::{
    CsvText, DataArgs, GateChoice, IntervalGroups, IntervalScores, ModelArgs, SynthArgs, TrainArgs,
    TrainSetup, spec_for,
};

/// Loads the data, builds the model description, splits, trains (for learned kinds) and
/// calibrates: what `tns train` runs before it writes the file. The model's manifest records
/// the data options it was trained on. Progress goes to stderr when `progress` is set and to
/// `monitor`, which may stop the run.
pub fn train(
    setup: &TrainSetup,
    progress: bool,
    monitor: Option<Arc<dyn TrainMonitor>>,
) -> Result<TrainedModel> {
    let TrainSetup { data, model, train } = setup;
    let dataset = data.load()?;
    let mut config = model.config(&dataset)?;
    train.apply_heads(&mut config)?;
    let split = data.split()?.unwrap_or_default();
    eprintln!("split: {}", split.describe());
    let window = model.window_spec(&config, &dataset)?;
    let splits = dataset.windows_split(&window, &split)?;
    eprintln!(
        "training {} over {} ({} parameters) on {} train / {} validation / {} calibration windows",
        config.kind.name(),
        config
            .network
            .as_ref()
            .map_or("no network".to_string(), ToString::to_string),
        config.parameter_count(),
        splits.train.len(),
        splits.val.len(),
        splits.cal.len()
    );
    let mut options = train.options(progress)?;
    options.choose_gate = model.choose_gate();
    options.monitor = monitor;
    let mut trained = tns_train::fit_model(&config, dataset.dt(), &splits, &options)?;
    trained.manifest.data = Some(data.spec(split, &window, dataset.dt()));
    Ok(trained)
}

/// What `tns eval` compares models on, beside the model files.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Name of the model every other is compared with (paired bootstrap of ΔMSE).
    #[arg(long)]
    pub reference: Option<String>,
    /// Season of the MASE denominator, in rows (default: a day's rows when the time column
    /// holds date-times with a step that divides a day, e.g. 24 for hourly data; else 1, the
    /// naive forecast's error on the training rows).
    #[arg(long)]
    pub season: Option<usize>,
    /// Step of the adaptive conformal interval replayed over the test windows next to the
    /// split-conformal one (relative to the initial radius, in (0, 1)); 0 leaves it out.
    #[arg(long, default_value_t = 0.05)]
    pub adaptive_gamma: f64,
}

/// A comparison and the test windows it was computed on.
#[derive(Debug)]
pub struct Evaluation {
    /// The table, the scores and the forecasts.
    pub report: tns_eval::Report,
    /// The test windows every model was scored on (the origins all models share).
    pub test: WindowSet,
    /// The dataset's series ids.
    pub series: Vec<String>,
}

/// Scores `models` (distinctly named) on the test split of the data and compares them: what
/// `tns eval` prints. The data, columns, series and split come from the first model's file
/// unless `args` gives them.
pub fn evaluate(models: &[Engine], args: &EvalArgs) -> Result<Evaluation> {
    let first_manifest = models
        .first()
        .context("give at least one model")?
        .manifest();
    let data = args.data.for_model(first_manifest);
    let dataset = data.load()?;
    let split = data.split_for(first_manifest)?;
    let first = &first_manifest.config;
    for m in &models[1..] {
        let c = &m.manifest().config;
        if (c.horizon, c.lead, &c.targets, &c.features)
            != (first.horizon, first.lead, &first.targets, &first.features)
        {
            bail!(
                "model {} forecasts another horizon, lead or targets, or reads other columns, than {}; compare models of one task",
                c.name,
                first.name
            );
        }
    }
    // One window set per model (lookbacks may differ), cut to the origins all share.
    let mut tests = Vec::new();
    let mut block = 1;
    // The first model's training rows and targets give the MASE denominators.
    let mut first_train = None;
    for m in models {
        let spec = spec_for(m.manifest(), &dataset)?;
        block = block.max(spec.span().div_ceil(spec.origin_every));
        let splits = dataset.windows_split(&spec, &split)?;
        first_train.get_or_insert((splits.train_rows, spec.targets));
        tests.push(splits.test);
    }
    let (train_rows, target_columns) = first_train.unwrap_or_default();
    let tests = tns_eval::common_origins(&tests);
    let test_refs: Vec<&WindowSet> = tests.iter().collect();
    if tests[0].is_empty() {
        bail!("the models share no test forecast origin");
    }
    let reference = args
        .reference
        .as_ref()
        .map(|name| {
            models
                .iter()
                .position(|m| &m.manifest().config.name == name)
                .with_context(|| format!("--reference {name:?} is not among the models' names"))
        })
        .transpose()?;
    let series: Vec<String> = dataset.series().iter().map(|s| s.id.clone()).collect();
    let context = tns_eval::ScoreContext {
        adaptive_gamma: (args.adaptive_gamma != 0.0).then_some(args.adaptive_gamma),
        dt: dataset.dt(),
        lead: first.lead,
        series: series.clone(),
        mase_scale: Some(tns_eval::mase_scale(
            &train_rows,
            dataset.columns().len(),
            &target_columns,
            args.season.unwrap_or_else(|| {
                // Date-time data: a day's rows; else the naive forecast.
                if tns_data::is_date_time(tests[0].origin(0).time) {
                    tns_eval::daily_season(dataset.dt())
                } else {
                    1
                }
            }),
        )),
    };
    let report = tns_eval::compare(models, &test_refs, block, reference, Some(&context))?;
    let test = tests.into_iter().next().context("no test windows")?;
    Ok(Evaluation {
        report,
        test,
        series,
    })
}

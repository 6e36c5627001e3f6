//! The options of a job, as clap arguments: what `tns train`, `eval`, `lr-find`, `tune` and
//! `backtest` read on the command line and what Python's keyword arguments are parsed into.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tns_calendar::Calendar;
use tns_certify::{GateConfig, GateMode};
use tns_data::synth::{ArRegimeConfig, Regime, TrajectoryConfig, ar_regime, trajectory};
use tns_data::{
    CsvOptions, DataSpec, Dataset, Fill, Split, SplitFractions, WindowSpec, load_csv,
    load_csv_bytes, parse_timestamp,
};
use tns_model::{FutureInputs, ModelConfig, ModelKind, NetworkConfig};
use tns_train::{FitOptions, Loss, Schedule, TrainConfig, parse_axes};

/// Settings of the built-in generators.
#[derive(Args, Clone, Debug)]
pub struct SynthArgs {
    /// Trajectory regime: cv, turn, spiral or mixed.
    #[arg(long, default_value = "mixed")]
    pub regime: Regime,
    /// Trajectory shape: `compact` (20 Hz, for [10, 4] → next row) or `seed` (2 kHz, for
    /// [256, 4] → position 1000 rows ahead).
    #[arg(long, default_value = "compact")]
    pub shape: String,
    /// Rows to generate (1 to 10,000,000: the generators build the data in memory, about
    /// 100 bytes a row with its CSV text).
    #[arg(long, default_value_t = 24_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_SYNTH_ROWS as u64))]
    pub rows: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub data_seed: u64,
}

impl SynthArgs {
    /// Runs the named generator (`trajectory` or `ar-regime`).
    pub fn generate(&self, generator: &str) -> Result<Dataset> {
        match generator {
            "trajectory" => {
                let cfg = match self.shape.as_str() {
                    "compact" => TrajectoryConfig::compact(self.regime, self.rows, self.data_seed),
                    "seed" => TrajectoryConfig::seed_design(self.regime, self.rows, self.data_seed),
                    other => bail!("unknown trajectory shape {other:?}; use compact or seed"),
                };
                Ok(trajectory(&cfg))
            }
            "ar-regime" => Ok(ar_regime(&ArRegimeConfig {
                rows: self.rows,
                switch_prob: 0.02,
                seed: self.data_seed,
            })
            .dataset),
            other => bail!("unknown generator {other:?}; use trajectory or ar-regime"),
        }
    }
}

/// Most rows a generator makes: the data and its CSV text are built in memory.
const MAX_SYNTH_ROWS: usize = 10_000_000;

/// Where the data comes from: a CSV file or a generator.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// CSV file with a header row.
    #[arg(long, conflicts_with = "synth")]
    pub data: Option<PathBuf>,
    /// Generate instead: `trajectory` or `ar-regime` (see --regime, --shape, --rows).
    #[arg(long)]
    pub synth: Option<String>,
    /// The generator's settings.
    #[command(flatten)]
    pub synth_args: SynthArgs,
    /// Time column (numeric or ISO-8601): ordering and gap checks, never a feature.
    #[arg(long)]
    pub time_column: Option<String>,
    /// Series column of a long-format file (e.g. unique_id): each series is windowed and
    /// split on its own.
    #[arg(long)]
    pub series_column: Option<String>,
    /// Keep only this series.
    #[arg(long)]
    pub series: Option<String>,
    /// Feature columns (comma-separated; default: every numeric or boolean column but the
    /// time and series columns).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Text columns to one-hot encode into 0/1 features named `COLUMN=value` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Give a pooled model the series id as one-hot features (`unique_id=FR`, …).
    #[arg(long, requires = "series_column")]
    pub series_feature: bool,
    /// Missing rows (a step a whole number of intervals long): `none` (the series is cut; no
    /// window spans a gap), `forward[:LIMIT]` (repeat the last row) or `linear[:LIMIT]`
    /// (interpolate), for gaps of at most LIMIT missing rows (default 3).
    #[arg(long, default_value = "none")]
    pub fill: Fill,
    /// Train, validation, calibration and test shares of each series' rows, in time order
    /// (default 60,15,10,15).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["val_start", "cal_start", "test_start"])]
    pub split: Option<Vec<f64>>,
    /// Split by date instead: first validation time (ISO-8601 or a number in the time
    /// column's unit); needs --cal-start and --test-start.
    #[arg(long, requires_all = ["cal_start", "test_start"])]
    pub val_start: Option<String>,
    /// First calibration time.
    #[arg(long, requires_all = ["val_start", "test_start"])]
    pub cal_start: Option<String>,
    /// First test time.
    #[arg(long, requires_all = ["val_start", "cal_start"])]
    pub test_start: Option<String>,
    /// CSV text held in memory instead of `--data` (a data frame handed over by Python),
    /// read exactly as a file.
    #[arg(skip)]
    pub frame: Option<CsvText>,
}

/// CSV text held in memory, with the name its errors give it.
#[derive(Clone, Debug)]
pub struct CsvText {
    /// What errors call the data (`DataFrame`).
    pub name: String,
    /// The CSV text, header first.
    pub bytes: std::sync::Arc<[u8]>,
}

impl DataArgs {
    /// `--categorical`, plus the series column with `--series-feature`.
    fn categorical_columns(&self) -> Vec<String> {
        let mut columns = self.categorical.clone();
        if let (true, Some(series)) = (self.series_feature, &self.series_column)
            && !columns.contains(series)
        {
            columns.push(series.clone());
        }
        columns
    }

    /// The split the user asked for, if any.
    pub fn split(&self) -> Result<Option<Split>> {
        if let Some(parts) = &self.split {
            let [train, val, cal, test] = parts[..] else {
                bail!("--split takes four shares: train,validation,calibration,test");
            };
            return Ok(Some(Split::Fractions(SplitFractions {
                train,
                val,
                cal,
                test,
            })));
        }
        let time = |flag: &str, value: &Option<String>| -> Result<Option<f64>> {
            value
                .as_deref()
                .map(|v| {
                    parse_timestamp(v).with_context(|| {
                        format!("--{flag} {v:?} is neither a number nor an ISO-8601 date-time")
                    })
                })
                .transpose()
        };
        Ok(
            match (
                time("val-start", &self.val_start)?,
                time("cal-start", &self.cal_start)?,
                time("test-start", &self.test_start)?,
            ) {
                (Some(val_start), Some(cal_start), Some(test_start)) => Some(Split::Dates {
                    train_start: None,
                    val_start,
                    cal_start,
                    test_start,
                }),
                _ => None,
            },
        )
    }

    /// These arguments completed from what a model file recorded: its time and series
    /// columns, series filter and features, unless given on the command line.
    pub fn for_model(&self, manifest: &tns_format::Manifest) -> Self {
        let mut args = self.clone();
        if let Some(d) = &manifest.data {
            args.time_column = args.time_column.or_else(|| d.time_column.clone());
            args.series_column = args.series_column.or_else(|| d.series_column.clone());
            args.series = args.series.or_else(|| d.series.clone());
            if args.fill == Fill::None {
                args.fill = d.fill;
            }
            if args.categorical.is_empty() {
                args.categorical = d.categorical.clone();
            }
        }
        if args.data.is_some() || args.frame.is_some() {
            args.features = args
                .features
                .or_else(|| Some(manifest.config.features.clone()));
        }
        args
    }

    /// The split to evaluate on: the user's, else the one the model recorded, else the
    /// default.
    pub fn split_for(&self, manifest: &tns_format::Manifest) -> Result<Split> {
        Ok(self
            .split()?
            .or_else(|| manifest.data.as_ref().map(|d| d.split))
            .unwrap_or_default())
    }

    /// What to record in a model file trained on these arguments.
    pub fn spec(&self, split: Split, window: &WindowSpec, dt: f64) -> DataSpec {
        DataSpec {
            time_column: self.time_column.clone(),
            series_column: self.series_column.clone(),
            series: self.series.clone(),
            split,
            stride: window.stride,
            origin_every: window.origin_every,
            dt: Some(dt),
            fill: self.fill,
            categorical: self.categorical_columns(),
        }
    }

    /// Loads or generates the dataset.
    pub fn load(&self) -> Result<Dataset> {
        let options = || CsvOptions {
            time_column: self.time_column.clone(),
            series_column: self.series_column.clone(),
            series: self.series.clone(),
            features: self.features.clone(),
            dt: None,
            fill: self.fill,
            categorical: self.categorical_columns(),
        };
        let loaded = match (&self.frame, &self.data) {
            (Some(text), _) => Some(load_csv_bytes(&text.name, &text.bytes, &options())?),
            (None, Some(path)) => Some(load_csv(path, &options())?),
            (None, None) => None,
        };
        match (loaded, &self.synth) {
            (Some(data), _) => {
                let gaps: usize = data
                    .series()
                    .iter()
                    .map(|s| s.segments.len().saturating_sub(1))
                    .sum();
                if gaps > 0 {
                    eprintln!(
                        "note: {gaps} gaps (steps over 1.5× the median step, {}) cut {} series into {} segments; no window spans a gap{}",
                        data.dt(),
                        data.series().len(),
                        data.series()
                            .iter()
                            .map(|s| s.segments.len())
                            .sum::<usize>(),
                        if self.fill == Fill::None {
                            " (--fill forward|linear[:N] bridges gaps of at most N missing rows)"
                        } else {
                            ""
                        }
                    );
                }
                if data.filled_rows() > 0 {
                    eprintln!(
                        "note: filled {} missing rows ({:?})",
                        data.filled_rows(),
                        self.fill
                    );
                }
                if !data.skipped_columns().is_empty() {
                    eprintln!(
                        "note: skipped columns holding text or dates: {} (features: {})",
                        data.skipped_columns().join(", "),
                        data.columns().join(", ")
                    );
                }
                Ok(data)
            }
            (None, Some(generator)) => self.synth_args.generate(generator),
            (None, None) => bail!("give --data FILE.csv or --synth trajectory|ar-regime"),
        }
    }
}

/// What model to build.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// persistence, seasonal-naive, kalman, linear, mlp, system-a or system-b.
    #[arg(long, default_value = "system-b")]
    pub model: ModelKind,
    /// Model name (default: the kind).
    #[arg(long)]
    pub name: Option<String>,
    /// Target columns (comma-separated; default: all features).
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Kalman axes as position:velocity pairs (`x:vx,y:vy`) or bare positions (`y`, a
    /// local linear trend). Default: `x:vx,y:vy` when those columns exist, else one trend
    /// axis per target.
    #[arg(long, value_delimiter = ',')]
    pub axes: Option<Vec<String>>,
    /// Input rows per window.
    #[arg(long, default_value_t = 10)]
    pub lookback: usize,
    /// Predicted steps.
    #[arg(long, default_value_t = 1)]
    pub horizon: usize,
    /// Rows from the last input row to the first predicted row.
    #[arg(long, default_value_t = 1)]
    pub lead: usize,
    /// Rows between training (and validation) windows.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Rows between calibration and test forecast origins, at a fixed phase (`--horizon 24
    /// --origin-every 24` on hourly data: one day-ahead forecast a day, at the same hour).
    #[arg(long, default_value_t = 1)]
    pub origin_every: usize,
    /// The network of a learned kind, overriding its default: `linear`, `mlp:W1[,W2,…]`
    /// (hidden widths) or `gru:H`. Defaults: linear → `linear`, mlp → `mlp:64,64`,
    /// system-a and system-b → `gru:32` (or `gru:HIDDEN` with --hidden).
    #[arg(long)]
    pub network: Option<NetworkConfig>,
    /// Hidden size of the default GRU network (system-a, system-b).
    #[arg(long, default_value_t = 32, conflicts_with = "network")]
    pub hidden: usize,
    /// Significance level of System B's gate.
    #[arg(long, default_value_t = 0.01)]
    pub gate_alpha: f64,
    /// What System B does with a correction that fails the gate's test: `reject` (fall
    /// back to the prior), `shrink` (scale it onto the ellipsoid), `keep` (apply it; the
    /// certificate still reports the failure), or `auto` (the default): the one with the
    /// lowest error on the calibration split, ties to the more conservative, recorded with
    /// its evidence in the model file and every certificate.
    #[arg(long, default_value = "auto")]
    pub gate_mode: GateChoice,
    /// Seed of initialization and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Season length in rows for `--model seasonal-naive` (e.g. 24 on hourly data, 168 for a
    /// week); the lookback is raised to the season if it is shorter.
    #[arg(long)]
    pub season: Option<usize>,
    /// Known-future covariates (comma-separated columns): their values at the predicted rows
    /// are known when the forecast is made (day-ahead load or weather forecasts, holiday
    /// flags) and join the network's input. Never a target.
    #[arg(long, value_delimiter = ',')]
    pub future: Vec<String>,
    /// Calendar features of the predicted rows' times, as sin/cos pairs: any of minute, hour,
    /// dow, month, doy (comma-separated). Needs a date-time time column.
    #[arg(long)]
    pub calendar: Option<String>,
    /// A structural prior for kalman and system-b instead of the kinematic axes: seasonal
    /// components as PERIOD:HARMONICS in rows (`24:4,168:2`: daily with 4 harmonics, weekly
    /// with 2), fitted by maximum likelihood on the training split, one model per target.
    #[arg(long)]
    pub seasons: Option<String>,
    /// Rows of history the base forecast (a Kalman prior) reads, when more than the
    /// network's `--lookback`: the window grows to this many rows and the network still reads
    /// only its last `--lookback` rows (e.g. `--prior-context 672`: four weeks for a weekly
    /// seasonal prior under a one-week network).
    #[arg(long)]
    pub prior_context: Option<usize>,
    /// Normalize every input column by its training mean and deviation instead of taking
    /// targets relative to the window's last row: what lets an S4D or Mamba session carry
    /// its state along a stream (`carry_state`).
    #[arg(long)]
    pub absolute_inputs: bool,
    /// The structural prior's trend: `level` (random walk), `local-linear` (with a slope) or
    /// `damped` (a slope damped by a factor φ in (0, 1) fitted by maximum likelihood).
    #[arg(long, default_value = "level", requires = "seasons")]
    pub trend: String,
    /// Regression of the structural prior on known-future covariates (comma-separated; each
    /// also in --future): `y = β·x + level + seasons + noise`, `β` fitted with the variances
    /// by maximum likelihood; the forecast adds `β·x` of the predicted rows.
    #[arg(long, requires = "seasons")]
    pub prior_regressors: Option<String>,
    /// IANA time zone of the calendar features (`Europe/Paris`); default: the timestamps as
    /// written (times without an offset are read as UTC).
    #[arg(long, requires = "calendar")]
    pub timezone: Option<String>,
}

/// `--gate-mode`: a fixed mode, or chosen on the calibration split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateChoice {
    /// Chosen by calibration error.
    Auto,
    /// As given.
    Fixed(GateMode),
}

impl std::str::FromStr for GateChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            other => other
                .parse()
                .map(Self::Fixed)
                .map_err(|e: String| format!("{e} (or auto)")),
        }
    }
}

impl ModelArgs {
    /// Whether fitting chooses the gate's mode on the calibration split.
    pub fn choose_gate(&self) -> bool {
        self.gate_mode == GateChoice::Auto
    }

    fn targets(&self, data: &Dataset) -> Vec<String> {
        self.targets
            .clone()
            .unwrap_or_else(|| data.columns().to_vec())
    }

    /// Rows per input window: the lookback, or the season for seasonal-naive if longer, or
    /// the prior's context if longer.
    fn lookback(&self) -> usize {
        let rows = match (self.model, self.season) {
            (ModelKind::SeasonalNaive, Some(season)) => self.lookback.max(season),
            _ => self.lookback,
        };
        rows.max(self.prior_context.unwrap_or(0))
    }

    /// The window layout of `config` (from [`ModelArgs::config`]) on `data`.
    pub fn window_spec(&self, config: &ModelConfig, data: &Dataset) -> Result<WindowSpec> {
        window_layout(config, data, self.stride, self.origin_every)
    }

    /// The known-future inputs asked for, if any.
    fn future_inputs(&self, data: &Dataset) -> Result<Option<FutureInputs>> {
        let calendar = match &self.calendar {
            None => None,
            Some(list) => {
                let first_time = data
                    .series()
                    .iter()
                    .flat_map(|s| s.segments.first())
                    .find_map(|seg| seg.times.first().copied());
                if !first_time.is_some_and(tns_data::is_date_time) {
                    bail!(
                        "--calendar needs date-time timestamps: give --time-column naming a column of dates (ISO-8601)"
                    );
                }
                let features = Calendar::parse_features(list)?;
                Some(Calendar::new(
                    features,
                    self.timezone.as_deref(),
                    data.dt(),
                )?)
            }
        };
        Ok(
            (!self.future.is_empty() || calendar.is_some()).then(|| FutureInputs {
                columns: self.future.clone(),
                calendar,
            }),
        )
    }

    /// The model config for `data`.
    pub fn config(&self, data: &Dataset) -> Result<ModelConfig> {
        let features: Vec<&str> = data.columns().iter().map(String::as_str).collect();
        let targets = self.targets(data);
        let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let mut c = ModelConfig::new(
            self.name.as_deref().unwrap_or(self.model.name()),
            self.model,
            &features,
            &target_refs,
            self.lookback(),
            self.horizon,
            self.lead,
        );
        if self.season.is_some() {
            c.season = self.season;
        }
        c.kalman_axes = Some(parse_axes(self.axes.as_deref(), data, &targets)?);
        c.seed = self.seed;
        c.absolute_inputs = self.absolute_inputs;
        c.future = self.future_inputs(data)?;
        if let Some(list) = &self.seasons {
            if c.kind.base() != tns_model::Base::KalmanPrior {
                bail!(
                    "--seasons sets a structural Kalman prior: use it with --model kalman or system-b, not {}",
                    c.kind.name()
                );
            }
            let trend = match self.trend.as_str() {
                "level" => tns_kalman::Trend::Level,
                "local-linear" => tns_kalman::Trend::LocalLinear,
                "damped" => tns_kalman::Trend::Damped,
                other => bail!("unknown --trend {other:?}; use level, local-linear or damped"),
            };
            c.structural = Some(tns_kalman::StructuralSpec {
                trend,
                seasons: tns_kalman::StructuralSpec::parse_seasons(list)?,
                initial_variance: 1e6,
                regressors: self
                    .prior_regressors
                    .as_deref()
                    .map(|list| list.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_default(),
            });
        }
        let prior_reads_future = c
            .structural
            .as_ref()
            .is_some_and(|s| !s.regressors.is_empty());
        if c.future.is_some() && !self.model.is_learned() && !prior_reads_future {
            // Only a network, or a prior with regressors, reads them.
            eprintln!(
                "note: {} has no network and ignores --future and --calendar",
                self.model.name()
            );
            c.future = None;
        }
        match (&self.network, &mut c.network) {
            (Some(_), None) => bail!(
                "--network is for learned kinds; {} has no network",
                self.model.name()
            ),
            (Some(chosen), Some(network)) => *network = chosen.clone(),
            (None, Some(NetworkConfig::Gru { hidden })) => *hidden = self.hidden,
            (None, _) => {}
        }
        if let Some(g) = &mut c.gate {
            *g = GateConfig {
                alpha: self.gate_alpha,
                mode: match self.gate_mode {
                    GateChoice::Fixed(mode) => mode,
                    GateChoice::Auto => GateMode::Reject,
                },
                evidence: None,
            };
        }
        c.validate()?;
        Ok(c)
    }
}

/// Optimization settings.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Maximum epochs.
    #[arg(long, default_value_t = 40, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub epochs: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 128, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,
    /// Peak learning rate (`tns lr-find` suggests one).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Learning-rate schedule: `cosine` (warm-up, then cosine decay), `linear` (warm-up, then
    /// linear decay) or `one-cycle` (up from lr/25 over 30% of the steps, then down).
    #[arg(long, default_value = "cosine")]
    pub schedule: Schedule,
    /// Training loss on normalized targets: `mse` (the mean) or `mae` (the median, less pulled
    /// by spikes; also what early stopping compares).
    #[arg(long, default_value = "mse")]
    pub loss: Loss,
    /// Batches whose gradients are summed before each optimizer step: an effective batch of
    /// --batch-size × --accumulate at the memory of --batch-size.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub accumulate: usize,
    /// Early-stopping patience (epochs).
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub patience: usize,
    /// Weight of the gate-aware penalty for System B (0 = plain MSE).
    #[arg(long, default_value_t = 0.0)]
    pub gate_penalty: f64,
    /// Miscoverage of the conformal interval.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Conformal scores: `split` (one width per target and step) or `normalized` (scores
    /// divided by each window's volatility, the mean absolute one-row change of each target
    /// over its last --interval-rows rows: wider after volatile stretches, narrower after
    /// calm ones; the same marginal guarantee).
    #[arg(long, value_enum, default_value_t = IntervalScores::Split)]
    pub interval: IntervalScores,
    /// Rows the normalized interval's volatility reads (default: the whole lookback; at
    /// least 2).
    #[arg(long)]
    pub interval_rows: Option<usize>,
    /// Also calibrate the interval per group: `hour` (the hour of day of the predicted step,
    /// Mondrian conformal: coverage holds at every hour, not only on average; needs
    /// `--calendar hour`).
    #[arg(long, value_enum)]
    pub interval_by: Option<IntervalGroups>,
    /// Train quantile heads beside the point forecast (the pinball loss at levels α/2 and
    /// 1 − α/2 of --alpha) and calibrate the interval by conformalized quantile regression:
    /// it grows from the predicted quantiles, so its width follows the network's own view
    /// of each window's uncertainty (with --interval normalized and --interval-by hour as
    /// well). Learned kinds only.
    #[arg(long)]
    pub quantile_heads: bool,
    /// Directory for checkpoints and the metrics log.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Resume from the checkpoint in --run-dir.
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
    /// Stop after this many epochs of this run (resume later with --resume).
    #[arg(long, requires = "run_dir", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub stop_after: Option<usize>,
}

/// The data, the model and how to train it: what `train`, `lr-find` and `tune` read.
#[derive(Args, Clone, Debug)]
pub struct TrainSetup {
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Optimization.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The conformal scores of `--interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntervalScores {
    /// `|y − ŷ|`.
    Split,
    /// `|y − ŷ|` over the window's volatility.
    Normalized,
}

/// The groups of `--interval-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntervalGroups {
    /// The hour of day of the predicted step.
    Hour,
}

impl IntervalScores {
    /// The rows a normalized interval reads (`None` for split conformal), from
    /// `--interval-rows` (default: the whole lookback).
    pub fn normalized_rows(self, interval_rows: Option<usize>) -> Result<Option<usize>> {
        match (self, interval_rows) {
            (Self::Split, Some(_)) => bail!("--interval-rows needs --interval normalized"),
            (Self::Split, None) => Ok(None),
            (Self::Normalized, Some(rows)) if rows < 2 => bail!(
                "--interval-rows must be at least 2 (the volatility reads changes between rows), got {rows}"
            ),
            (Self::Normalized, rows) => Ok(Some(rows.unwrap_or(usize::MAX))),
        }
    }
}

impl TrainArgs {
    /// Adds the quantile heads of `--quantile-heads` to a model description.
    pub fn apply_heads(&self, config: &mut ModelConfig) -> Result<()> {
        if self.quantile_heads {
            if config.network.is_none() {
                bail!(
                    "--quantile-heads trains a network's quantile heads: a {} model has no network",
                    config.kind.name()
                );
            }
            config.quantile_heads = Some(tns_model::QuantileHeads::central(self.alpha));
        }
        Ok(())
    }

    /// Fit options on the CPU, after checking the numbers clap cannot.
    pub fn options(&self, progress: bool) -> Result<FitOptions> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.gate_penalty.is_finite() && self.gate_penalty >= 0.0) {
            bail!(
                "--gate-penalty must be a number ≥ 0, got {}",
                self.gate_penalty
            );
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            bail!("--alpha must lie in (0, 1), got {}", self.alpha);
        }
        let normalized_interval_rows = self.interval.normalized_rows(self.interval_rows)?;
        Ok(FitOptions {
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                patience: self.patience,
                gate_penalty: self.gate_penalty,
                schedule: self.schedule,
                accumulate: self.accumulate,
                loss: self.loss,
                ..TrainConfig::default()
            },
            conformal_alpha: self.alpha,
            normalized_interval_rows,
            interval_by_hour: self.interval_by == Some(IntervalGroups::Hour),
            run_dir: self.run_dir.clone(),
            resume: self.resume,
            progress,
            stop_after: self.stop_after,
            ..FitOptions::default()
        })
    }
}

/// The window layout a trained model expects (forecast origins spaced as it recorded),
/// checked against `data`'s columns.
pub fn spec_for(manifest: &tns_format::Manifest, data: &Dataset) -> Result<WindowSpec> {
    let config = &manifest.config;
    if data.columns() != config.features.as_slice() {
        bail!(
            "the data has columns {:?} but model {} was trained on {:?}",
            data.columns(),
            config.name,
            config.features
        );
    }
    window_layout(
        config,
        data,
        manifest.data.as_ref().map_or(1, |d| d.stride.max(1)),
        manifest.data.as_ref().map_or(1, |d| d.origin_every.max(1)),
    )
}

/// The window layout of `config` on `data`: its lookback, horizon, lead, targets and
/// known-future inputs, with origins spaced as given.
fn window_layout(
    config: &ModelConfig,
    data: &Dataset,
    stride: usize,
    origin_every: usize,
) -> Result<WindowSpec> {
    let future = config.future.as_ref();
    Ok(WindowSpec {
        lookback: config.lookback,
        horizon: config.horizon,
        lead: config.lead,
        stride,
        origin_every,
        targets: data.column_indices(&config.targets)?,
        future: data.column_indices(future.map_or(&[][..], |f| &f.columns))?,
        calendar: future.and_then(|f| f.calendar.clone()),
    })
}

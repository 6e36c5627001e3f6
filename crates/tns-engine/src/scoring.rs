//! Forecasting along the rows of many series as they arrive: what `tns predict --data` and
//! Python's `predict_frame` run.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::{Engine, EngineError, Prediction, Predictor};

/// Why a row could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A row's time is not after the previous row's in its series.
    #[error("time {} does not increase within series {series:?}; sort the rows", tns_calendar::format_time(*time))]
    NotIncreasing {
        /// The series.
        series: String,
        /// The row's time.
        time: f64,
    },
    /// A feature value is NaN or infinite.
    #[error("series {series:?} at time {}: feature {feature:?} is {value}, not a finite number", tns_calendar::format_time(*time))]
    NotFinite {
        /// The series.
        series: String,
        /// The row's time.
        time: f64,
        /// The feature.
        feature: String,
        /// The value.
        value: f64,
    },
    /// The row does not have one value per feature.
    #[error("a row has {found} values; the model reads {expected} features")]
    Width {
        /// Values given.
        found: usize,
        /// The model's features.
        expected: usize,
    },
    /// The engine rejected the window or its known-future inputs.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The rows one series keeps.
struct SeriesRows {
    rows: VecDeque<(f64, Vec<f64>)>,
    since_origin: usize,
}

/// Feeds rows of many series, in time order within each, and issues a forecast at every
/// origin whose rows are complete and span no gap (a step longer than 1.5× the model's
/// sampling interval), every `origin_every` rows. Each series keeps only its last `lookback`
/// rows (for a model with known-future inputs, `lookback + lead + horizon − 1`: the
/// covariates of the predicted rows are read from the rows, so the forecast is issued once
/// they have arrived), so memory is bounded by `series × span × features`.
pub struct RowScorer {
    engine: Arc<Engine>,
    predictor: Predictor,
    series: HashMap<String, SeriesRows>,
    span: usize,
    origin_every: usize,
    dt: Option<f64>,
    future_columns: Vec<usize>,
    window: Vec<f64>,
    covariates: Vec<f64>,
}

impl RowScorer {
    /// A scorer for `engine`'s model, with a forecast every `origin_every` rows (at least 1)
    /// of each series.
    pub fn new(engine: Arc<Engine>, origin_every: usize) -> Result<Self, EngineError> {
        let config = &engine.manifest().config;
        let future_columns = config.future_column_indices()?;
        let span = if config.future.is_some() {
            config.lookback + config.lead + config.horizon - 1
        } else {
            config.lookback
        };
        Ok(Self {
            span,
            origin_every: origin_every.max(1),
            dt: engine.manifest().data.as_ref().and_then(|d| d.dt),
            window: vec![0.0; engine.input_len()],
            covariates: vec![0.0; config.horizon * future_columns.len()],
            future_columns,
            series: HashMap::new(),
            predictor: Predictor::new(engine.clone()),
            engine,
        })
    }

    /// Appends one row (the model's features, in order) of `series` at `time` and returns the
    /// forecast whose rows it completes, with its origin (the time of the window's last row),
    /// if any. A row rejected for its width, a value or its time leaves the scorer unchanged.
    pub fn push(
        &mut self,
        series: &str,
        time: f64,
        values: &[f64],
    ) -> Result<Option<(f64, &Prediction)>, ScoreError> {
        let engine = &self.engine;
        let config = &engine.manifest().config;
        let (lookback, f) = (config.lookback, config.features.len());
        if values.len() != f {
            return Err(ScoreError::Width {
                found: values.len(),
                expected: f,
            });
        }
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(ScoreError::NotFinite {
                series: series.to_string(),
                time,
                feature: config.features[k].clone(),
                value: values[k],
            });
        }
        let span = self.span;
        let state = match self.series.get_mut(series) {
            Some(state) => state,
            None => self
                .series
                .entry(series.to_string())
                .or_insert_with(|| SeriesRows {
                    rows: VecDeque::with_capacity(span + 1),
                    since_origin: 0,
                }),
        };
        if let Some(&(previous, _)) = state.rows.back() {
            if time <= previous {
                return Err(ScoreError::NotIncreasing {
                    series: series.to_string(),
                    time,
                });
            }
            // A gap starts a new window: no window spans it.
            if self.dt.is_some_and(|dt| time - previous > 1.5 * dt) {
                state.rows.clear();
            }
        }
        // The oldest row's buffer is reused for the new one.
        let mut row = if state.rows.len() == span {
            state.rows.pop_front().map(|(_, r)| r).unwrap_or_default()
        } else {
            Vec::with_capacity(f)
        };
        row.clear();
        row.extend_from_slice(values);
        state.rows.push_back((time, row));
        state.since_origin += 1;
        if state.rows.len() < span || state.since_origin < self.origin_every {
            return Ok(None);
        }
        state.since_origin = 0;
        // The origin is the window's last row (rows after it hold the future covariates).
        let origin = state.rows[lookback - 1].0;
        for (r, (_, v)) in state.rows.iter().take(lookback).enumerate() {
            self.window[r * f..(r + 1) * f].copy_from_slice(v);
        }
        if config.future.is_some() {
            let per = self.future_columns.len();
            for (step, known) in self.covariates.chunks_exact_mut(per.max(1)).enumerate() {
                let row = &state.rows[lookback - 1 + config.lead + step].1;
                for (k, &c) in known.iter_mut().zip(&self.future_columns) {
                    *k = row[c];
                }
            }
            engine
                .pipeline()
                .future_into(
                    &self.covariates,
                    Some(origin),
                    &mut self.window[lookback * f..],
                )
                .map_err(EngineError::from)?;
        }
        let prediction = self.predictor.predict(&self.window)?;
        Ok(Some((origin, prediction)))
    }
}

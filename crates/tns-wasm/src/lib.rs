//! The inference engine in the browser and Node (`wasm32-unknown-unknown`, wasm-bindgen): a
//! model file loaded from bytes (checksum, format and manifest checked as natively), one
//! window's forecast with its interval, gate outcome and certificate as a JS object, streaming
//! sessions, row-by-row replay of a table (the engine's `RowScorer`, as `tns predict --data`)
//! and the metadata. It runs the engine's portable kernels on one thread; no Candle.
//!
//! Arrays in results are flat and step-major: `[horizon × targets]`, target fastest.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tns_engine::{Engine, Prediction, Predictor, RowScorer};
use wasm_bindgen::prelude::*;

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Plain JS objects and arrays (not `Map`s), as `JSON.parse` would give. (Serializing to JSON
/// and parsing it on the JS side was measured slower: 35 µs against 14 µs a certificate.)
fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

/// One forecast as the page and scripts read it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ForecastJs<'a> {
    /// The origin's time (replay only).
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<f64>,
    prediction: &'a [f64],
    lower: Option<&'a [f64]>,
    upper: Option<&'a [f64]>,
    base: &'a [f64],
    correction: Option<&'a [f64]>,
    gate_passed: Option<Vec<bool>>,
    gate_statistic: Option<Vec<Option<f64>>>,
    fallback_used: bool,
    certificate: tns_certify::Certificate,
}

fn forecast_js(engine: &Engine, p: &Prediction, origin: Option<f64>) -> Result<JsValue, JsError> {
    let steps = p.forecast.gate_steps.as_ref();
    to_js(&ForecastJs {
        origin,
        prediction: p.values(),
        lower: p.interval().map(|(l, _)| l),
        upper: p.interval().map(|(_, u)| u),
        base: &p.forecast.base,
        correction: p.forecast.correction.as_deref(),
        gate_passed: steps.map(|s| s.iter().map(|g| g.passed).collect()),
        gate_statistic: steps.map(|s| {
            s.iter()
                .map(|g| g.statistic.is_finite().then_some(g.statistic))
                .collect()
        }),
        fallback_used: p.fallback_used(),
        certificate: engine.certificate(p),
    })
}

/// A trained model file compiled by the engine.
#[wasm_bindgen]
pub struct Model {
    engine: Arc<Engine>,
    predictor: Predictor,
}

#[wasm_bindgen]
impl Model {
    /// Loads a `.tns` file's bytes (checksum, format version and every manifest field are
    /// checked; a truncated or tampered file is an error that says which).
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Model, JsError> {
        let engine = Arc::new(
            Engine::from_bytes(Path::new("model.tns"), bytes).map_err(|e| {
                let message = e.to_string();
                if message.contains("unknown time zone") {
                    // A valid IANA name this build does not carry (web/build.sh chooses them).
                    return JsError::new(&format!(
                        "{message} (this WASM build carries only these zones: {})",
                        time_zones().join(", ")
                    ));
                }
                JsError::new(&message)
            })?,
        );
        Ok(Self {
            predictor: Predictor::new(engine.clone()),
            engine,
        })
    }

    fn input(
        &self,
        window: &[f64],
        future: Option<Box<[f64]>>,
        time: Option<f64>,
    ) -> Result<Option<Vec<f64>>, JsError> {
        let pipeline = self.engine.pipeline();
        if pipeline.future_width() == 0 {
            return Ok(None);
        }
        pipeline
            .assemble(window, future.as_deref(), time)
            .map(Some)
            .map_err(js_error)
    }

    /// Forecasts one window (`lookback × features` values, row-major) with the known-future
    /// covariates over the horizon (`horizon × columns`) and the origin time (seconds since
    /// 1970) when the model takes them. Returns `{prediction, lower, upper, base, correction,
    /// gatePassed, gateStatistic, fallbackUsed, certificate}`.
    pub fn predict(
        &mut self,
        window: &[f64],
        future: Option<Box<[f64]>>,
        time: Option<f64>,
    ) -> Result<JsValue, JsError> {
        let input = self.input(window, future, time)?;
        let p = self
            .predictor
            .predict(input.as_deref().unwrap_or(window))
            .map_err(js_error)?;
        forecast_js(&self.engine, p, None)
    }

    /// The forecast values only (`horizon × targets`), without building the certificate
    /// object: the engine's own cost, for timing.
    pub fn forecast(
        &mut self,
        window: &[f64],
        future: Option<Box<[f64]>>,
        time: Option<f64>,
    ) -> Result<Box<[f64]>, JsError> {
        let input = self.input(window, future, time)?;
        let p = self
            .predictor
            .predict(input.as_deref().unwrap_or(window))
            .map_err(js_error)?;
        Ok(p.values().into())
    }

    /// A streaming session: `push(row)` per observation.
    pub fn session(&self) -> Session {
        Session {
            engine: self.engine.clone(),
            inner: tns_engine::Session::new(self.engine.clone()),
        }
    }

    /// A replay of a table's rows (`push(series, time, row)`): a forecast at every complete
    /// window that spans no gap, every `originEvery` rows, the known-future covariates read
    /// from the rows after the origin, as `tns predict --data` does.
    pub fn replay(&self, origin_every: usize) -> Result<Replay, JsError> {
        Ok(Replay {
            engine: self.engine.clone(),
            scorer: RowScorer::new(self.engine.clone(), origin_every).map_err(js_error)?,
        })
    }

    /// The manifest (configuration, normalization, prior, calibration, training summary,
    /// data options, checksums).
    #[wasm_bindgen(getter)]
    pub fn metadata(&self) -> Result<JsValue, JsError> {
        to_js(self.engine.manifest())
    }

    /// The model's name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.engine.manifest().config.name.clone()
    }

    /// The model kind (`system-b`, `mlp`, …).
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        self.engine.manifest().config.kind.name().to_string()
    }

    /// Rows per window.
    #[wasm_bindgen(getter)]
    pub fn lookback(&self) -> usize {
        self.engine.manifest().config.lookback
    }

    /// Predicted steps.
    #[wasm_bindgen(getter)]
    pub fn horizon(&self) -> usize {
        self.engine.manifest().config.horizon
    }

    /// Rows from the origin to the first predicted row.
    #[wasm_bindgen(getter)]
    pub fn lead(&self) -> usize {
        self.engine.manifest().config.lead
    }

    /// The window's columns.
    #[wasm_bindgen(getter)]
    pub fn features(&self) -> Vec<String> {
        self.engine.manifest().config.features.clone()
    }

    /// The predicted columns.
    #[wasm_bindgen(getter)]
    pub fn targets(&self) -> Vec<String> {
        self.engine.manifest().config.targets.clone()
    }

    /// The known-future covariates `predict` takes per step (empty if none).
    #[wasm_bindgen(getter, js_name = futureColumns)]
    pub fn future_columns(&self) -> Vec<String> {
        self.engine.pipeline().future_columns().to_vec()
    }

    /// Whether `predict` needs the origin time (calendar features).
    #[wasm_bindgen(getter, js_name = needsTime)]
    pub fn needs_time(&self) -> bool {
        self.engine.pipeline().has_calendar()
    }

    /// The time column the model was trained with, if any.
    #[wasm_bindgen(getter, js_name = timeColumn)]
    pub fn time_column(&self) -> Option<String> {
        self.engine.manifest().data.as_ref()?.time_column.clone()
    }

    /// The series column the model was trained with, if any.
    #[wasm_bindgen(getter, js_name = seriesColumn)]
    pub fn series_column(&self) -> Option<String> {
        self.engine.manifest().data.as_ref()?.series_column.clone()
    }

    /// The model's sampling interval (seconds, or rows without a time column).
    #[wasm_bindgen(getter)]
    pub fn dt(&self) -> Option<f64> {
        self.engine.manifest().data.as_ref()?.dt
    }

    /// The SHA-256 of the model file.
    #[wasm_bindgen(getter)]
    pub fn sha256(&self) -> String {
        self.engine.manifest().sha256()
    }
}

/// A stream of observations with the state a forecast needs (O(1) per row).
#[wasm_bindgen]
pub struct Session {
    engine: Arc<Engine>,
    inner: tns_engine::Session,
}

#[wasm_bindgen]
impl Session {
    /// Appends one row (`features` values); once `lookback` rows have been seen returns the
    /// forecast from the latest window (as `Model.predict`), else `null`. A rejected row
    /// leaves the session unchanged.
    pub fn push(
        &mut self,
        row: &[f64],
        future: Option<Box<[f64]>>,
        time: Option<f64>,
    ) -> Result<JsValue, JsError> {
        match self
            .inner
            .push_with(row, future.as_deref(), time)
            .map_err(js_error)?
        {
            Some(p) => forecast_js(&self.engine, p, None),
            None => Ok(JsValue::NULL),
        }
    }

    /// Rows pushed so far.
    #[wasm_bindgen(getter)]
    pub fn observations(&self) -> f64 {
        self.inner.observations() as f64
    }
}

/// Rows of a table replayed in order (see `Model.replay`).
#[wasm_bindgen]
pub struct Replay {
    engine: Arc<Engine>,
    scorer: RowScorer,
}

#[wasm_bindgen]
impl Replay {
    /// Appends one row of `series` at `time` (the model's features, in order) and returns the
    /// forecast whose rows it completes, with its `origin` time, else `null`.
    pub fn push(&mut self, series: &str, time: f64, row: &[f64]) -> Result<JsValue, JsError> {
        match self.scorer.push(series, time, row).map_err(js_error)? {
            Some((origin, p)) => forecast_js(&self.engine, p, Some(origin)),
            None => Ok(JsValue::NULL),
        }
    }
}

/// Seconds since 1970 (UTC) of a time as TNS reads a time column: a number as it is, or an
/// ISO-8601 date-time (no offset means UTC); `undefined` if it is neither.
#[wasm_bindgen(js_name = parseTime)]
pub fn parse_time(text: &str) -> Option<f64> {
    tns_calendar::parse_timestamp(text)
}

/// The IANA time zones this build carries for calendar features.
#[wasm_bindgen(js_name = timeZones)]
pub fn time_zones() -> Vec<String> {
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name().to_string())
        .collect()
}

/// The crate's version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

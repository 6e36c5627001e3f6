//! The `tns` Python package's native module (`tns._native`, built with maturin): a model file
//! compiled by the inference engine, its predictions and certificates as numpy arrays and
//! dicts, streaming sessions, row scoring for data frames, the ONNX export and, with the
//! `train` feature, training and evaluation with the `tns` binary's own options.
//!
//! The inference path (this file, `forecast.rs`) depends on the engine, the model format and
//! the ONNX export only; training (`train.rs`) adds Candle through `tns-job`.

mod forecast;
#[cfg(feature = "train")]
mod train;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use rayon::prelude::*;
use tns_engine::{Engine, EngineError, Predictor, RowScorer};

use forecast::Forecast;

/// Turns an engine error into the Python exception a caller expects: `OSError` when the file
/// cannot be read, `ValueError` for a bad file or a bad input.
fn engine_error(e: EngineError) -> PyErr {
    match e {
        EngineError::Format(tns_format::FormatError::Io { path, source }) => {
            PyOSError::new_err(format!("{}: {source}", path.display()))
        }
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Parses JSON written by serde into Python objects (dicts, lists, floats), with Python's own
/// parser: the same document the server sends.
fn json_to_python<'py>(py: Python<'py>, json: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (json,))
}

fn json_of(value: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// A numpy float64 array from any array-like (a float64 array is borrowed, not copied).
fn f64_array<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArrayDyn<'py, f64>> {
    if let Ok(array) = obj.extract::<PyReadonlyArrayDyn<'py, f64>>() {
        return Ok(array);
    }
    let converted = obj
        .py()
        .import("numpy")?
        .call_method1("asarray", (obj, "float64"))
        .map_err(|e| PyValueError::new_err(format!("{what} is not an array of numbers: {e}")))?;
    converted.extract::<PyReadonlyArrayDyn<'py, f64>>()
}

/// The values of an array in C order, borrowed when its memory is in that order.
fn values<'a>(array: &'a PyReadonlyArrayDyn<'_, f64>) -> std::borrow::Cow<'a, [f64]> {
    in_c_order(array.as_array())
}

/// The values of a view in C order: borrowed when its memory is in that order (not, say,
/// Fortran order or strided), copied otherwise.
fn in_c_order<'a, T: Copy, D: numpy::ndarray::Dimension>(
    view: numpy::ndarray::ArrayView<'a, T, D>,
) -> std::borrow::Cow<'a, [T]> {
    match view.clone().to_slice() {
        Some(slice) => std::borrow::Cow::Borrowed(slice),
        None => std::borrow::Cow::Owned(view.iter().copied().collect()),
    }
}

/// Seconds since 1970 (UTC) of one time: a number as it is, a string as the CLI reads it
/// (ISO-8601; no offset means UTC), anything else (a `datetime`, a pandas `Timestamp`, a
/// numpy `datetime64`) through `tns._times.to_seconds`.
fn time_seconds(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(t) = obj.extract::<f64>() {
        return Ok(t);
    }
    if let Ok(text) = obj.cast::<PyString>() {
        let text = text.to_cow()?;
        return tns_data::parse_timestamp(&text).ok_or_else(|| {
            PyValueError::new_err(format!(
                "time {text:?} is neither a number nor an ISO-8601 date-time"
            ))
        });
    }
    let seconds = obj
        .py()
        .import("tns._times")?
        .call_method1("to_seconds", (obj,))?;
    seconds.extract::<f64>()
}

/// Seconds since 1970 of each of `n` times (an array of numbers, or any sequence of times).
fn times_seconds(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<f64>> {
    let times: Vec<f64> = match obj.extract::<PyReadonlyArray1<'_, f64>>() {
        Ok(array) => array.as_array().to_vec(),
        Err(_) => obj
            .try_iter()
            .map_err(|_| PyValueError::new_err("time must be a sequence of times for a batch"))?
            .map(|t| time_seconds(&t?))
            .collect::<PyResult<_>>()?,
    };
    if times.len() != n {
        return Err(PyValueError::new_err(format!(
            "{} times for {n} windows; give one origin time per window",
            times.len()
        )));
    }
    Ok(times)
}

/// A trained model file, compiled by the inference engine.
///
/// `Model(path)` or `Model(bytes)` loads one (the checksum, format and every manifest field
/// are checked); `tns.load(path)` is the same.
#[pyclass(module = "tns", subclass, frozen)]
pub struct Model {
    engine: Arc<Engine>,
    /// The model file's bytes: what `save`, `to_bytes` and the ONNX export read.
    bytes: Arc<[u8]>,
    /// The single-window predictor (its buffers are reused: no allocation per call).
    predictor: Mutex<Predictor>,
}

impl Model {
    /// Compiles a model file's bytes; `origin` names it in errors.
    fn from_bytes(origin: &Path, bytes: Vec<u8>) -> PyResult<Self> {
        let engine = Arc::new(Engine::from_bytes(origin, &bytes).map_err(engine_error)?);
        Ok(Self {
            predictor: Mutex::new(Predictor::new(engine.clone())),
            engine,
            bytes: bytes.into(),
        })
    }

    fn predictor(&self) -> MutexGuard<'_, Predictor> {
        // A panic cannot leave a predictor half-written in a way a later call would read: every
        // call overwrites its buffers. So a poisoned lock is taken over.
        self.predictor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn config(&self) -> &tns_model::ModelConfig {
        &self.engine.manifest().config
    }

    /// One model input (past window, then the future block) from a window and the optional
    /// known-future covariates `[horizon, columns]` and origin time.
    fn input(
        &self,
        window: &[f64],
        future: Option<&[f64]>,
        time: Option<f64>,
    ) -> PyResult<Vec<f64>> {
        self.engine
            .pipeline()
            .assemble(window, future, time)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn shape_error(&self, found: &[usize]) -> PyErr {
        let c = self.config();
        PyValueError::new_err(format!(
            "window has shape {found:?}; model {:?} takes one window [lookback={}, features={}] ({}) or a batch [n, {}, {}]",
            c.name,
            c.lookback,
            c.features.len(),
            c.features.join(", "),
            c.lookback,
            c.features.len()
        ))
    }

    /// Checks `future` (`[horizon, columns]` per window, `n` windows) and returns its values.
    fn future_values<'py>(
        &self,
        future: Option<&Bound<'py, PyAny>>,
        n: Option<usize>,
    ) -> PyResult<Option<Vec<f64>>> {
        let pipeline = self.engine.pipeline();
        let columns = pipeline.future_columns();
        let Some(future) = future else {
            if columns.is_empty() {
                return Ok(None);
            }
            return Err(PyValueError::new_err(format!(
                "model {:?} takes known-future covariates {columns:?} over its {} predicted steps: give future=[horizon, {}]",
                self.config().name,
                self.config().horizon,
                columns.len()
            )));
        };
        if columns.is_empty() {
            return Err(PyValueError::new_err(format!(
                "model {:?} takes no known-future covariates; leave out future",
                self.config().name
            )));
        }
        let array = f64_array(future, "future")?;
        let mut expected = vec![self.config().horizon, columns.len()];
        if let Some(n) = n {
            expected.insert(0, n);
        }
        if array.shape() != expected.as_slice() {
            return Err(PyValueError::new_err(format!(
                "future has shape {:?}; expected {expected:?} ({})",
                array.shape(),
                columns.join(", ")
            )));
        }
        Ok(Some(values(&array).into_owned()))
    }
}

#[pymethods]
impl Model {
    #[new]
    fn new(source: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = source.cast::<PyBytes>() {
            return Self::from_bytes(Path::new("<bytes>"), bytes.as_bytes().to_vec());
        }
        let path: PathBuf = source.extract()?;
        let bytes = std::fs::read(&path)
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&path, bytes)
    }

    /// Predicts one window `[lookback, features]` or a batch `[n, lookback, features]`.
    ///
    /// `future`: the known-future covariates over the horizon, `[horizon, columns]` (or
    /// `[n, horizon, columns]`), when the model takes them. `time`: the origin time (the
    /// window's last row; seconds since 1970, an ISO-8601 string, a datetime or a numpy
    /// datetime64; one per window for a batch), when the model takes calendar features.
    /// A batch runs on every core with the GIL released.
    #[pyo3(signature = (window, future = None, time = None))]
    fn predict(
        &self,
        py: Python<'_>,
        window: &Bound<'_, PyAny>,
        future: Option<&Bound<'_, PyAny>>,
        time: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Forecast> {
        let array = f64_array(window, "window")?;
        let (l, f) = (self.config().lookback, self.config().features.len());
        let shape = array.shape().to_vec();
        match shape.as_slice() {
            [rows, cols] if (*rows, *cols) == (l, f) => {
                let window = values(&array);
                let future = self.future_values(future, None)?;
                let time = time.map(time_seconds).transpose()?;
                let mut predictor = self.predictor();
                let prediction = if future.is_none() && !self.engine.pipeline().has_calendar() {
                    predictor.predict(&window)
                } else {
                    predictor.predict(&self.input(&window, future.as_deref(), time)?)
                }
                .map_err(engine_error)?
                .clone();
                Ok(Forecast::new(self.engine.clone(), vec![prediction], false))
            }
            [n, rows, cols] if (*rows, *cols) == (l, f) => {
                let n = *n;
                let windows = values(&array);
                let future = self.future_values(future, Some(n))?;
                let times = time.map(|t| times_seconds(t, n)).transpose()?;
                let inputs = if future.is_none() && times.is_none() {
                    windows
                } else {
                    let per_future = future.as_ref().map_or(0, |v| v.len() / n.max(1));
                    let mut inputs = Vec::with_capacity(n * self.engine.input_len());
                    for (i, w) in windows.chunks_exact(l * f).enumerate() {
                        let known = future
                            .as_ref()
                            .map(|v| &v[i * per_future..(i + 1) * per_future]);
                        let t = times.as_ref().map(|t| t[i]);
                        inputs.extend(
                            self.input(w, known, t)
                                .map_err(|e| PyValueError::new_err(format!("window {i}: {e}")))?,
                        );
                    }
                    std::borrow::Cow::Owned(inputs)
                };
                let engine = &self.engine;
                let predictions = py
                    .detach(|| engine.predict_all(&inputs))
                    .map_err(engine_error)?;
                Ok(Forecast::new(self.engine.clone(), predictions, true))
            }
            _ => Err(self.shape_error(&shape)),
        }
    }

    /// A streaming session: `push(row)` one observation at a time; once `lookback` rows have
    /// been seen each push returns the forecast from the latest window. `adaptive_gamma`:
    /// adaptive conformal intervals with that step. `carry_state`: an S4D or Mamba model
    /// trained with absolute inputs carries its network's state along the stream, and a model
    /// with a structural Kalman prior filters its prior along the stream (one step per row,
    /// whatever the lookback) instead of re-running the window.
    #[pyo3(signature = (*, carry_state = false, adaptive_gamma = None))]
    fn session(&self, carry_state: bool, adaptive_gamma: Option<f64>) -> PyResult<Session> {
        let mut session = tns_engine::Session::new(self.engine.clone());
        if carry_state {
            session = session.carried().map_err(engine_error)?;
        }
        if let Some(gamma) = adaptive_gamma {
            session = session.adaptive(gamma).map_err(engine_error)?;
        }
        Ok(Session {
            inner: Mutex::new(session),
        })
    }

    /// The manifest (configuration, normalization, prior, calibration, training summary,
    /// checksums) as a dict.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_python(py, &json_of(self.engine.manifest())?)
    }

    /// The model's name.
    #[getter]
    fn name(&self) -> String {
        self.config().name.clone()
    }

    /// Rows per window.
    #[getter]
    fn lookback(&self) -> usize {
        self.config().lookback
    }

    /// Predicted steps.
    #[getter]
    fn horizon(&self) -> usize {
        self.config().horizon
    }

    /// The window's columns, in order.
    #[getter]
    fn features(&self) -> Vec<String> {
        self.config().features.clone()
    }

    /// The predicted columns, in order.
    #[getter]
    fn targets(&self) -> Vec<String> {
        self.config().targets.clone()
    }

    /// The known-future covariates `predict` takes per predicted step (empty if none).
    #[getter]
    fn future_columns(&self) -> Vec<String> {
        self.engine.pipeline().future_columns().to_vec()
    }

    /// Whether `predict` needs the origin time (the model reads calendar features).
    #[getter]
    fn needs_time(&self) -> bool {
        self.engine.pipeline().has_calendar()
    }

    /// The SHA-256 of the model file: its identity.
    #[getter]
    fn sha256(&self) -> String {
        self.engine.manifest().sha256()
    }

    /// The model file's bytes (to ship the model to other processes, e.g. Dask workers).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    /// Writes the model file to `path` (atomically: a temporary file, then a rename).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        tns_data::write_atomic(&path, &self.bytes)
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))
    }

    /// Writes the whole prediction (normalization, prior, network, gate, interval) as an
    /// ONNX graph (opset 17, dynamic batch) to `path`, as `tns export onnx` does.
    fn export_onnx(&self, path: PathBuf) -> PyResult<()> {
        let name = Path::new(&self.config().name).to_path_buf();
        let (manifest, tensors) = tns_format::read_model(&name, &self.bytes)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let onnx = tns_onnx::export(&manifest, &tensors)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        tns_data::write_atomic(&path, &tns_onnx::encode(&onnx))
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))
    }

    /// Scores rows of many series (what `predict_frame` calls; the series on every core, with
    /// the GIL released): `series[i]` indexes
    /// `series_names`, `times` are seconds since 1970, `values` is `[rows, features]`. Returns
    /// the series index, the origin time and the `[horizon × targets]` prediction, lower and
    /// upper ends of every forecast (`None` ends without a calibration).
    #[allow(clippy::type_complexity)]
    fn _score_rows<'py>(
        &self,
        py: Python<'py>,
        series: PyReadonlyArray1<'py, i64>,
        series_names: Vec<String>,
        times: PyReadonlyArray1<'py, f64>,
        values: PyReadonlyArray2<'py, f64>,
        origin_every: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (series, times) = (series.as_array(), times.as_array());
        let values = values.as_array();
        let rows = series.len();
        if times.len() != rows || values.nrows() != rows {
            return Err(PyValueError::new_err(
                "series, times and values differ in length",
            ));
        }
        let width = self.config().features.len();
        if values.ncols() != width {
            return Err(PyValueError::new_err(format!(
                "values have {} columns; the model reads {width} features {:?}",
                values.ncols(),
                self.config().features
            )));
        }
        let (series, times, values) = (in_c_order(series), in_c_order(times), in_c_order(values));
        let calibrated = self.engine.pipeline().conformal().is_some();
        // Rows in runs of one series each (predict_frame sorts them so): the runs are scored in
        // parallel, each by its own scorer, and joined in order, so the result does not depend
        // on the thread count.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (row, s) in series.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if series[run.start] == *s => run.end = row + 1,
                _ => runs.push(row..row + 1),
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(run) = runs.iter().find(|run| !seen.insert(series[run.start])) {
            return Err(PyValueError::new_err(format!(
                "row {}: the rows of a series must be contiguous",
                run.start
            )));
        }
        let engine = &self.engine;
        let score_run = |run: &std::ops::Range<usize>| -> Result<Scored, String> {
            let mut scorer =
                RowScorer::new(engine.clone(), origin_every).map_err(|e| e.to_string())?;
            let mut out = Scored::default();
            for row in run.clone() {
                let s = series[row];
                let name = usize::try_from(s)
                    .ok()
                    .and_then(|s| series_names.get(s))
                    .ok_or_else(|| format!("row {row}: series index {s} out of range"))?;
                let v = &values[row * width..(row + 1) * width];
                if let Some((o, p)) = scorer
                    .push(name, times[row], v)
                    .map_err(|e| format!("row {row}: {e}"))?
                {
                    out.index.push(s);
                    out.origin.push(o);
                    out.prediction.extend_from_slice(p.values());
                    if let Some((l, u)) = p.interval() {
                        out.lower.extend_from_slice(l);
                        out.upper.extend_from_slice(u);
                    }
                }
            }
            Ok(out)
        };
        let scored = py.detach(|| -> Result<Scored, String> {
            let parts = runs
                .par_iter()
                .map(score_run)
                .collect::<Result<Vec<Scored>, String>>()?;
            let mut all = Scored::default();
            for part in parts {
                all.index.extend(part.index);
                all.origin.extend(part.origin);
                all.prediction.extend(part.prediction);
                all.lower.extend(part.lower);
                all.upper.extend(part.upper);
            }
            Ok(all)
        });
        let Scored {
            index,
            origin,
            prediction,
            lower,
            upper,
        } = scored.map_err(PyValueError::new_err)?;
        let n = index.len();
        let out = self.engine.output_len();
        let matrix = |v: Vec<f64>| -> PyResult<Bound<'py, PyAny>> {
            Ok(PyArray1::from_vec(py, v).reshape([n, out])?.into_any())
        };
        let dict = PyDict::new(py);
        dict.set_item("series", PyArray1::from_vec(py, index))?;
        dict.set_item("origin", PyArray1::from_vec(py, origin))?;
        dict.set_item("prediction", matrix(prediction)?)?;
        if calibrated {
            dict.set_item("lower", matrix(lower)?)?;
            dict.set_item("upper", matrix(upper)?)?;
        } else {
            dict.set_item("lower", py.None())?;
            dict.set_item("upper", py.None())?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let c = self.config();
        format!(
            "Model(name={:?}, kind={}, network={}, lookback={}, horizon={}, features={:?}, targets={:?})",
            c.name,
            c.kind.name(),
            c.network
                .as_ref()
                .map_or("none".to_string(), ToString::to_string),
            c.lookback,
            c.horizon,
            c.features,
            c.targets
        )
    }
}

/// Forecasts of scored rows, as `_score_rows` returns them.
#[derive(Default)]
struct Scored {
    index: Vec<i64>,
    origin: Vec<f64>,
    prediction: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
}

/// A stream of observations with the state a forecast needs (Kalman and window), updated in
/// O(1) per row.
#[pyclass(module = "tns", frozen)]
pub struct Session {
    inner: Mutex<tns_engine::Session>,
}

#[pymethods]
impl Session {
    /// Appends one row (`features` values) and returns the forecast from the latest window
    /// once `lookback` rows have been seen, else `None`. `future` and `time` as for
    /// `Model.predict` (one window's). A rejected row leaves the session unchanged.
    #[pyo3(signature = (row, future = None, time = None))]
    fn push(
        &self,
        row: &Bound<'_, PyAny>,
        future: Option<&Bound<'_, PyAny>>,
        time: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Forecast>> {
        let row = f64_array(row, "row")?;
        let row = values(&row);
        let future = future
            .map(|f| f64_array(f, "future").map(|a| values(&a).into_owned()))
            .transpose()?;
        let time = time.map(time_seconds).transpose()?;
        let mut session = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine = session.engine().clone();
        let prediction = session
            .push_with(&row, future.as_deref(), time)
            .map_err(engine_error)?;
        let Some(p) = prediction else {
            return Ok(None);
        };
        let p = p.clone();
        let certificate = session.certificate(&p);
        Ok(Some(Forecast::of_session(engine, p, certificate)))
    }

    /// Rows pushed so far.
    #[getter]
    fn observations(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observations()
    }
}

/// Seconds since 1970 (UTC) of each string, read as the CLI reads a time column (ISO-8601;
/// no offset means UTC; a number as it is).
#[pyfunction]
fn parse_times<'py>(py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let seconds = texts
        .iter()
        .map(|t| {
            tns_data::parse_timestamp(t).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "time {t:?} is neither a number nor an ISO-8601 date-time"
                ))
            })
        })
        .collect::<PyResult<Vec<f64>>>()?;
    Ok(PyArray1::from_vec(py, seconds))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Forecast>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(parse_times, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("HAS_TRAINING", cfg!(feature = "train"))?;
    #[cfg(feature = "train")]
    train::register(m)?;
    Ok(())
}

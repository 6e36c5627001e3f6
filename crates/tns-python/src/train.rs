//! Training and evaluation from Python, with the `tns` binary's own options: the keyword
//! arguments arrive as command-line flags (`lookback=168` as `--lookback 168`, made by
//! `tns/__init__.py`) and are parsed by the same clap definitions (`tns_job`), so every option,
//! default and check is the CLI's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Command, Parser};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tns_engine::Engine;
use tns_job::{CsvText, EvalArgs, TrainSetup};
use tns_train::{EpochMetrics, TrainMonitor};

use crate::{Model, json_of};

#[derive(Parser)]
#[command(name = "tns.train", no_binary_name = true)]
struct TrainOptions {
    #[command(flatten)]
    setup: TrainSetup,
}

#[derive(Parser)]
#[command(name = "tns.evaluate", no_binary_name = true)]
struct EvalOptions {
    #[command(flatten)]
    args: EvalArgs,
}

/// Parses flags with the CLI's definitions; a bad option is a `ValueError` with clap's message.
fn parse<T: Parser>(args: Vec<String>) -> PyResult<T> {
    T::try_parse_from(args).map_err(|e| PyValueError::new_err(e.render().to_string()))
}

/// The data frame's CSV text, read as a file named `name` would be.
fn frame(bytes: Option<&Bound<'_, PyBytes>>, name: &str) -> Option<CsvText> {
    bytes.map(|b| CsvText {
        name: name.to_string(),
        bytes: b.as_bytes().into(),
    })
}

/// Calls the Python progress callback and checks for a keyboard interrupt after every step;
/// the first Python exception stops training and is raised once it has stopped.
struct PythonMonitor {
    callback: Option<Py<PyAny>>,
    raised: Mutex<Option<PyErr>>,
}

impl PythonMonitor {
    fn stop(&self, error: PyErr) -> String {
        let message = error.to_string();
        *self
            .raised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
        message
    }
}

impl TrainMonitor for PythonMonitor {
    fn step(&self, step: u64, total: u64) -> Result<(), String> {
        Python::attach(|py| {
            py.check_signals().map_err(|e| self.stop(e))?;
            if let Some(callback) = &self.callback {
                let info = PyDict::new(py);
                let filled = info
                    .set_item("step", step)
                    .and_then(|()| info.set_item("total", total));
                filled
                    .and_then(|()| callback.call1(py, ("step", info)))
                    .map_err(|e| self.stop(e))?;
            }
            Ok(())
        })
    }

    fn epoch(&self, metrics: &EpochMetrics, epochs: usize) {
        let Some(callback) = &self.callback else {
            return;
        };
        Python::attach(|py| {
            let info = PyDict::new(py);
            let result = info
                .set_item("epoch", metrics.epoch)
                .and_then(|()| info.set_item("epochs", epochs))
                .and_then(|()| {
                    [
                        ("train_loss", metrics.train_loss),
                        ("val_loss", metrics.val_loss),
                        ("lr", metrics.lr),
                        ("seconds", metrics.seconds),
                    ]
                    .into_iter()
                    .try_for_each(|(k, v)| info.set_item(k, v))
                })
                .and_then(|()| callback.call1(py, ("epoch", info)).map(drop));
            if let Err(e) = result {
                // Raised at the next step's check, which stops the run.
                self.stop(e);
            }
        });
    }
}

/// Trains a model with the CLI's flags (`args`) on CSV text (`frame`, a data frame written by
/// pandas) or the file or generator the flags name; writes it to `output` when given, and
/// returns the model file's bytes.
#[pyfunction]
#[pyo3(signature = (args, frame_csv = None, output = None, callback = None))]
fn _train<'py>(
    py: Python<'py>,
    args: Vec<String>,
    frame_csv: Option<&Bound<'_, PyBytes>>,
    output: Option<PathBuf>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut options: TrainOptions = parse(args)?;
    options.setup.data.frame = frame(frame_csv, "DataFrame");
    let monitor = Arc::new(PythonMonitor {
        callback,
        raised: Mutex::new(None),
    });
    let watcher: Arc<dyn TrainMonitor> = monitor.clone();
    let trained = py.detach(|| tns_job::train(&options.setup, false, Some(watcher)));
    if let Some(raised) = monitor
        .raised
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        return Err(raised);
    }
    let trained = trained.map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    let name = output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&trained.manifest.config.name));
    let (_, bytes) = tns_format::encode_model(&name, &trained.manifest, &trained.tensors)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(path) = &output {
        tns_data::write_atomic(path, &bytes)
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    }
    Ok(PyBytes::new(py, &bytes))
}

/// Compares `models` on the test split of the data with the CLI's `eval` flags; returns the
/// report as JSON. Models that share a name are told apart as `name #k`.
#[pyfunction]
#[pyo3(signature = (models, args, frame_csv = None))]
fn _evaluate(
    py: Python<'_>,
    models: Vec<PyRef<'_, Model>>,
    args: Vec<String>,
    frame_csv: Option<&Bound<'_, PyBytes>>,
) -> PyResult<String> {
    let mut options: EvalOptions = parse(args)?;
    options.args.data.frame = frame(frame_csv, "DataFrame");
    let mut engines: Vec<Engine> = models.iter().map(|m| (*m.engine).clone()).collect();
    let names: Vec<String> = engines
        .iter()
        .map(|e| e.manifest().config.name.clone())
        .collect();
    for (i, engine) in engines.iter_mut().enumerate() {
        if names.iter().filter(|n| **n == names[i]).count() > 1 {
            engine.rename(&format!("{} #{}", names[i], i + 1));
        }
    }
    let evaluation = py
        .detach(|| tns_job::evaluate(&engines, &options.args))
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    json_of(&evaluation.report)
}

/// Every option of `command` as `(flag, help, default, takes_value)`: what the Python
/// wrapper turns keyword arguments into and documents.
fn describe(command: Command) -> Vec<(String, String, Option<String>, bool)> {
    command
        .get_arguments()
        .filter_map(|a| {
            let flag = a.get_long()?.to_string();
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let default = a
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned());
            let takes_value = a.get_action().takes_values();
            Some((flag, help, default, takes_value))
        })
        .collect()
}

/// The options of `tns.train` (`"train"`) or `tns.evaluate` (`"evaluate"`): `(flag, help,
/// default, takes_value)` per option, from the CLI's definitions.
#[pyfunction]
fn _options<'py>(py: Python<'py>, job: &str) -> PyResult<Bound<'py, PyList>> {
    let command = match job {
        "train" => TrainSetup::augment_args(Command::new("tns.train")),
        "evaluate" => EvalArgs::augment_args(Command::new("tns.evaluate")),
        other => {
            return Err(PyValueError::new_err(format!(
                "no job {other:?}; use train or evaluate"
            )));
        }
    };
    PyList::new(py, describe(command))
}

/// Adds the training functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_train, m)?)?;
    m.add_function(wrap_pyfunction!(_evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(_options, m)?)?;
    Ok(())
}

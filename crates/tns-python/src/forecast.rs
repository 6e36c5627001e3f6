//! Predictions as numpy arrays, and their certificates as dicts.

use std::sync::Arc;

use numpy::ndarray::{Array, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyList;
use tns_engine::{Engine, Prediction};

use crate::{json_of, json_to_python};

/// The forecast of one window or a batch. Every field is a numpy array shaped
/// `[horizon, targets]` for one window and `[n, horizon, targets]` for a batch (the gate's
/// fields `[horizon]` and `[n, horizon]`), made when first read; fields a model does not
/// have are `None`.
#[pyclass(module = "tns", frozen)]
pub struct Forecast {
    engine: Arc<Engine>,
    predictions: Vec<Prediction>,
    batched: bool,
    /// Certificates made where the predictions were (a session's: its adaptive interval and
    /// carried state); `None`: the engine's, made on demand.
    certificates: Option<Vec<tns_certify::Certificate>>,
}

impl Forecast {
    /// One session prediction with the session's certificate.
    pub fn of_session(
        engine: Arc<Engine>,
        prediction: Prediction,
        certificate: tns_certify::Certificate,
    ) -> Self {
        let mut forecast = Self::new(engine, vec![prediction], false);
        forecast.certificates = Some(vec![certificate]);
        forecast
    }

    /// Wraps predictions of `engine`; `batched` gives the arrays a leading batch axis.
    pub fn new(engine: Arc<Engine>, predictions: Vec<Prediction>, batched: bool) -> Self {
        Self {
            engine,
            predictions,
            batched,
            certificates: None,
        }
    }

    fn shape(&self, tail: &[usize]) -> Vec<usize> {
        let mut shape = Vec::with_capacity(tail.len() + 1);
        if self.batched {
            shape.push(self.predictions.len());
        }
        shape.extend_from_slice(tail);
        shape
    }

    fn output_shape(&self) -> Vec<usize> {
        let c = &self.engine.manifest().config;
        self.shape(&[c.horizon, c.targets.len()])
    }

    /// One array from every prediction's `field`, or `None` where the model has no such field.
    fn stack<'py, T: numpy::Element + Copy>(
        &self,
        py: Python<'py>,
        shape: Vec<usize>,
        field: impl Fn(&Prediction) -> Option<&[T]>,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<T>>>> {
        let mut flat = Vec::with_capacity(shape.iter().product());
        for p in &self.predictions {
            match field(p) {
                Some(values) => flat.extend_from_slice(values),
                None => return Ok(None),
            }
        }
        let array = Array::from_shape_vec(IxDyn(&shape), flat)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(Some(array.into_pyarray(py)))
    }

    fn gate_field<'py, T: numpy::Element + Copy>(
        &self,
        py: Python<'py>,
        read: impl Fn(&tns_certify::GateStep) -> T,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<T>>>> {
        let horizon = self.engine.manifest().config.horizon;
        let steps: Option<Vec<Vec<T>>> = self
            .predictions
            .iter()
            .map(|p| {
                p.forecast
                    .gate_steps
                    .as_ref()
                    .map(|s| s.iter().map(&read).collect())
            })
            .collect();
        let Some(steps) = steps else {
            return Ok(None);
        };
        let shape = self.shape(&[horizon]);
        let flat: Vec<T> = steps.concat();
        let array = Array::from_shape_vec(IxDyn(&shape), flat)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(Some(array.into_pyarray(py)))
    }
}

#[pymethods]
impl Forecast {
    /// The forecast.
    #[getter]
    fn prediction<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| Some(p.values()))
    }

    /// Lower ends of the conformal interval (`None` without a calibration).
    #[getter]
    fn lower<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| p.interval().map(|(l, _)| l))
    }

    /// Upper ends of the conformal interval (`None` without a calibration).
    #[getter]
    fn upper<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| p.interval().map(|(_, u)| u))
    }

    /// The network's lower quantile forecasts, which a conformalized-quantile-regression
    /// interval grows from (`None` without quantile heads).
    #[getter]
    fn quantile_lower<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| {
            p.forecast.quantiles().map(|(lower, _)| lower)
        })
    }

    /// The network's upper quantile forecasts (`None` without quantile heads).
    #[getter]
    fn quantile_upper<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| {
            p.forecast.quantiles().map(|(_, upper)| upper)
        })
    }

    /// The base forecast (the Kalman prior's mean, or the last value).
    #[getter]
    fn base<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| Some(&p.forecast.base))
    }

    /// The network's proposed correction in data units (`None` without a network).
    #[getter]
    fn correction<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.stack(py, self.output_shape(), |p| {
            p.forecast.correction.as_deref()
        })
    }

    /// Whether the gate accepted the correction, per step (`None` without a gate).
    #[getter]
    fn gate_passed<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<bool>>>> {
        self.gate_field(py, |s| s.passed)
    }

    /// The gate's statistic `d² = rᵀ S⁻¹ r` per step (NaN where the correction was not
    /// finite; `None` without a gate).
    #[getter]
    fn gate_statistic<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f64>>>> {
        self.gate_field(py, |s| s.statistic)
    }

    /// One certificate per window, as dicts equal to the server's JSON.
    fn certificates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        match &self.certificates {
            Some(certificates) => {
                for c in certificates {
                    list.append(json_to_python(py, &json_of(c)?)?)?;
                }
            }
            None => {
                for p in &self.predictions {
                    list.append(json_to_python(py, &json_of(&self.engine.certificate(p))?)?)?;
                }
            }
        }
        Ok(list)
    }

    fn __len__(&self) -> usize {
        self.predictions.len()
    }

    fn __repr__(&self) -> String {
        let fallbacks = self
            .predictions
            .iter()
            .filter(|p| p.fallback_used())
            .count();
        format!(
            "Forecast(model={:?}, windows={}, shape={:?}, calibrated={}, fallbacks={fallbacks})",
            self.engine.manifest().config.name,
            self.predictions.len(),
            self.output_shape(),
            self.predictions
                .first()
                .is_some_and(|p| p.interval().is_some())
        )
    }
}

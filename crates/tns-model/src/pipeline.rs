//! Everything around the network, driven by the manifest: input checks, normalization, the
//! base forecast (last value or Kalman prior), de-normalization of the network output, the
//! gate and the certificate. The training side and the inference engine both call this,
//! so they cannot disagree about anything but the network itself.

use tns_certify::{
    Certificate, CertificateInputs, ConformalCalibration, Gate, GateScratch, GateStep,
    ModelIdentity,
};
use tns_kalman::{KalmanError, KalmanPrior};

use crate::{Base, ConfigError, InputNormalization, KalmanParameters, ModelConfig, ModelKind};

/// A window that cannot be predicted from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The window has the wrong number of values.
    #[error("window has {found} values; expected lookback × features = {lookback} × {features} = {}", lookback * features)]
    Shape {
        /// Values given.
        found: usize,
        /// The model's lookback.
        lookback: usize,
        /// The model's feature count.
        features: usize,
    },
    /// A value is NaN or infinite.
    #[error("window row {row}, feature {feature:?}: {value} is not finite")]
    NotFinite {
        /// 0-based row.
        row: usize,
        /// Column name.
        feature: String,
        /// The value.
        value: f64,
    },
    /// The gate could not be evaluated on this window.
    #[error("the gate cannot be evaluated on this window: {0}")]
    Gate(#[source] tns_certify::GateError),
}

/// Why the parts of a model do not make a runnable pipeline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    /// The description itself is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A fitted vector has the wrong length.
    #[error("{what} has {found} entries, the description needs {expected}")]
    Length {
        /// Which vector.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length the description derives.
        expected: usize,
    },
    /// A normalization or residual scale is zero, negative or not finite.
    #[error("normalization and residual scales must be positive and finite")]
    Scale,
    /// A Kalman-based kind without its fitted parameters.
    #[error("Kalman-based model without Kalman parameters")]
    MissingKalman,
    /// The Kalman parameters do not make a prior.
    #[error("the Kalman prior is invalid: {0}")]
    Kalman(#[source] KalmanError),
    /// The gate's settings are invalid.
    #[error("the gate is invalid: {0}")]
    Gate(#[source] tns_certify::GateError),
}

/// The fitted parts of a model that the pipeline runs with (a model file's manifest holds
/// them).
#[derive(Debug, Clone, Copy)]
pub struct PipelineParts<'a> {
    /// The description.
    pub config: &'a ModelConfig,
    /// Input normalization.
    pub normalization: &'a InputNormalization,
    /// Scale of the network output per `[horizon, target]`.
    pub residual_scale: &'a [f64],
    /// The Kalman prior, for Kalman-based kinds.
    pub kalman: Option<&'a KalmanParameters>,
    /// Conformal radii.
    pub conformal: Option<&'a ConformalCalibration>,
    /// Version of TNS that wrote the model (for certificates).
    pub version: &'a str,
    /// The model's checksum (for certificates).
    pub sha256: &'a str,
}

/// The manifest's pre- and post-processing, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    kind: ModelKind,
    has_network: bool,
    features: Vec<String>,
    lookback: usize,
    targets: Vec<usize>,
    horizon: usize,
    /// For bases read off the window: the window row each horizon step repeats.
    base_rows: Vec<usize>,
    normalization: InputNormalization,
    residual_scale: Vec<f64>,
    prior: Option<KalmanPrior>,
    gate: Option<Gate>,
    conformal: Option<ConformalCalibration>,
    identity: ModelIdentity,
}

/// One prediction and what it was made of, as flat `[horizon, targets]` vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The output.
    pub prediction: Vec<f64>,
    /// The base forecast (last value or Kalman prior mean).
    pub base: Vec<f64>,
    /// The prior's predictive covariance `[horizon, T, T]` (Kalman-based kinds).
    pub covariance: Option<Vec<f64>>,
    /// The network's proposed correction in data units (learned kinds).
    pub correction: Option<Vec<f64>>,
    /// Gate outcome per step (System B).
    pub gate_steps: Option<Vec<GateStep>>,
}

/// The window row a base read off the window repeats for the row `ahead` rows after the
/// last one: the last row (last value), or the row one season before (seasonal naive).
/// The description's validation guarantees `season ≤ lookback`, so the row is inside.
fn base_row(base: Base, lookback: usize, ahead: usize, season: Option<usize>) -> usize {
    match (base, season) {
        (Base::SeasonalNaive, Some(s)) if s >= 1 => lookback - 1 + ahead - s * ahead.div_ceil(s),
        _ => lookback - 1,
    }
}

impl Pipeline {
    /// Builds the pipeline from a model's parts, checking that they fit the description.
    pub fn new(parts: PipelineParts<'_>) -> Result<Self, PipelineError> {
        let c = parts.config;
        c.validate()?;
        let targets = c.target_indices()?;
        let width = c.output_width();
        let f = c.features.len();
        let n = parts.normalization;
        let conformal_len = parts.conformal.map_or(width, |cal| cal.radii.len());
        for (what, found, expected) in [
            ("residual_scale", parts.residual_scale.len(), width),
            ("normalization.mean", n.mean.len(), f),
            ("normalization.std", n.std.len(), f),
            ("normalization.relative", n.relative.len(), f),
            ("conformal radii", conformal_len, width),
        ] {
            if found != expected {
                return Err(PipelineError::Length {
                    what,
                    found,
                    expected,
                });
            }
        }
        if n.std
            .iter()
            .chain(parts.residual_scale)
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(PipelineError::Scale);
        }
        let prior = match (parts.kalman, c.kind.base()) {
            (Some(k), Base::KalmanPrior) => Some(
                KalmanPrior::new(
                    k.spec.clone(),
                    k.params.clone(),
                    f,
                    &targets,
                    c.lead,
                    c.horizon,
                )
                .map_err(PipelineError::Kalman)?,
            ),
            (None, Base::KalmanPrior) => return Err(PipelineError::MissingKalman),
            _ => None,
        };
        let gate = c
            .gate
            .map(|g| Gate::new(g.alpha, targets.len(), g.mode))
            .transpose()
            .map_err(PipelineError::Gate)?;
        Ok(Self {
            kind: c.kind,
            has_network: c.network.is_some(),
            features: c.features.clone(),
            lookback: c.lookback,
            targets,
            horizon: c.horizon,
            base_rows: (0..c.horizon)
                .map(|h| base_row(c.kind.base(), c.lookback, c.lead + h, c.season))
                .collect(),
            normalization: parts.normalization.clone(),
            residual_scale: parts.residual_scale.to_vec(),
            prior,
            gate,
            conformal: parts.conformal.cloned(),
            identity: ModelIdentity {
                name: c.name.clone(),
                version: parts.version.to_string(),
                sha256: parts.sha256.to_string(),
            },
        })
    }

    /// Values per window (`lookback × features`).
    pub fn window_len(&self) -> usize {
        self.lookback * self.features.len()
    }

    /// Output values per window (`horizon × targets`).
    pub fn output_len(&self) -> usize {
        self.horizon * self.targets.len()
    }

    /// The conformal calibration, if any.
    pub fn conformal(&self) -> Option<&ConformalCalibration> {
        self.conformal.as_ref()
    }

    /// The Kalman prior, if any.
    pub fn prior(&self) -> Option<&KalmanPrior> {
        self.prior.as_ref()
    }

    /// Checks shape and finiteness of a raw window.
    pub fn check_window(&self, window: &[f64]) -> Result<(), InputError> {
        let f = self.features.len();
        if window.len() != self.window_len() {
            return Err(InputError::Shape {
                found: window.len(),
                lookback: self.lookback,
                features: f,
            });
        }
        if let Some(i) = window.iter().position(|v| !v.is_finite()) {
            return Err(InputError::NotFinite {
                row: i / f,
                feature: self.features[i % f].clone(),
                value: window[i],
            });
        }
        Ok(())
    }

    /// Writes the network input (`[lookback, features]`, f32) for a checked raw window.
    pub fn normalize_into(&self, window: &[f64], out: &mut [f32]) {
        let f = self.features.len();
        let last = &window[(self.lookback - 1) * f..];
        let n = &self.normalization;
        for (i, (&x, o)) in window.iter().zip(out.iter_mut()).enumerate() {
            let c = i % f;
            let centre = if n.relative[c] { last[c] } else { n.mean[c] };
            *o = ((x - centre) / n.std[c]) as f32;
        }
    }

    /// A forecast with every buffer this pipeline writes allocated and zeroed: reuse it with
    /// [`Pipeline::base_into`] and [`Pipeline::finish_into`] to predict without allocating.
    pub fn empty_forecast(&self) -> Forecast {
        let (t, width) = (self.targets.len(), self.output_len());
        let zeroed = GateStep {
            statistic: 0.0,
            passed: false,
            applied_scale: 0.0,
            residual_norm: 0.0,
        };
        Forecast {
            prediction: vec![0.0; width],
            base: vec![0.0; width],
            covariance: self.prior.as_ref().map(|_| vec![0.0; width * t]),
            correction: self.has_network.then(|| vec![0.0; width]),
            gate_steps: self.gate.map(|_| vec![zeroed; self.horizon]),
        }
    }

    /// Writes the base forecast (last value or Kalman prior mean) and, for Kalman-based
    /// kinds, the prior's covariance `[horizon, T, T]` into `forecast`. No allocation.
    pub fn base_into(&self, window: &[f64], forecast: &mut Forecast) {
        match (&self.prior, forecast.covariance.as_mut()) {
            (Some(prior), Some(cov)) => prior.predict_into(window, &mut forecast.base, cov),
            _ => {
                let (t, f) = (self.targets.len(), self.features.len());
                for (i, b) in forecast.base.iter_mut().enumerate() {
                    *b = window[self.base_rows[i / t] * f + self.targets[i % t]];
                }
            }
        }
    }

    /// The base forecast `[horizon, targets]` and, for Kalman-based kinds, the prior's
    /// covariance `[horizon, T, T]`.
    pub fn base(&self, window: &[f64]) -> (Vec<f64>, Option<Vec<f64>>) {
        let mut forecast = self.empty_forecast();
        self.base_into(window, &mut forecast);
        (forecast.base, forecast.covariance)
    }

    /// Completes a forecast whose base (and covariance) [`Pipeline::base_into`] wrote: adds
    /// the network output (normalized units; `None` for kinds without a network) scaled to
    /// data units and applies the gate. No allocation.
    pub fn finish_into(
        &self,
        network_output: Option<&[f32]>,
        forecast: &mut Forecast,
        scratch: &mut GateScratch,
    ) -> Result<(), InputError> {
        let t = self.targets.len();
        let Forecast {
            prediction,
            base,
            covariance,
            correction,
            gate_steps,
        } = forecast;
        prediction.copy_from_slice(base);
        let (Some(out), Some(r)) = (network_output, correction.as_mut()) else {
            return Ok(());
        };
        for ((c, &v), s) in r.iter_mut().zip(out).zip(&self.residual_scale) {
            *c = f64::from(v) * s;
        }
        match (&self.gate, covariance.as_ref(), gate_steps.as_mut()) {
            (Some(gate), Some(cov), Some(steps)) => {
                for (h, step) in steps.iter_mut().enumerate() {
                    let span = h * t..(h + 1) * t;
                    *step = gate
                        .apply(
                            &base[span.clone()],
                            &r[span.clone()],
                            &cov[h * t * t..(h + 1) * t * t],
                            &mut prediction[span],
                            scratch,
                        )
                        .map_err(InputError::Gate)?;
                }
            }
            _ => {
                for (p, c) in prediction.iter_mut().zip(r.iter()) {
                    *p += c;
                }
            }
        }
        Ok(())
    }

    /// The gate, if this model has one.
    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    /// The model's kind.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The certificate of a forecast made by this pipeline.
    pub fn certificate(&self, forecast: &Forecast) -> Certificate {
        let prior_and_correction = match (self.kind.base(), &forecast.correction) {
            (Base::KalmanPrior, Some(c)) => Some((forecast.base.as_slice(), c.as_slice())),
            _ => None,
        };
        Certificate::assemble(
            CertificateInputs {
                targets: self.targets.len(),
                prediction: &forecast.prediction,
                prior_and_correction,
                gate: self.gate.as_ref().zip(forecast.gate_steps.as_deref()),
                conformal: self.conformal.as_ref(),
            },
            self.identity.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_rows_repeat_one_season_back() {
        // Lookback 6, season 3: the row 1 ahead repeats row 3 (= 5 + 1 − 3), 3 ahead row 5,
        // 4 ahead row 3 again.
        let rows: Vec<usize> = (1..=6)
            .map(|k| base_row(Base::SeasonalNaive, 6, k, Some(3)))
            .collect();
        assert_eq!(rows, [3, 4, 5, 3, 4, 5]);
        assert_eq!(base_row(Base::LastValue, 6, 4, None), 5);
    }
}

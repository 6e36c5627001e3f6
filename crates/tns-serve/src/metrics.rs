//! Prometheus metrics, exposed at `GET /metrics` in the text format.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the server records.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by model, route and status code.
    pub requests: IntCounterVec,
    /// Request latency by model and route (seconds, server-side, body parse to response).
    pub latency: HistogramVec,
    /// Requests being handled now.
    pub in_flight: IntGauge,
    /// Predictions (windows) made, by model.
    pub predictions: IntCounterVec,
    /// Gate decisions per horizon step, by model and outcome (`pass`, `fail`).
    pub gate: IntCounterVec,
    /// Predictions that fell back to the prior on at least one step, by model.
    pub fallbacks: IntCounterVec,
    /// Serving version of each model (label `sha256` names the tensors).
    pub model_version: IntGaugeVec,
    /// Reloads by model and outcome (`ok`, `rejected`).
    pub reloads: IntCounterVec,
    /// Open streaming sessions.
    pub sessions: IntGauge,
    /// Micro-batching: windows in the batch each predict request ran in, by model.
    pub micro_batch: HistogramVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tns".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by model, route and status",
            ),
            &["model", "route", "status"],
        )?;
        // Buckets from 25 µs to 1 s: the interesting range is tens of microseconds.
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Request handling time by model and route",
            )
            .buckets(vec![
                25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25, 1.0,
            ]),
            &["model", "route"],
        )?;
        let in_flight = IntGauge::new("http_requests_in_flight", "Requests being handled")?;
        let predictions = IntCounterVec::new(
            Opts::new("predictions_total", "Windows predicted"),
            &["model"],
        )?;
        let gate = IntCounterVec::new(
            Opts::new("gate_steps_total", "Gate decisions per horizon step"),
            &["model", "outcome"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "fallbacks_total",
                "Predictions that returned the prior on at least one step",
            ),
            &["model"],
        )?;
        let model_version = IntGaugeVec::new(
            Opts::new("model_version", "Serving version of each model"),
            &["model", "sha256"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new("model_reloads_total", "Reload attempts by outcome"),
            &["model", "outcome"],
        )?;
        let sessions = IntGauge::new("sessions_open", "Open streaming sessions")?;
        let micro_batch = HistogramVec::new(
            HistogramOpts::new(
                "micro_batch_windows",
                "Windows in the micro-batch each predict request ran in",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
            ]),
            &["model"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(predictions.clone()))?;
        registry.register(Box::new(gate.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(model_version.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(micro_batch.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            in_flight,
            predictions,
            gate,
            fallbacks,
            model_version,
            reloads,
            sessions,
            micro_batch,
        })
    }

    /// Records a model's serving version, replacing the series of the previous one.
    pub fn set_version(&self, model: &str, old_sha: Option<&str>, sha: &str, version: u64) {
        if let Some(old) = old_sha
            && old != sha
        {
            let _ = self.model_version.remove_label_values(&[model, old]);
        }
        self.model_version
            .with_label_values(&[model, sha])
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

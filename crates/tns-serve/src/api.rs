//! The native JSON API: list models, predict (one window or a batch), streaming sessions,
//! reload; plus `/metrics` and `/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tns_certify::Certificate;
use tns_engine::{Engine, EngineError, Prediction, Predictor, Session};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiJson, ErrorBody};

/// Windows above which a request is computed on the blocking pool with the batch engine
/// (all cores) instead of inline on the async worker.
const INLINE_WINDOWS: usize = 16;

/// A served model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// Name in URLs.
    pub name: String,
    /// Serving version: 1 at start, +1 per successful reload.
    pub version: u64,
    /// SHA-256 of the tensors.
    pub sha256: String,
    /// Model kind (`system-b`, …).
    pub kind: String,
    /// Rows per input window.
    pub lookback: usize,
    /// Feature columns, in window order.
    pub features: Vec<String>,
    /// Predicted steps.
    pub horizon: usize,
    /// Target columns.
    pub targets: Vec<String>,
    /// Steps from the last input row to the first predicted row.
    pub lead: usize,
    /// `int8` for INT8 weights, else `f32`.
    pub weights: String,
    /// The model file.
    pub path: String,
    /// When this version was loaded (Unix seconds).
    pub loaded_at: u64,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Every served model.
    pub models: Vec<ModelInfo>,
}

/// `POST /v1/models/{name}/predict`: exactly one of `window` and `windows`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One window, `[lookback][features]`.
    pub window: Option<Vec<Vec<f64>>>,
    /// A batch, `[batch][lookback][features]`.
    pub windows: Option<Vec<Vec<Vec<f64>>>>,
}

/// Predictions with their certificates, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// Model name.
    pub model: String,
    /// Version that answered.
    pub version: u64,
    /// Its tensors' SHA-256.
    pub sha256: String,
    /// One certificate per window: prediction, prior, correction, gate test, interval.
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<Certificate>,
}

/// A new streaming session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOpened {
    /// Session id (use it in the URL of later posts).
    pub session_id: String,
    /// Model name.
    pub model: String,
    /// The model version the session predicts with, for its whole life.
    pub version: u64,
    /// Observations needed before the first prediction.
    pub lookback: usize,
    /// Values per observation, in this order.
    pub features: Vec<String>,
    /// Seconds without a post after which the session is closed.
    pub idle_timeout_seconds: u64,
}

/// Observations for a session, oldest first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObserveRequest {
    /// Rows of `features` values.
    pub observations: Vec<Vec<f64>>,
}

/// The state of a session after a post.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObserveResponse {
    /// Session id.
    pub session_id: String,
    /// Observations received in the session's life.
    pub observations: u64,
    /// The certificate of the prediction from the latest window; null until `lookback`
    /// observations have been received.
    #[schema(value_type = Option<Object>)]
    pub prediction: Option<Certificate>,
}

/// A successful reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResponse {
    /// Model name.
    pub model: String,
    /// The version now serving.
    pub version: u64,
    /// The version it replaced.
    pub previous_version: u64,
    /// Tensors' SHA-256 of the new version.
    pub sha256: String,
}

pub(crate) fn model_info(slot: &crate::registry::Slot) -> ModelInfo {
    let loaded = slot.current();
    let m = loaded.engine.manifest();
    let c = &m.config;
    ModelInfo {
        name: slot.name.clone(),
        version: loaded.version,
        sha256: loaded.sha256.clone(),
        kind: c.kind.name().to_string(),
        lookback: c.lookback,
        features: c.features.clone(),
        horizon: c.horizon,
        targets: c.targets.clone(),
        lead: c.lead,
        weights: if m.quantization.is_some() {
            "int8"
        } else {
            "f32"
        }
        .to_string(),
        path: slot.path.display().to_string(),
        loaded_at: loaded.loaded_at,
    }
}

/// Lists the served models.
#[utoipa::path(get, path = "/v1/models", tag = "native",
    responses((status = 200, body = ModelList)))]
pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        models: state.registry.all().map(|s| model_info(s)).collect(),
    })
}

/// Checks the shape of nested windows and flattens them, `[n][lookback][features]` → flat.
pub(crate) fn flatten_windows(
    engine: &Engine,
    windows: &[Vec<Vec<f64>>],
    max_batch: usize,
) -> Result<Vec<f64>, ApiError> {
    let c = &engine.manifest().config;
    let (lookback, features) = (c.lookback, c.features.len());
    if windows.is_empty() {
        return Err(ApiError::BadInput("the batch holds no window".into()));
    }
    if windows.len() > max_batch {
        return Err(ApiError::TooLarge(format!(
            "a batch of {} windows exceeds the server's limit of {max_batch}; split it",
            windows.len()
        )));
    }
    let mut flat = Vec::with_capacity(windows.len() * lookback * features);
    for (i, w) in windows.iter().enumerate() {
        if w.len() != lookback {
            return Err(ApiError::BadInput(format!(
                "window {i} has {} rows; this model needs {lookback} rows of {features} values ({})",
                w.len(),
                c.features.join(", ")
            )));
        }
        for (r, row) in w.iter().enumerate() {
            if row.len() != features {
                return Err(ApiError::BadInput(format!(
                    "window {i}, row {r} has {} values; expected {features} ({})",
                    row.len(),
                    c.features.join(", ")
                )));
            }
            flat.extend_from_slice(row);
        }
    }
    Ok(flat)
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Input(e) => ApiError::BadInput(e.to_string()),
        e @ EngineError::BatchInput { .. } => ApiError::BadInput(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    }
}

/// Records the gate and fallback counters of one prediction.
pub(crate) fn record(state: &AppState, model: &str, p: &Prediction) {
    state.metrics.predictions.with_label_values(&[model]).inc();
    if let Some(steps) = &p.forecast.gate_steps {
        let passed = steps.iter().filter(|s| s.passed).count() as u64;
        let failed = steps.len() as u64 - passed;
        state
            .metrics
            .gate
            .with_label_values(&[model, "pass"])
            .inc_by(passed);
        state
            .metrics
            .gate
            .with_label_values(&[model, "fail"])
            .inc_by(failed);
    }
    if p.fallback_used() {
        state.metrics.fallbacks.with_label_values(&[model]).inc();
    }
}

/// Predicts `n` flat windows; small requests inline, large ones on the blocking pool with
/// the batch engine. Returns the predictions in order.
pub(crate) async fn predict_windows(
    state: &Arc<AppState>,
    model: &str,
    engine: &Arc<Engine>,
    flat: Vec<f64>,
) -> Result<Vec<Prediction>, ApiError> {
    let n = flat.len() / engine.input_len();
    let predictions = if n <= INLINE_WINDOWS {
        let mut predictor = Predictor::new(engine.clone());
        let per = engine.input_len();
        let mut out = Vec::with_capacity(n);
        for (i, w) in flat.chunks_exact(per).enumerate() {
            let p = predictor.predict(w).map_err(|e| match e {
                EngineError::Input(source) if n > 1 => {
                    engine_error(EngineError::BatchInput { index: i, source })
                }
                e => engine_error(e),
            })?;
            out.push(p.clone());
        }
        out
    } else {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = vec![engine.empty_prediction(); n];
            engine.predict_batch(&flat, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(engine_error)?
    };
    for p in &predictions {
        record(state, model, p);
    }
    Ok(predictions)
}

/// Predicts one window or a batch; every prediction comes with its certificate.
#[utoipa::path(post, path = "/v1/models/{name}/predict", tag = "native",
    params(("name" = String, Path, description = "Model name")),
    request_body = PredictRequest,
    responses(
        (status = 200, body = PredictResponse),
        (status = 400, description = "Not JSON of this shape", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body or batch too large", body = ErrorBody),
        (status = 422, description = "Wrong shape or a NaN/Inf value", body = ErrorBody)))]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let loaded = state.registry.get(&name)?.current();
    let engine = &loaded.engine;
    let flat = match (request.window, request.windows) {
        (Some(w), None) => flatten_windows(engine, std::slice::from_ref(&w), 1)?,
        (None, Some(ws)) => flatten_windows(engine, &ws, state.limits.batch)?,
        _ => {
            return Err(ApiError::BadInput(
                "give exactly one of `window` ([lookback][features]) and `windows` ([batch][lookback][features])".into(),
            ));
        }
    };
    let predictions = predict_windows(&state, &name, engine, flat).await?;
    Ok(Json(PredictResponse {
        model: name,
        version: loaded.version,
        sha256: loaded.sha256.clone(),
        predictions: predictions.iter().map(|p| engine.certificate(p)).collect(),
    }))
}

/// Opens a streaming session on the model's current version.
#[utoipa::path(post, path = "/v1/models/{name}/sessions", tag = "sessions",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 201, body = SessionOpened),
        (status = 404, body = ErrorBody),
        (status = 429, description = "Session table full", body = ErrorBody)))]
pub async fn open_session(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<SessionOpened>), ApiError> {
    let loaded = state.registry.get(&name)?.current();
    let c = &loaded.engine.manifest().config;
    let id = state
        .sessions
        .open(&name, loaded.version, Session::new(loaded.engine.clone()))?;
    state.metrics.sessions.set(state.sessions.len() as i64);
    Ok((
        StatusCode::CREATED,
        Json(SessionOpened {
            session_id: id,
            model: name.clone(),
            version: loaded.version,
            lookback: c.lookback,
            features: c.features.clone(),
            idle_timeout_seconds: state.sessions.idle_timeout().as_secs(),
        }),
    ))
}

/// Appends observations to a session and returns the prediction from its latest window.
/// A bad row is rejected with everything before it kept.
#[utoipa::path(post, path = "/v1/models/{name}/sessions/{id}", tag = "sessions",
    params(("name" = String, Path, description = "Model name"),
           ("id" = String, Path, description = "Session id")),
    request_body = ObserveRequest,
    responses(
        (status = 200, body = ObserveResponse),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn observe(
    State(state): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    ApiJson(request): ApiJson<ObserveRequest>,
) -> Result<Json<ObserveResponse>, ApiError> {
    state.registry.get(&name)?;
    if request.observations.is_empty() {
        return Err(ApiError::BadInput("`observations` is empty".into()));
    }
    if request.observations.len() > state.limits.batch {
        return Err(ApiError::TooLarge(format!(
            "{} observations in one post exceed the limit of {}",
            request.observations.len(),
            state.limits.batch
        )));
    }
    let (observations, prediction) = state.sessions.with(&name, &id, |stream| {
        let engine = stream.session.engine().clone();
        let mut last = None;
        for (i, row) in request.observations.iter().enumerate() {
            match stream.session.push(row) {
                Ok(p) => {
                    if let Some(p) = p {
                        record(&state, &name, p);
                    }
                    last = p.map(|p| engine.certificate(p));
                }
                Err(e) => {
                    return Err(ApiError::BadInput(format!(
                        "observation {i}: {}; the {i} observations before it were kept",
                        engine_error(e)
                    )));
                }
            }
        }
        Ok((stream.session.observations(), last))
    })??;
    Ok(Json(ObserveResponse {
        session_id: id,
        observations,
        prediction,
    }))
}

/// Closes a session.
#[utoipa::path(delete, path = "/v1/models/{name}/sessions/{id}", tag = "sessions",
    params(("name" = String, Path, description = "Model name"),
           ("id" = String, Path, description = "Session id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn close_session(
    State(state): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.registry.get(&name)?;
    state.sessions.close(&name, &id)?;
    state.metrics.sessions.set(state.sessions.len() as i64);
    Ok(StatusCode::NO_CONTENT)
}

/// Constant-time equality, so the comparison does not leak how much of a token matched.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if same_token(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Reloads a model from its file: loads and validates the new file, then swaps it in
/// atomically. A broken file leaves the current version serving and the call fails with
/// the reason. Needs `Authorization: Bearer <admin token>`.
#[utoipa::path(post, path = "/v1/models/{name}/reload", tag = "admin",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, body = ReloadResponse),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Admin routes disabled", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "New file rejected; old version serving", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ReloadResponse>, ApiError> {
    authorize(&state, &headers)?;
    let slot = state.registry.get(&name)?.clone();
    let (loaded, previous_version) = crate::reload_slot(&state, &slot).await?;
    Ok(Json(ReloadResponse {
        model: name,
        version: loaded.version,
        previous_version,
        sha256: loaded.sha256.clone(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state.metrics.sessions.set(state.sessions.len() as i64);
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi_document())
}

//! The native JSON API: list models, predict (one window or a batch), streaming sessions,
//! reload; plus `/metrics` and `/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tns_certify::Certificate;
use tns_engine::{Engine, EngineError, Prediction, Predictor, Session};
use tns_model::InputError;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::registry::Loaded;
use crate::sessions::Owner;

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
    /// Known-future covariates a request gives per predicted step (`future`), in order.
    pub future: Vec<String>,
    /// Calendar features the server computes from the request's `time` (the last window
    /// row's time), after the covariates; empty when the model takes none.
    pub calendar: Vec<String>,
    /// `int8` for INT8 weights, else `f32`.
    pub weights: String,
    /// The model file: shown only to requests with the admin token (a file-system path
    /// tells an attacker about the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When this version was loaded (Unix seconds).
    pub loaded_at: u64,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Every served model.
    pub models: Vec<ModelInfo>,
}

/// A time: seconds since 1970 (UTC) or an ISO-8601 date-time (`2021-03-28T01:00:00Z`;
/// without an offset, UTC).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Timestamp {
    /// Seconds since 1970-01-01 00:00 UTC.
    Seconds(f64),
    /// An ISO-8601 date-time.
    Text(String),
}

impl Timestamp {
    /// Seconds since 1970.
    pub(crate) fn seconds(&self) -> Result<f64, ApiError> {
        match self {
            Self::Seconds(s) if s.is_finite() => Ok(*s),
            Self::Seconds(s) => Err(ApiError::BadInput(format!("time {s} is not finite"))),
            Self::Text(t) => tns_calendar::parse_timestamp(t).ok_or_else(|| {
                ApiError::BadInput(format!(
                    "time {t:?} is neither seconds since 1970 nor an ISO-8601 date-time"
                ))
            }),
        }
    }
}

/// `POST /v1/models/{name}/predict`: exactly one of `window` and `windows`. Models with
/// known-future inputs also take, per window, the covariates over the horizon (`future`
/// `[horizon][covariates]`, or `futures` for a batch) and the time of the window's last
/// row (`time`, or `times`) from which the server computes the calendar features.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One window, `[lookback][features]`.
    #[schema(min_items = 1)]
    pub window: Option<Vec<Vec<f64>>>,
    /// A batch, `[batch][lookback][features]`.
    #[schema(min_items = 1)]
    pub windows: Option<Vec<Vec<Vec<f64>>>>,
    /// Known-future covariates of `window`, `[horizon][covariates]`.
    pub future: Option<Vec<Vec<f64>>>,
    /// Known-future covariates of each window of `windows`.
    pub futures: Option<Vec<Vec<Vec<f64>>>>,
    /// Time of the last row of `window`.
    pub time: Option<Timestamp>,
    /// Time of the last row of each window of `windows`.
    pub times: Option<Vec<Timestamp>>,
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
    /// Known-future covariates each post gives for the forecast its last observation
    /// completes (`future`, `[horizon][covariates]`).
    pub future: Vec<String>,
    /// Whether posts must give the observations' `times` (the model takes calendar features).
    pub needs_time: bool,
    /// Seconds without a post after which the session is closed.
    pub idle_timeout_seconds: u64,
}

/// Observations for a session, oldest first. For a model with known-future inputs, the
/// forecast is made once, from the window ending at the last observation, with `future`
/// (its covariates over the horizon) and the last of `times` (for calendar features).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObserveRequest {
    /// Rows of `features` values.
    #[schema(min_items = 1)]
    pub observations: Vec<Vec<f64>>,
    /// The time of each observation.
    pub times: Option<Vec<Timestamp>>,
    /// Known-future covariates of the forecast from the last observation,
    /// `[horizon][covariates]`.
    pub future: Option<Vec<Vec<f64>>>,
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
    /// Adaptive sessions: the share of resolved intervals that covered their truth so far
    /// (null before the first is resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_coverage: Option<Option<f64>>,
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

pub(crate) fn model_info(slot: &crate::registry::Slot, show_path: bool) -> ModelInfo {
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
        future: loaded.engine.pipeline().future_columns().to_vec(),
        calendar: c
            .future
            .as_ref()
            .and_then(|f| f.calendar.as_ref())
            .map(|cal| cal.columns())
            .unwrap_or_default(),
        weights: if m.quantization.is_some() {
            "int8"
        } else {
            "f32"
        }
        .to_string(),
        path: show_path.then(|| slot.path.display().to_string()),
        loaded_at: loaded.loaded_at,
    }
}

/// Lists the served models (with their files' paths for requests with the admin token).
#[utoipa::path(get, path = "/v1/models", tag = "native",
    responses((status = 200, body = ModelList)))]
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Json<ModelList> {
    let admin = authorize(&state, &headers).is_ok();
    Json(ModelList {
        models: state.registry.all().map(|s| model_info(s, admin)).collect(),
    })
}

/// Checks the shape of nested blocks (`what`: windows or futures) and flattens them,
/// `[n][rows][columns]` → flat.
pub(crate) fn flatten_blocks(
    what: &str,
    blocks: &[Vec<Vec<f64>>],
    rows: usize,
    columns: &[String],
    max_batch: usize,
) -> Result<Vec<f64>, ApiError> {
    let width = columns.len();
    if blocks.is_empty() {
        return Err(ApiError::BadInput(format!("the batch holds no {what}")));
    }
    if blocks.len() > max_batch {
        return Err(ApiError::TooLarge(format!(
            "a batch of {} {what}s exceeds the server's limit of {max_batch}; split it",
            blocks.len()
        )));
    }
    let mut flat = Vec::with_capacity(blocks.len() * rows * width);
    for (i, w) in blocks.iter().enumerate() {
        if w.len() != rows {
            return Err(ApiError::BadInput(format!(
                "{what} {i} has {} rows; this model needs {rows} rows of {width} values ({})",
                w.len(),
                columns.join(", ")
            )));
        }
        for (r, row) in w.iter().enumerate() {
            if row.len() != width {
                return Err(ApiError::BadInput(format!(
                    "{what} {i}, row {r} has {} values; expected {width} ({})",
                    row.len(),
                    columns.join(", ")
                )));
            }
            flat.extend_from_slice(row);
        }
    }
    Ok(flat)
}

/// Checks and flattens windows, `[n][lookback][features]` → flat.
pub(crate) fn flatten_windows(
    engine: &Engine,
    windows: &[Vec<Vec<f64>>],
    max_batch: usize,
) -> Result<Vec<f64>, ApiError> {
    let c = &engine.manifest().config;
    flatten_blocks("window", windows, c.lookback, &c.features, max_batch)
}

/// Model inputs from `n` flat windows plus, for a model with known-future inputs, their
/// covariates (`[n][horizon][covariates]` flat) and last-row times: the engine's input
/// layout, assembled by the model's pipeline as in training.
pub(crate) fn assemble_inputs(
    engine: &Engine,
    windows: Vec<f64>,
    futures: Option<Vec<f64>>,
    times: Option<Vec<f64>>,
) -> Result<Vec<f64>, ApiError> {
    let pipeline = engine.pipeline();
    let past = pipeline.past_len();
    let n = windows.len() / past.max(1);
    if pipeline.future_width() == 0 {
        if futures.is_some() || times.is_some() {
            return Err(ApiError::BadInput(
                "this model takes no known-future inputs; send windows only".into(),
            ));
        }
        return Ok(windows);
    }
    let per = pipeline.horizon() * pipeline.future_columns().len();
    if let Some(f) = futures.as_ref().filter(|f| f.len() != n * per) {
        return Err(ApiError::BadInput(format!(
            "{} future blocks for {n} windows; give one per window",
            f.len() / per.max(1)
        )));
    }
    if let Some(t) = times.as_ref().filter(|t| t.len() != n) {
        return Err(ApiError::BadInput(format!(
            "{} times for {n} windows; give one per window",
            t.len()
        )));
    }
    let mut inputs = Vec::with_capacity(n * engine.input_len());
    for (i, w) in windows.chunks_exact(past).enumerate() {
        let future = futures.as_ref().map(|f| &f[i * per..(i + 1) * per]);
        let time = times.as_ref().map(|t| t[i]);
        let input = pipeline
            .assemble(w, future, time)
            .map_err(|e| ApiError::BadInput(format!("window {i}: {e}")))?;
        inputs.extend_from_slice(&input);
    }
    Ok(inputs)
}

/// The times of a request, in seconds.
pub(crate) fn seconds(times: Option<&[Timestamp]>) -> Result<Option<Vec<f64>>, ApiError> {
    times
        .map(|t| t.iter().map(Timestamp::seconds).collect())
        .transpose()
}

/// Input faults are the client's (422); anything else a valid input makes the model do —
/// a non-finite output, an unusable prior covariance in the gate — is the model's (500
/// `model_error`).
fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Input(InputError::Gate(e))
        | EngineError::BatchInput {
            source: InputError::Gate(e),
            ..
        } => ApiError::ModelError(format!("the gate cannot be evaluated: {e}")),
        EngineError::Input(e) => ApiError::BadInput(e.to_string()),
        e @ EngineError::BatchInput { .. } => ApiError::BadInput(e.to_string()),
        e => ApiError::ModelError(e.to_string()),
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

/// Predicts `n` flat windows; through the version's micro-batching queue when the server
/// batches, else small requests inline and large ones on the blocking pool with the batch
/// engine. Returns the predictions in order.
pub(crate) async fn predict_windows(
    state: &Arc<AppState>,
    model: &str,
    loaded: &Loaded,
    flat: Vec<f64>,
) -> Result<Vec<Prediction>, ApiError> {
    let engine = &loaded.engine;
    let n = flat.len() / engine.input_len();
    let predictions = if let Some(batcher) = &loaded.batcher {
        let (predictions, batch) = batcher.predict(flat).await?.map_err(engine_error)?;
        state
            .metrics
            .micro_batch
            .with_label_values(&[model])
            .observe(batch as f64);
        predictions
    } else if n <= INLINE_WINDOWS {
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
        (status = 422, description = "Wrong shape, a NaN/Inf value or one beyond ±1e30", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 429, description = "Client over its request rate", body = ErrorBody),
        (status = 500, description = "The model failed on a valid input (model_error)", body = ErrorBody),
        (status = 503, description = "At the concurrency limit", body = ErrorBody)))]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let loaded = state.registry.get(&name)?.current();
    let engine = &loaded.engine;
    let pipeline = engine.pipeline();
    let future_rows = |blocks: &[Vec<Vec<f64>>], max: usize| {
        let h = pipeline.horizon();
        flatten_blocks("future", blocks, h, pipeline.future_columns(), max)
    };
    let (flat, futures, times) = match request {
        PredictRequest {
            window: Some(w),
            windows: None,
            futures: None,
            times: None,
            future,
            time,
        } => (
            flatten_windows(engine, std::slice::from_ref(&w), 1)?,
            future.map(|f| future_rows(&[f], 1)).transpose()?,
            seconds(time.as_ref().map(std::slice::from_ref))?,
        ),
        PredictRequest {
            window: None,
            windows: Some(ws),
            future: None,
            time: None,
            futures,
            times,
        } => (
            flatten_windows(engine, &ws, state.limits.batch)?,
            futures
                .map(|f| future_rows(&f, state.limits.batch))
                .transpose()?,
            seconds(times.as_deref())?,
        ),
        _ => {
            return Err(ApiError::BadInput(
                "give exactly one of `window` ([lookback][features], with `future` and `time` for models with known-future inputs) and `windows` ([batch][lookback][features], with `futures` and `times`)".into(),
            ));
        }
    };
    let inputs = assemble_inputs(engine, flat, futures, times)?;
    let predictions = predict_windows(&state, &name, &loaded, inputs).await?;
    Ok(Json(PredictResponse {
        model: name,
        version: loaded.version,
        sha256: loaded.sha256.clone(),
        predictions: predictions.iter().map(|p| engine.certificate(p)).collect(),
    }))
}

/// Options of a new session (query string).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionOptions {
    /// Adaptive conformal intervals with this relative step (e.g. 0.01): each observation
    /// that is the truth of an earlier forecast moves that output's radius, so long-run
    /// coverage holds under distribution shift.
    pub adaptive_gamma: Option<f64>,
    /// Carry states along the stream: an S4D or Mamba network's (models trained with
    /// `--absolute-inputs`) and a structural Kalman prior's (`--seasons`), one step per
    /// observation instead of re-running the window; certificates then report how many rows
    /// the state holds.
    #[serde(default)]
    pub carry_state: bool,
}

/// Opens a streaming session on the model's current version.
#[utoipa::path(post, path = "/v1/models/{name}/sessions", tag = "sessions",
    params(("name" = String, Path, description = "Model name"), SessionOptions),
    responses(
        (status = 201, body = SessionOpened),
        (status = 400, description = "A malformed query string", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "A bad adaptive_gamma, or carry_state on a model that cannot", body = ErrorBody),
        (status = 429, description = "The client's session quota, or the table's count or byte budget, is used up", body = ErrorBody)))]
pub async fn open_session(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    owner: Owner,
    ApiQuery(options): ApiQuery<SessionOptions>,
) -> Result<(StatusCode, Json<SessionOpened>), ApiError> {
    let loaded = state.registry.get(&name)?.current();
    let c = &loaded.engine.manifest().config;
    let id = open_stream(
        &state,
        &name,
        &loaded,
        owner,
        (options.adaptive_gamma, options.carry_state),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(SessionOpened {
            session_id: id,
            model: name.clone(),
            version: loaded.version,
            lookback: c.lookback,
            features: c.features.clone(),
            future: loaded.engine.pipeline().future_columns().to_vec(),
            needs_time: loaded.engine.pipeline().has_calendar(),
            idle_timeout_seconds: state.sessions.idle_timeout().as_secs(),
        }),
    ))
}

/// Opens a session on `loaded` (the model's current version) for `owner`, adaptive with
/// step `gamma` when given and carrying its network's state when `carry`; returns its id.
pub(crate) fn open_stream(
    state: &AppState,
    name: &str,
    loaded: &Loaded,
    owner: Owner,
    (gamma, carry): (Option<f64>, bool),
) -> Result<String, ApiError> {
    let mut session = Session::new(loaded.engine.clone());
    if carry {
        session = session
            .carried()
            .map_err(|e| ApiError::BadInput(format!("carry_state: {e}")))?;
    }
    if let Some(gamma) = gamma {
        session = session
            .adaptive(gamma)
            .map_err(|e| ApiError::BadInput(format!("adaptive_gamma: {e}")))?;
    }
    let id = state.sessions.open(name, loaded.version, session, owner)?;
    state.metrics.sessions.set(state.sessions.len() as i64);
    Ok(id)
}

/// Appends observations to a session and returns the prediction from its latest window.
/// A bad row is rejected with everything before it kept.
#[utoipa::path(post, path = "/v1/models/{name}/sessions/{id}", tag = "sessions",
    params(("name" = String, Path, description = "Model name"),
           ("id" = String, Path, description = "Session id")),
    request_body = ObserveRequest,
    responses(
        (status = 200, body = ObserveResponse),
        (status = 400, description = "Not JSON of this shape", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 429, description = "Client over its request rate", body = ErrorBody),
        (status = 500, description = "The model failed on a valid input (model_error)", body = ErrorBody),
        (status = 503, description = "At the concurrency limit", body = ErrorBody)))]
pub async fn observe(
    State(state): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    owner: Owner,
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
    let times = seconds(request.times.as_deref())?;
    if let Some(t) = times
        .as_ref()
        .filter(|t| t.len() != request.observations.len())
    {
        return Err(ApiError::BadInput(format!(
            "{} times for {} observations; give one per observation",
            t.len(),
            request.observations.len()
        )));
    }
    let future = request.future.as_ref().map(std::slice::from_ref);
    let pushed = push_observations(
        &state,
        &name,
        &id,
        &owner,
        &request.observations,
        future,
        times.as_deref(),
    )?;
    let (observations, prediction, adaptive_coverage) = (
        pushed.observations,
        pushed.prediction.map(|(_, c)| c),
        pushed.adaptive_coverage,
    );
    Ok(Json(ObserveResponse {
        session_id: id,
        observations,
        prediction,
        adaptive_coverage,
    }))
}

/// What [`push_observations`] leaves: the session's observation count, the prediction
/// (and its certificate) from the latest window when the last row completed one, and the
/// adaptive coverage so far (adaptive sessions).
pub(crate) struct Pushed {
    pub observations: u64,
    pub prediction: Option<(Prediction, Certificate)>,
    pub adaptive_coverage: Option<Option<f64>>,
}

/// Appends rows to session `id` of model `name` (the native observe route and KServe
/// sequences): with known-future inputs only the last row forecasts, with `future`
/// (`[horizon][covariates]`, one block). A bad row is rejected with everything before it
/// kept.
pub(crate) fn push_observations(
    state: &AppState,
    name: &str,
    id: &str,
    owner: &Owner,
    observations: &[Vec<f64>],
    future: Option<&[Vec<Vec<f64>>]>,
    times: Option<&[f64]>,
) -> Result<Pushed, ApiError> {
    state.sessions.with(name, id, owner, |stream| {
        let engine = stream.session.engine().clone();
        let pipeline = engine.pipeline();
        let future = future
            .map(|f| {
                let h = pipeline.horizon();
                flatten_blocks("future", f, h, pipeline.future_columns(), 1)
            })
            .transpose()?;
        let with_future = pipeline.future_width() > 0;
        let last_row = observations.len().saturating_sub(1);
        let mut last = None;
        for (i, row) in observations.iter().enumerate() {
            // With known-future inputs only the last observation forecasts: the post's
            // covariates belong to its horizon.
            let pushed = if with_future && i < last_row {
                stream.session.observe(row).map(|()| None)
            } else {
                let time = times.map(|t| t[i]);
                stream.session.push_with(row, future.as_deref(), time)
            };
            match pushed {
                Ok(Some(p)) => {
                    record(state, name, p);
                    let p = p.clone();
                    let certificate = stream.session.certificate(&p);
                    last = Some((p, certificate));
                }
                Ok(None) => last = None,
                Err(e) => {
                    let kept = |m| {
                        format!("observation {i}: {m}; the {i} observations before it were kept")
                    };
                    return Err(match engine_error(e) {
                        ApiError::ModelError(m) => ApiError::ModelError(kept(m)),
                        other => ApiError::BadInput(kept(other.to_string())),
                    });
                }
            }
        }
        Ok(Pushed {
            observations: stream.session.observations(),
            prediction: last,
            adaptive_coverage: stream.session.adaptive_coverage().map(|(_, share)| share),
        })
    })?
}

/// Closes a session.
#[utoipa::path(delete, path = "/v1/models/{name}/sessions/{id}", tag = "sessions",
    params(("name" = String, Path, description = "Model name"),
           ("id" = String, Path, description = "Session id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn close_session(
    State(state): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    owner: Owner,
) -> Result<StatusCode, ApiError> {
    state.registry.get(&name)?;
    state.sessions.close(&name, &id, &owner)?;
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
    ApiPath(name): ApiPath<String>,
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

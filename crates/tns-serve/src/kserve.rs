//! The KServe V2 / Open Inference Protocol routes (REST, JSON tensors).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tns_certify::Certificate;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::{self, assemble_inputs, predict_windows};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::registry::Loaded;
use crate::sessions::Owner;

/// `GET /v2/health/live` and `/v2/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Live (the process answers) or ready (it accepts inference).
    pub status: bool,
}

/// A tensor's name, type and shape (`-1` for the batch dimension).
#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// `FP32` or `BOOL`.
    pub datatype: String,
    /// Shape; `-1` is the batch dimension.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions (the serving one).
    pub versions: Vec<String>,
    /// The runtime.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2/models/{name}/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelReady {
    /// Model name.
    pub name: String,
    /// Whether it accepts inference.
    pub ready: bool,
}

/// One input tensor of an inference request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferInput {
    /// `window`; for models with known-future inputs also `future` and `time`.
    pub name: String,
    /// `window`: `[batch, lookback, features]` (or `[lookback, features]` for one window);
    /// `future`: `[batch, horizon, covariates]`; `time`: `[batch]`.
    pub shape: Vec<i64>,
    /// `FP32` or `FP64` (`time`: `FP64` seconds since 1970, or `BYTES` ISO-8601 strings).
    pub datatype: String,
    /// Row-major values, flat or nested.
    #[schema(value_type = Vec<Object>)]
    pub data: serde_json::Value,
}

/// `POST /v2/models/{name}/infer`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// `window`, plus `future` and `time` for models with known-future inputs; in a
    /// sequence, `observation` instead of `window`.
    #[schema(min_items = 1)]
    pub inputs: Vec<InferInput>,
    /// Sequence routing (streaming sessions over this protocol).
    #[serde(default)]
    pub parameters: Option<SequenceParameters>,
}

/// Streaming over the KServe protocol, after Triton's sequence parameters: a request with
/// `sequence_start: true` opens a session (adaptive with `adaptive_gamma`) and the response
/// carries its `sequence_id`; requests with that `sequence_id` send `observation` rows
/// (`[rows, features]`, plus `future` `[1, horizon, covariates]` and `time` `[rows]` for
/// models with known-future inputs) and get the forecast of the latest window, its interval
/// moved by the outcomes seen so far when the session is adaptive; `sequence_end: true`
/// closes it after the request. Sessions are those of `/v1/models/{name}/sessions`, with
/// the same quotas and idle timeout.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SequenceParameters {
    /// The session to append to (from an earlier response's `parameters.sequence_id`).
    pub sequence_id: Option<String>,
    /// Open a new session with this request.
    #[serde(default)]
    pub sequence_start: bool,
    /// Close the session after this request.
    #[serde(default)]
    pub sequence_end: bool,
    /// With `sequence_start`: adaptive conformal intervals with this relative step.
    pub adaptive_gamma: Option<f64>,
    /// With `sequence_start`: carry an S4D or Mamba network's state and a structural Kalman
    /// prior's filter along the sequence (see the native route's `carry_state`).
    #[serde(default)]
    pub carry_state: bool,
}

/// One output tensor.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutput {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// `FP32` or `BOOL`.
    pub datatype: String,
    /// Row-major values.
    #[schema(value_type = Vec<Object>)]
    pub data: serde_json::Value,
}

/// The inference response; `parameters.certificates` holds one certificate per window.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Serving version.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// forecast, lower, upper (calibrated models), gate_passed and gate_statistic (System B).
    pub outputs: Vec<InferOutput>,
    /// `{"certificates": [...]}`.
    pub parameters: InferParameters,
}

/// Response parameters: what the protocol's tensors cannot carry.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferParameters {
    /// One certificate per window, in batch order.
    #[schema(value_type = Vec<Object>)]
    pub certificates: Vec<Certificate>,
    /// In a sequence: its session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_id: Option<String>,
    /// In a sequence: observations received in its life.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observations: Option<u64>,
    /// In an adaptive sequence: the share of resolved intervals that covered their truth
    /// (null before the first is resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_coverage: Option<Option<f64>>,
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve-v2",
    responses((status = 200, body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: true })
}

/// Server readiness: every model loaded and not shutting down.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve-v2",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Health>) {
    let ready = state.ready.load(Ordering::Acquire);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Health { status: ready }))
}

/// Model metadata.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = ErrorBody)))]
pub async fn metadata(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let loaded = state.registry.get(&name)?.current();
    let m = loaded.engine.manifest();
    let c = &m.config;
    let (h, t) = (c.horizon as i64, c.targets.len() as i64);
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    let mut outputs = vec![tensor("forecast", "FP32", vec![-1, h, t])];
    if m.conformal.is_some() {
        outputs.push(tensor("lower", "FP32", vec![-1, h, t]));
        outputs.push(tensor("upper", "FP32", vec![-1, h, t]));
    }
    if c.gate.is_some() {
        outputs.push(tensor("gate_passed", "BOOL", vec![-1, h]));
        outputs.push(tensor("gate_statistic", "FP32", vec![-1, h]));
    }
    let mut inputs = vec![tensor(
        "window",
        "FP32",
        vec![-1, c.lookback as i64, c.features.len() as i64],
    )];
    let pipeline = loaded.engine.pipeline();
    if !pipeline.future_columns().is_empty() {
        let width = pipeline.future_columns().len() as i64;
        inputs.push(tensor("future", "FP32", vec![-1, h, width]));
    }
    if pipeline.has_calendar() {
        inputs.push(tensor("time", "FP64", vec![-1]));
    }
    Ok(Json(ModelMetadata {
        name,
        versions: vec![loaded.version.to_string()],
        platform: "tns".into(),
        inputs,
        outputs,
    }))
}

/// Model readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelReady), (status = 404, body = ErrorBody)))]
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelReady>, ApiError> {
    state.registry.get(&name)?;
    Ok(Json(ModelReady {
        name,
        ready: state.ready.load(Ordering::Acquire),
    }))
}

/// Flattens nested JSON arrays of numbers, row-major.
fn flatten_numbers(value: &serde_json::Value, out: &mut Vec<f64>) -> Result<(), ApiError> {
    match value {
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten_numbers(v, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().ok_or_else(|| {
                ApiError::BadInput(format!("{n} is not representable as a number"))
            })?);
            Ok(())
        }
        other => Err(ApiError::BadInput(format!(
            "tensor data must hold numbers, found {other}"
        ))),
    }
}

/// The `time` input: `[batch]` seconds (`FP64`/`FP32`) or ISO-8601 strings (`BYTES`).
fn time_values(input: &InferInput, batch: usize) -> Result<Vec<f64>, ApiError> {
    let items = match &input.data {
        serde_json::Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    if input.shape != [batch as i64] || items.len() != batch {
        return Err(ApiError::BadInput(format!(
            "input \"time\" has shape {:?} and {} values; expected [{batch}]",
            input.shape,
            items.len()
        )));
    }
    items
        .iter()
        .map(tns_calendar::json_time)
        .map(|t| {
            t.ok_or_else(|| {
                ApiError::BadInput(
                    "input \"time\" holds a value that is neither seconds since 1970 nor an ISO-8601 date-time".into(),
                )
            })
        })
        .collect()
}

/// Inference with the protocol's tensors.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model name")),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 429, description = "Client over its request rate", body = ErrorBody),
        (status = 500, description = "The model failed on a valid input (model_error)", body = ErrorBody),
        (status = 503, description = "At the concurrency limit", body = ErrorBody)))]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    owner: Owner,
    ApiJson(request): ApiJson<InferRequest>,
) -> Result<Json<InferResponse>, ApiError> {
    let loaded = state.registry.get(&name)?.current();
    if let Some(sequence) = request
        .parameters
        .as_ref()
        .filter(|p| p.sequence_start || p.sequence_id.is_some())
    {
        return infer_sequence(&state, name, &loaded, owner, &request, sequence).map(Json);
    }
    if request.parameters.as_ref().is_some_and(|p| p.sequence_end) {
        return Err(ApiError::BadInput(
            "sequence_end needs the sequence_id of the session to close".into(),
        ));
    }
    let engine = &loaded.engine;
    let c = &engine.manifest().config;
    let (lookback, features) = (c.lookback, c.features.len());
    if let Some(unknown) = request
        .inputs
        .iter()
        .find(|i| !["window", "future", "time"].contains(&i.name.as_str()))
    {
        return Err(ApiError::BadInput(format!(
            "unknown input {:?}; the inputs are \"window\" and, for models with known-future inputs, \"future\" and \"time\"",
            unknown.name
        )));
    }
    check_datatypes(&request.inputs)?;
    let named = |name: &str| named_input(&request.inputs, name);
    let input = named("window")?
        .ok_or_else(|| ApiError::BadInput("send an input tensor named \"window\"".into()))?;
    let batch = match input.shape.as_slice() {
        [b, l, f] if *l == lookback as i64 && *f == features as i64 && *b >= 1 => *b as usize,
        [l, f] if *l == lookback as i64 && *f == features as i64 => 1,
        other => {
            return Err(ApiError::BadInput(format!(
                "shape {other:?} does not match [batch, {lookback}, {features}]"
            )));
        }
    };
    if batch > state.limits.batch {
        return Err(ApiError::TooLarge(format!(
            "a batch of {batch} windows exceeds the server's limit of {}",
            state.limits.batch
        )));
    }
    let mut flat = Vec::with_capacity(batch * lookback * features);
    flatten_numbers(&input.data, &mut flat)?;
    if flat.len() != batch * lookback * features {
        return Err(ApiError::BadInput(format!(
            "shape {:?} needs {} values, data holds {}",
            input.shape,
            batch * lookback * features,
            flat.len()
        )));
    }
    let futures = named("future")?
        .map(|f| {
            let mut values = Vec::new();
            flatten_numbers(&f.data, &mut values)?;
            let want = [batch, c.horizon, engine.pipeline().future_columns().len()];
            let shape_ok = f.shape.len() == 3
                && f.shape.iter().zip(want).all(|(&a, b)| a == b as i64)
                && values.len() == want.iter().product::<usize>();
            if !shape_ok {
                return Err(ApiError::BadInput(format!(
                    "input \"future\" has shape {:?} and {} values; expected {want:?} ({})",
                    f.shape,
                    values.len(),
                    engine.pipeline().future_columns().join(", ")
                )));
            }
            Ok(values)
        })
        .transpose()?;
    let times = named("time")?.map(|t| time_values(t, batch)).transpose()?;
    let inputs = assemble_inputs(engine, flat, futures, times)?;
    let predictions = predict_windows(&state, &name, &loaded, inputs).await?;
    let outputs = tensors(engine, &predictions);
    let certificates = predictions.iter().map(|p| engine.certificate(p)).collect();
    Ok(Json(InferResponse {
        model_name: name,
        model_version: loaded.version.to_string(),
        id: request.id,
        outputs,
        parameters: InferParameters {
            certificates,
            sequence_id: None,
            observations: None,
            adaptive_coverage: None,
        },
    }))
}

/// The input named `name`, if any; an input given twice is an error rather than one of
/// them being read.
fn named_input<'a>(
    inputs: &'a [InferInput],
    name: &str,
) -> Result<Option<&'a InferInput>, ApiError> {
    let mut found = inputs.iter().filter(|i| i.name == name);
    let first = found.next();
    if found.next().is_some() {
        return Err(ApiError::BadInput(format!("input {name:?} is given twice")));
    }
    Ok(first)
}

/// Every numeric input (all but `time`, which takes timestamps) must be FP32 or FP64: the
/// values are read as numbers whatever the datatype says, so another datatype would be
/// read as something it does not claim to be.
fn check_datatypes(inputs: &[InferInput]) -> Result<(), ApiError> {
    match inputs
        .iter()
        .find(|i| i.name != "time" && i.datatype != "FP32" && i.datatype != "FP64")
    {
        Some(i) => Err(ApiError::BadInput(format!(
            "input {:?}: datatype {:?} is not supported; use FP32 or FP64",
            i.name, i.datatype
        ))),
        None => Ok(()),
    }
}

/// A request of a sequence (see [`SequenceParameters`]): opens the session on
/// `sequence_start`, appends the `observation` rows, closes it on `sequence_end`.
fn infer_sequence(
    state: &AppState,
    name: String,
    loaded: &Loaded,
    owner: Owner,
    request: &InferRequest,
    sequence: &SequenceParameters,
) -> Result<InferResponse, ApiError> {
    let engine = &loaded.engine;
    let c = &engine.manifest().config;
    if let Some(unknown) = request
        .inputs
        .iter()
        .find(|i| !["observation", "future", "time"].contains(&i.name.as_str()))
    {
        return Err(ApiError::BadInput(format!(
            "unknown input {:?} in a sequence; send \"observation\" rows [rows, {}] and, for models with known-future inputs, \"future\" and \"time\"",
            unknown.name,
            c.features.len()
        )));
    }
    check_datatypes(&request.inputs)?;
    let named = |name: &str| named_input(&request.inputs, name);
    let observation = named("observation")?.ok_or_else(|| {
        ApiError::BadInput("a sequence request needs an input named \"observation\"".into())
    })?;
    let features = c.features.len();
    let mut values = Vec::new();
    flatten_numbers(&observation.data, &mut values)?;
    let rows = match observation.shape.as_slice() {
        [r, f] if *f == features as i64 && *r >= 1 => *r as usize,
        [f] if *f == features as i64 => 1,
        other => {
            return Err(ApiError::BadInput(format!(
                "input \"observation\" has shape {other:?}; expected [rows, {features}]"
            )));
        }
    };
    if values.len() != rows * features {
        return Err(ApiError::BadInput(format!(
            "input \"observation\" of shape {:?} holds {} values",
            observation.shape,
            values.len()
        )));
    }
    if rows > state.limits.batch {
        return Err(ApiError::TooLarge(format!(
            "{rows} observations in one request exceed the limit of {}",
            state.limits.batch
        )));
    }
    let observations: Vec<Vec<f64>> = values.chunks(features).map(<[f64]>::to_vec).collect();
    let future = named("future")?
        .map(|f| {
            let mut flat = Vec::new();
            flatten_numbers(&f.data, &mut flat)?;
            let width = engine.pipeline().future_columns().len();
            let shape_ok = matches!(f.shape.as_slice(), [1, h, w] | [h, w]
                if *h == c.horizon as i64 && *w == width as i64)
                && flat.len() == c.horizon * width;
            if !shape_ok {
                return Err(ApiError::BadInput(format!(
                    "input \"future\" has shape {:?}; expected [1, {}, {width}]",
                    f.shape, c.horizon
                )));
            }
            Ok(vec![
                flat.chunks(width.max(1))
                    .map(<[f64]>::to_vec)
                    .collect::<Vec<_>>(),
            ])
        })
        .transpose()?;
    let times = named("time")?.map(|t| time_values(t, rows)).transpose()?;
    let id = match (&sequence.sequence_id, sequence.sequence_start) {
        (Some(_), true) => {
            return Err(ApiError::BadInput(
                "give either sequence_start (a new session) or sequence_id (an open one), not both"
                    .into(),
            ));
        }
        (Some(id), false) => id.clone(),
        (None, _) => {
            let options = (sequence.adaptive_gamma, sequence.carry_state);
            api::open_stream(state, &name, loaded, owner.clone(), options)?
        }
    };
    let pushed = api::push_observations(
        state,
        &name,
        &id,
        &owner,
        &observations,
        future.as_deref(),
        times.as_deref(),
    );
    // A session this request opened is closed again when its first rows fail: the client
    // never learns its id.
    if sequence.sequence_end || (sequence.sequence_start && pushed.is_err()) {
        state.sessions.close(&name, &id, &owner)?;
        state.metrics.sessions.set(state.sessions.len() as i64);
    }
    let pushed = pushed?;
    let (predictions, certificates): (Vec<_>, Vec<_>) = pushed.prediction.into_iter().unzip();
    Ok(InferResponse {
        model_name: name,
        model_version: loaded.version.to_string(),
        id: request.id.clone(),
        outputs: tensors(engine, &predictions),
        parameters: InferParameters {
            certificates,
            sequence_id: Some(id),
            observations: Some(pushed.observations),
            adaptive_coverage: pushed.adaptive_coverage,
        },
    })
}

/// The output tensors of `predictions` (a batch; 0 in a sequence that has no full window
/// yet): forecast, and lower/upper and the gate's tensors where the model has them.
fn tensors(
    engine: &tns_engine::Engine,
    predictions: &[tns_engine::Prediction],
) -> Vec<InferOutput> {
    let c = &engine.manifest().config;
    let batch = predictions.len();
    let (h, t) = (c.horizon, c.targets.len());
    let mut outputs = vec![InferOutput {
        name: "forecast".into(),
        shape: vec![batch, h, t],
        datatype: "FP32".into(),
        data: predictions
            .iter()
            .flat_map(|p| p.values().to_vec())
            .collect(),
    }];
    if engine.manifest().conformal.is_some() {
        for (name, values) in [
            (
                "lower",
                predictions
                    .iter()
                    .flat_map(|p| p.lower.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                "upper",
                predictions.iter().flat_map(|p| p.upper.clone()).collect(),
            ),
        ] {
            outputs.push(InferOutput {
                name: name.into(),
                shape: vec![batch, h, t],
                datatype: "FP32".into(),
                data: values.into(),
            });
        }
    }
    if c.gate.is_some() {
        let steps: Vec<_> = predictions
            .iter()
            .flat_map(|p| p.forecast.gate_steps.clone().unwrap_or_default())
            .collect();
        outputs.push(InferOutput {
            name: "gate_passed".into(),
            shape: vec![batch, h],
            datatype: "BOOL".into(),
            data: steps.iter().map(|s| s.passed).collect(),
        });
        outputs.push(InferOutput {
            name: "gate_statistic".into(),
            shape: vec![batch, h],
            datatype: "FP32".into(),
            data: steps.iter().map(|s| s.statistic).collect(),
        });
    }
    outputs
}

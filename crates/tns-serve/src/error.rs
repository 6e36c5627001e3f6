//! Errors as values: every failure a client can cause maps to a 4xx JSON body that says
//! what to fix; only faults of the server itself are 5xx.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No model of that name is served.
    #[error("no model named {0:?} is served; GET /v1/models lists them")]
    UnknownModel(String),
    /// No open session of that id.
    #[error(
        "no open session {0:?} for this model (it may have expired after the idle timeout); open one with POST /v1/models/{{name}}/sessions"
    )]
    UnknownSession(String),
    /// The body is not valid JSON for this route.
    #[error("{0}")]
    BadRequest(String),
    /// Valid JSON, but the values cannot be predicted from (shape, NaN/Inf).
    #[error("{0}")]
    BadInput(String),
    /// The body or the batch is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The session table is full.
    #[error("{0}")]
    TooManySessions(String),
    /// The client exceeded its request rate.
    #[error("rate limit exceeded: at most {0} requests per second per client")]
    RateLimited(u32),
    /// Admin route without a valid bearer token.
    #[error(
        "this admin route needs the header `Authorization: Bearer <token>` with the server's admin token"
    )]
    Unauthorized,
    /// Admin routes are off because no token was configured.
    #[error(
        "admin routes are disabled: start the server with TNS_ADMIN_TOKEN or --admin-token-file set"
    )]
    AdminDisabled,
    /// A reload was refused; the previous model keeps serving.
    #[error("reload of {model:?} refused, version {version} keeps serving: {reason}")]
    ReloadRejected {
        /// Model name.
        model: String,
        /// The version still serving.
        version: u64,
        /// Why the new file was rejected.
        reason: String,
    },
    /// Too many requests in flight.
    #[error("the server is at its limit of {0} concurrent requests; retry shortly")]
    Overloaded(usize),
    /// The served model failed on a valid request (a non-finite forecast, an unusable prior
    /// covariance): the model's fault, not the client's.
    #[error("model error: {0}")]
    ModelError(String),
    /// The route exists, not with this method.
    #[error("this route does not take {0}; GET /openapi.json lists each route's methods")]
    MethodNotAllowed(String),
    /// The request target is longer than the server accepts.
    #[error("the request URI is {0} bytes, over the server's limit of {1}")]
    UriTooLong(usize, usize),
    /// The request's headers are larger than the server accepts.
    #[error("the request headers are {0} bytes, over the server's limit of {1}")]
    HeadersTooLarge(usize, usize),
    /// The body did not arrive within the body timeout.
    #[error("the request body did not arrive within {} s; send it whole and promptly", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    /// The handler did not finish within the request timeout.
    #[error("the request took longer than the server's limit of {} s; retry, or send a smaller batch", .0.as_secs_f64())]
    RequestTimeout(std::time::Duration),
    /// A fault of the server.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `bad_input`.
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// The HTTP status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnknownModel(_) => (StatusCode::NOT_FOUND, "unknown_model"),
            Self::UnknownSession(_) => (StatusCode::NOT_FOUND, "unknown_session"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::BadInput(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_input"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::TooManySessions(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
            Self::ReloadRejected { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "reload_rejected"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UriTooLong(..) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge(..) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::RequestTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            Self::ModelError(_) => (StatusCode::INTERNAL_SERVER_ERROR, "model_error"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message: self.to_string(),
                },
            }),
        )
            .into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, Self::RateLimited(_) | Self::Overloaded(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s (JSON bodies, not plain text).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::TooLarge(format!("request body too large: {}", rejection.body_text()))
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                    "send the body as JSON with `Content-Type: application/json`".into(),
                ),
                StatusCode::UNPROCESSABLE_ENTITY => ApiError::BadInput(rejection.body_text()),
                _ => ApiError::BadRequest(rejection.body_text()),
            }),
        }
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s (400 with the JSON body).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s (400 with the JSON body).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

//! `tns serve`: certified predictions over HTTP.
//!
//! An axum/tokio server in front of the inference engine (no training library): a native
//! JSON API (`/v1/...`), the KServe V2 / Open Inference Protocol (`/v2/...`), streaming
//! sessions, Prometheus metrics, zero-downtime reload (load and validate off to the side,
//! then swap an atomic pointer), bearer-token admin routes, body/batch/concurrency/rate
//! limits, graceful shutdown and an OpenAPI document.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tns_serve::{ServeOptions, start};
//! let options = ServeOptions::new(vec![("b".into(), "model.tns".into())]);
//! let server = start(options).await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod batcher;
pub mod error;
pub mod kserve;
pub mod metrics;
pub mod registry;
pub mod sessions;

pub use batcher::MicroBatching;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, oneshot};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Loaded, Registry, Slot};
use crate::sessions::{SessionLimits, Sessions};

/// What the server accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body in bytes.
    pub body_bytes: usize,
    /// Most windows per predict/infer request (and observations per session post).
    pub batch: usize,
    /// Most requests handled at once; more are answered 503 at once, not queued.
    pub concurrent: usize,
    /// Requests per second per client IP (None: unlimited).
    pub rate_per_client: Option<NonZeroU32>,
    /// Most open streaming sessions.
    pub sessions: usize,
    /// Most open streaming sessions per client (bearer token, or else IP address).
    pub sessions_per_client: usize,
    /// Most bytes all open sessions may hold (a session's size is fixed when it opens).
    pub session_bytes: usize,
    /// Idle time after which a session is closed.
    pub session_idle: Duration,
    /// Time a connection has to send a complete request head, from its opening or from its
    /// previous response (so also how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    /// Time a request has to send its whole body. Bodies are read before the request takes
    /// a concurrency slot, so a client that trickles a body holds a connection, not a slot.
    pub body_timeout: Duration,
    /// Time the handler has once the body is read (answered 503 `request_timeout`).
    pub request_timeout: Duration,
    /// Most open connections; more are closed as soon as they are accepted.
    pub connections: usize,
    /// On shutdown, how long connections with a request in flight may finish before they
    /// are closed.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            batch: 1024,
            concurrent: 256,
            rate_per_client: None,
            sessions: 10_000,
            sessions_per_client: 64,
            session_bytes: 256 << 20,
            session_idle: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connections: 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind (port 0: any free port).
    pub addr: SocketAddr,
    /// `(name, file)` of every model.
    pub models: Vec<(String, PathBuf)>,
    /// Limits.
    pub limits: Limits,
    /// Token of the admin routes (None: admin routes answer 403).
    pub admin_token: Option<String>,
    /// Poll the model files at this interval and reload changed ones (None: off).
    pub watch: Option<Duration>,
    /// Dynamic micro-batching of concurrent predict requests (None: off).
    pub batching: Option<MicroBatching>,
}

impl ServeOptions {
    /// Defaults: 127.0.0.1:8080, default limits, no admin token, watching every 2 s.
    pub fn new(models: Vec<(String, PathBuf)>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            models,
            limits: Limits::default(),
            admin_token: None,
            watch: Some(Duration::from_secs(2)),
            batching: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A model file could not be loaded at start-up.
    #[error("cannot load models: {0}")]
    Models(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// I/O while serving.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server task failed.
    #[error("server task: {0}")]
    Task(String),
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The models.
    pub registry: Registry,
    /// Streaming sessions.
    pub sessions: Sessions,
    /// Metrics.
    pub metrics: Metrics,
    /// Limits.
    pub limits: Limits,
    /// Admin token.
    pub admin_token: Option<String>,
    /// False once shutdown began (readiness turns 503).
    pub ready: AtomicBool,
    concurrency: Arc<Semaphore>,
    rate_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The OpenAPI document of every route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TNS serve",
        description = "Certified predictions of temporal neural models: native JSON API, KServe V2 / Open Inference Protocol, streaming sessions."
    ),
    paths(
        api::list_models,
        api::predict,
        api::open_session,
        api::observe,
        api::close_session,
        api::reload,
        api::metrics,
        api::openapi,
        kserve::live,
        kserve::ready,
        kserve::metadata,
        kserve::model_ready,
        kserve::infer,
    ),
    modifiers(&BearerAuth, &UriLimit)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Documents the 414 that the request-target limit ([`MAX_URI_BYTES`]) gives on every route,
/// before any handler runs.
struct UriLimit;

impl utoipa::Modify for UriLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let too_long = ResponseBuilder::new()
            .description(format!(
                "The request target (path and query) is over {MAX_URI_BYTES} bytes (uri_too_long)"
            ))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .insert("414".into(), too_long.clone().into());
            }
        }
    }
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The routes and layers over a state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(api::list_models))
        .route("/v1/models/{name}/predict", post(api::predict))
        .route("/v1/models/{name}/sessions", post(api::open_session))
        .route(
            "/v1/models/{name}/sessions/{id}",
            post(api::observe).delete(api::close_session),
        )
        .route("/v1/models/{name}/reload", post(api::reload))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(api::openapi))
        // Innermost first: the body is read whole (within its timeout) before the limits
        // hand out a concurrency slot, and metrics see every outcome.
        .route_layer(middleware::from_fn_with_state(state.clone(), limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        // `read_body` enforces the body limit for every route; the extractors' own default
        // limit (2 MiB) would otherwise cut in below a larger configured one.
        .layer(DefaultBodyLimit::disable())
        .fallback(|| async {
            ApiError::BadRequest("no such route; GET /openapi.json lists the routes".into())
                .into_response()
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(method.to_string()).into_response()
        })
        // Outermost, so that it also guards the fallbacks.
        .layer(middleware::from_fn(check_head))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The served model a request path names, if any (bounded label cardinality: unknown names
/// are not labels).
fn model_label(state: &AppState, path: &str) -> String {
    let mut parts = path.split('/').skip(1);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1" | "v2"), Some("models"), Some(name)) if state.registry.get(name).is_ok() => {
            name.to_string()
        }
        _ => String::new(),
    }
}

/// Metrics of every routed request: count by status, latency, in-flight gauge.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let model = model_label(&state, request.uri().path());
    state.metrics.in_flight.inc();
    let start = Instant::now();
    let response = next.run(request).await;
    state.metrics.in_flight.dec();
    state
        .metrics
        .latency
        .with_label_values(&[&model, &route])
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .with_label_values(&[&model, &route, response.status().as_str()])
        .inc();
    response
}

/// Longest request target the server reads (414 beyond).
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Most header bytes (names and values) the server reads (431 beyond).
pub const MAX_HEADER_BYTES: usize = 32 << 10;

/// Refuses over-long targets and headers with the JSON error body every other answer has.
/// (Heads beyond hyper's own read buffer, about 400 KiB, are refused by hyper with a bare
/// 431 before any route runs.)
async fn check_head(request: Request, next: Next) -> Response {
    // The target as sent (origin form: path and query; absolute form adds the authority),
    // measured without formatting it.
    let target = request.uri();
    let uri = target.path_and_query().map_or(0, |p| p.as_str().len())
        + target.authority().map_or(0, |a| a.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::UriTooLong(uri, MAX_URI_BYTES).into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge(headers, MAX_HEADER_BYTES).into_response();
    }
    next.run(request).await
}

/// Reads the whole body within `body_timeout` and at most `body_bytes` long, so that the
/// handler (and its concurrency slot) only ever waits on the server, never on the client.
async fn read_body(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.body_bytes);
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_long {
                ApiError::TooLarge(format!(
                    "the body is larger than the server's limit of {} bytes",
                    limits.body_bytes
                ))
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
            .into_response();
        }
        Err(_) => return ApiError::BodyTimeout(limits.body_timeout).into_response(),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Routes that stay reachable whatever the load: probes and metrics take no concurrency
/// slot and are not rate limited.
fn is_probe(path: &str) -> bool {
    path.starts_with("/v2/health/") || path == "/metrics"
}

/// Per-client rate limit, the global concurrency limit (reject, never queue) and the
/// handler's deadline.
async fn limit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    if let (Some(limiter), Some(rate)) = (&state.rate_limiter, state.limits.rate_per_client) {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = client
            && limiter.check_key(&ip).is_err()
        {
            return ApiError::RateLimited(rate.get()).into_response();
        }
    }
    let Ok(_permit) = state.concurrency.clone().try_acquire_owned() else {
        return ApiError::Overloaded(state.limits.concurrent).into_response();
    };
    let deadline = state.limits.request_timeout;
    tokio::time::timeout(deadline, next.run(request))
        .await
        .unwrap_or_else(|_| ApiError::RequestTimeout(deadline).into_response())
}

/// Reloads one model and records the outcome (used by the route, SIGHUP and the watcher).
pub async fn reload_slot(state: &AppState, slot: &Slot) -> Result<(Arc<Loaded>, u64), ApiError> {
    let old_sha = slot.current().sha256.clone();
    match slot.reload().await {
        Ok((loaded, previous)) => {
            state
                .metrics
                .set_version(&slot.name, Some(&old_sha), &loaded.sha256, loaded.version);
            state
                .metrics
                .reloads
                .with_label_values(&[&slot.name, "ok"])
                .inc();
            tracing::info!(model = %slot.name, version = loaded.version, sha256 = %loaded.sha256, "reloaded");
            Ok((loaded, previous))
        }
        Err(e) => {
            state
                .metrics
                .reloads
                .with_label_values(&[&slot.name, "rejected"])
                .inc();
            tracing::warn!(model = %slot.name, error = %e, "reload rejected; the previous version keeps serving");
            Err(e)
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting connections, lets requests in flight finish, and returns.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.state.ready.store(false, Ordering::Release);
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| ServeError::Task(e.to_string()))??;
        Ok(())
    }

    /// Waits until the server stops by itself (it does not, unless the listener fails).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        (&mut self.task)
            .await
            .map_err(|e| ServeError::Task(e.to_string()))??;
        Ok(())
    }
}

/// Loads the models, binds, and serves in the background: session expiry, file watching
/// and SIGHUP reloads run as tasks beside it.
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
    let models = options.models.clone();
    let batching = options.batching;
    let registry = tokio::task::spawn_blocking(move || Registry::load(&models, batching))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?
        .map_err(ServeError::Models)?;
    let metrics = Metrics::new()?;
    for slot in registry.all() {
        let loaded = slot.current();
        metrics.set_version(&slot.name, None, &loaded.sha256, loaded.version);
    }
    let limits = options.limits.clone();
    let state = Arc::new(AppState {
        registry,
        sessions: Sessions::new(SessionLimits {
            max: limits.sessions,
            per_owner: limits.sessions_per_client,
            bytes: limits.session_bytes,
            idle: limits.session_idle,
        }),
        metrics,
        concurrency: Arc::new(Semaphore::new(limits.concurrent)),
        rate_limiter: limits
            .rate_per_client
            .map(|r| RateLimiter::keyed(Quota::per_second(r))),
        limits,
        admin_token: options.admin_token.clone(),
        ready: AtomicBool::new(true),
    });
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.addr,
            source,
        })?;
    let local_addr = listener.local_addr()?;
    spawn_housekeeping(state.clone(), options.watch);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_connections(
        listener,
        router(state.clone()),
        state.limits.clone(),
        stopped,
    ));
    tracing::info!(%local_addr, models = state.registry.all().count(), "serving");
    Ok(Running {
        local_addr,
        state,
        stop,
        task,
    })
}

/// Accepts connections (at most `limits.connections` open) and serves each over HTTP/1.1
/// with the header timeout, until `stopped` resolves; then stops accepting, lets requests in
/// flight finish for at most `limits.drain`, and closes what is left.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) -> Result<(), std::io::Error> {
    let open = Arc::new(Semaphore::new(limits.connections));
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Per-connection failures (a reset before accept, no file descriptor left)
                // must not stop the server; the next accept may succeed.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        // Finished connections leave the set here, so it holds only open ones.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "connection limit reached; closing");
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            tower::Service::call(&mut app.clone(), request)
        });
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing.wait_for(|closing| *closing) => connection.as_mut().graceful_shutdown(),
            }
            // Errors of one connection (a reset, a header timeout) concern only its client.
            let _ = connection.await;
        });
    }
    drop(listener);
    closing.send_replace(true);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Session expiry, file watching and SIGHUP reloads. The tasks hold a weak reference, so
/// they end with the server.
fn spawn_housekeeping(state: Arc<AppState>, watch: Option<Duration>) {
    let weak = Arc::downgrade(&state);
    let sweep =
        (state.limits.session_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let open = state.sessions.expire();
            state.metrics.sessions.set(open as i64);
        }
    });
    if let Some(interval) = watch {
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { break };
                let changed: Vec<Arc<Slot>> = state
                    .registry
                    .all()
                    .filter(|s| s.file_changed())
                    .cloned()
                    .collect();
                for slot in changed {
                    // A rejected file is logged and counted; the next change retries.
                    let _ = reload_slot(&state, &slot).await;
                }
            }
        });
    }
    #[cfg(unix)]
    {
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; reload with the admin route");
                return;
            };
            while hangup.recv().await.is_some() {
                let Some(state) = weak.upgrade() else { break };
                tracing::info!("SIGHUP: reloading every model");
                let slots: Vec<Arc<Slot>> = state.registry.all().cloned().collect();
                for slot in slots {
                    let _ = reload_slot(&state, &slot).await;
                }
            }
        });
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

//! The server over real HTTP on loopback: every route, every error case, reload with a good
//! and a broken file, sessions across posts, limits, admin auth, graceful shutdown.
//!
//! The model is the committed golden System B file (`tests/fixtures/`), copied to a
//! temporary directory so that reload tests can overwrite it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tns_serve::{Limits, Running, ServeOptions, start};

const TOKEN: &str = "test-admin-token-0123456789";

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-system-b-v1.tns")
}

struct Fixture {
    server: Running,
    base: String,
    client: Client,
    model_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn serve_with(limits: Limits, admin_token: Option<&str>) -> Fixture {
    serve_options(limits, admin_token, None).await
}

async fn serve_options(
    limits: Limits,
    admin_token: Option<&str>,
    batching: Option<tns_serve::MicroBatching>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("b.tns");
    std::fs::copy(golden(), &model_path).unwrap();
    let mut options = ServeOptions::new(vec![("b".into(), model_path.clone())]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.limits = limits;
    options.admin_token = admin_token.map(str::to_string);
    options.watch = None;
    options.batching = batching;
    let server = start(options).await.unwrap();
    Fixture {
        base: format!("http://{}", server.local_addr()),
        server,
        client: Client::new(),
        model_path,
        _dir: dir,
    }
}

async fn serve() -> Fixture {
    serve_with(Limits::default(), Some(TOKEN)).await
}

/// A plausible window: a target moving at constant velocity, `[10][4]` (x, y, vx, vy).
fn window(shift: f64) -> Vec<Vec<f64>> {
    (0..10)
        .map(|i| {
            let t = i as f64 * 0.05;
            vec![shift + 1.0 + 2.0 * t, -0.5 + 1.0 * t, 2.0, 1.0]
        })
        .collect()
}

impl Fixture {
    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn metrics_text(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    async fn reload(&self, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/v1/models/b/reload", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn native_routes_predict_with_certificates() {
    let f = serve().await;
    let (status, models) = f.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let m = &models["models"][0];
    assert_eq!(
        (m["name"].as_str(), m["version"].as_u64()),
        (Some("b"), Some(1))
    );
    assert_eq!(m["kind"], "system-b");
    assert_eq!(m["lookback"], 10);

    let (status, one) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let cert = &one["predictions"][0];
    assert_eq!(cert["gate"]["test"], "chi2_mahalanobis");
    assert_eq!(cert["prediction"][0].as_array().unwrap().len(), 4);
    assert!(cert["interval"].is_object());

    // A batch answers in order, and each window equals its single prediction; a batch
    // larger than the inline threshold takes the batch engine.
    let windows: Vec<_> = (0..40).map(|i| window(i as f64)).collect();
    let (status, batch) = f
        .post("/v1/models/b/predict", &json!({ "windows": windows }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let predictions = batch["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 40);
    assert_eq!(predictions[0]["prediction"], cert["prediction"]);
    let (_, single) = f
        .post("/v1/models/b/predict", &json!({ "window": window(39.0) }))
        .await;
    assert_eq!(
        predictions[39]["prediction"],
        single["predictions"][0]["prediction"]
    );
}

#[tokio::test]
async fn kserve_v2_routes_follow_the_protocol() {
    let f = serve().await;
    assert_eq!(f.get("/v2/health/live").await.0, StatusCode::OK);
    let (status, ready) = f.get("/v2/health/ready").await;
    assert_eq!(
        (status, ready["status"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, meta) = f.get("/v2/models/b").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 10, 4]));
    assert_eq!(f.get("/v2/models/b/ready").await.1["ready"], true);
    assert_eq!(
        f.get("/v2/models/nope/ready").await.0,
        StatusCode::NOT_FOUND
    );

    let flat: Vec<f64> = [window(0.0), window(1.0)].concat().concat();
    let (status, out) = f
        .post(
            "/v2/models/b/infer",
            &json!({ "id": "r1", "inputs": [{ "name": "window", "shape": [2, 10, 4], "datatype": "FP32", "data": flat }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["id"], "r1");
    assert_eq!(out["model_version"], "1");
    let names: Vec<&str> = out["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "forecast",
            "lower",
            "upper",
            "gate_passed",
            "gate_statistic"
        ]
    );
    assert_eq!(out["outputs"][0]["shape"], json!([2, 1, 4]));
    assert_eq!(out["outputs"][3]["datatype"], "BOOL");
    assert_eq!(
        out["parameters"]["certificates"].as_array().unwrap().len(),
        2
    );
    // Nested data and the native API agree.
    let (_, nested) = f
        .post(
            "/v2/models/b/infer",
            &json!({ "inputs": [{ "name": "window", "shape": [10, 4], "datatype": "FP64", "data": window(0.0) }] }),
        )
        .await;
    let (_, native) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    let forecast: Vec<f64> = nested["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let native: Vec<f64> = native["predictions"][0]["prediction"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(forecast, native);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_that_says_what_is_wrong() {
    let limits = Limits {
        batch: 8,
        body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let f = serve_with(limits, Some(TOKEN)).await;
    let w = window(0.0);
    let mut short_row = w.clone();
    short_row[3].pop();
    let cases: Vec<(&str, Value, StatusCode, &str, &str)> = vec![
        (
            "/v1/models/zz/predict",
            json!({ "window": w }),
            StatusCode::NOT_FOUND,
            "unknown_model",
            "zz",
        ),
        (
            "/v1/models/b/predict",
            json!({ "window": w[..3] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "10 rows",
        ),
        (
            "/v1/models/b/predict",
            json!({ "window": short_row }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "row 3 has 3 values",
        ),
        (
            "/v1/models/b/predict",
            json!({ "window": w, "windows": [w] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "exactly one",
        ),
        (
            "/v1/models/b/predict",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "exactly one",
        ),
        (
            "/v1/models/b/predict",
            json!({ "windows": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "no window",
        ),
        (
            "/v1/models/b/predict",
            json!({ "windows": vec![w.clone(); 9] }),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "limit of 8",
        ),
        (
            "/v1/models/b/predict",
            json!({ "window": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "window",
        ),
        (
            "/v1/models/b/predict",
            json!({ "window": w, "extra": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "extra",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "named \"window\"",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [{ "name": "window", "shape": [1, 9, 4], "datatype": "FP32", "data": [] }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "[batch, 10, 4]",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [{ "name": "window", "shape": [1, 10, 4], "datatype": "INT8", "data": [] }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "FP32",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [{ "name": "window", "shape": [1, 10, 4], "datatype": "FP32", "data": [1.0] }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "needs 40 values",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [{ "name": "window", "shape": [1, 10, 4], "datatype": "FP32", "data": ["NaN"] }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "numbers",
        ),
        (
            "/v2/models/b/infer",
            json!({ "inputs": [{ "name": "x", "shape": [1, 10, 4], "datatype": "FP32", "data": [] }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
            "\"window\"",
        ),
    ];
    for (path, body, status, code, says) in cases {
        let (got, answer) = f.post(path, &body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_eq!(error_code(&answer), code, "{path} {body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{path}: {message:?} should mention {says:?}"
        );
    }
    // Not JSON, JSON without the content type, an oversized body, a value beyond f64.
    let raw = |body: &'static str, content_type: &'static str| {
        f.client
            .post(format!("{}/v1/models/b/predict", f.base))
            .header("content-type", content_type)
            .body(body)
    };
    for (request, status, code) in [
        (
            raw("{\"window\": [[1,2", "application/json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            raw("{\"window\": [[1e999]]}", "application/json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            raw("{}", "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(error_code(&r.json().await.unwrap()), code);
    }
    let big = format!(
        "{{\"window\": [{}]}}",
        vec!["[1.0,2.0,3.0,4.0]"; 5000].join(",")
    );
    let r = f
        .client
        .post(format!("{}/v1/models/b/predict", f.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&r.json().await.unwrap()), "too_large");
    // Unknown routes answer JSON too.
    let (status, body) = f.get("/v1/nothing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openapi")
    );
    // None of it was a server error, and the metrics counted each outcome.
    let text = f.metrics_text().await;
    assert!(!text.contains("status=\"500\""), "{text}");
    assert!(text.contains("status=\"422\""));
}

#[tokio::test]
async fn reload_swaps_a_good_file_and_keeps_serving_through_a_broken_one() {
    let f = serve().await;
    let (_, before) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    // Broken: a truncated file. The call fails with the reason; version 1 keeps serving.
    let good = std::fs::read(&f.model_path).unwrap();
    std::fs::write(&f.model_path, &good[..good.len() / 2]).unwrap();
    let (status, body) = f.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "reload_rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 1 keeps serving")
    );
    let (status, still) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(still["version"], 1);
    assert_eq!(still["predictions"], before["predictions"]);
    // Tampered: same length, one byte flipped in the tensors.
    let mut tampered = good.clone();
    let at = tampered.len() - 5;
    tampered[at] ^= 0x10;
    std::fs::write(&f.model_path, &tampered).unwrap();
    assert_eq!(
        f.reload(Some(TOKEN)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Good: an INT8 version of the same model. Version 2, new checksum, new numbers.
    let (manifest, tensors) = tns_format::load_model(&golden()).unwrap();
    let matrices = manifest.config.matrix_weights().unwrap();
    let (quantization, q) = tns_format::quantize_int8(&tensors, &matrices).unwrap();
    let mut manifest = manifest;
    manifest.quantization = Some(quantization);
    let written = tns_format::save_model(&f.model_path, &manifest, &q).unwrap();
    let (status, body) = f.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["version"].as_u64(), body["previous_version"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(body["sha256"], written.sha256());
    let (_, after) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    assert_eq!(after["version"], 2);
    assert_eq!(f.get("/v1/models").await.1["models"][0]["weights"], "int8");
    let metrics = f.metrics_text().await;
    assert!(metrics.contains("tns_model_reloads_total{model=\"b\",outcome=\"rejected\"} 2"));
    assert!(metrics.contains(&format!(
        "tns_model_version{{model=\"b\",sha256=\"{}\"}} 2",
        written.sha256()
    )));
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token_and_are_off_without_one() {
    let f = serve().await;
    assert_eq!(f.reload(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.reload(Some("wrong-token-0123456789")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(f.reload(Some(TOKEN)).await.0, StatusCode::OK);
    let off = serve_with(Limits::default(), None).await;
    let (status, body) = off.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "admin_disabled");
}

#[tokio::test]
async fn sessions_keep_state_across_posts_and_expire() {
    let limits = Limits {
        sessions: 2,
        session_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let f = serve_with(limits, Some(TOKEN)).await;
    let (status, opened) = f.post("/v1/models/b/sessions", &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["session_id"].as_str().unwrap().to_string();
    assert_eq!(opened["lookback"], 10);
    let path = format!("/v1/models/b/sessions/{id}");
    let rows = window(0.0);
    // Six rows, then four: no prediction until the tenth row.
    let (status, first) = f.post(&path, &json!({ "observations": rows[..6] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            first["observations"].as_u64(),
            first["prediction"].is_null()
        ),
        (Some(6), true)
    );
    // A bad row is rejected and leaves the stream as it was.
    let (status, bad) = f
        .post(&path, &json!({ "observations": [[1.0, 2.0]] }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("observation 0")
    );
    let (_, second) = f.post(&path, &json!({ "observations": rows[6..] })).await;
    assert_eq!(second["observations"], 10);
    // The session's prediction is the one of the same window through /predict.
    let (_, direct) = f
        .post("/v1/models/b/predict", &json!({ "window": rows }))
        .await;
    assert_eq!(second["prediction"], direct["predictions"][0]);
    // One more row slides the window by one.
    let next_row = vec![1.0 + 2.0 * 0.5, -0.5 + 0.5, 2.0, 1.0];
    let (_, third) = f
        .post(&path, &json!({ "observations": [next_row.clone()] }))
        .await;
    let mut slid = rows[1..].to_vec();
    slid.push(next_row);
    let (_, direct) = f
        .post("/v1/models/b/predict", &json!({ "window": slid }))
        .await;
    assert_eq!(third["prediction"], direct["predictions"][0]);
    assert_eq!(third["observations"], 11);

    // The table is bounded.
    let (_, second_session) = f.post("/v1/models/b/sessions", &json!({})).await;
    let (status, full) = f.post("/v1/models/b/sessions", &json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&full), "too_many_sessions");
    // Closing frees a place; a closed session is gone.
    let other = second_session["session_id"].as_str().unwrap();
    let r = f
        .client
        .delete(format!("{}/v1/models/b/sessions/{other}", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = f
        .post(
            &format!("/v1/models/b/sessions/{other}"),
            &json!({ "observations": [[0.0, 0.0, 0.0, 0.0]] }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Idle sessions expire.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f.server.state().sessions.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, gone) = f
        .post(&path, &json!({ "observations": [[0.0, 0.0, 0.0, 0.0]] }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&gone), "unknown_session");
}

#[tokio::test]
async fn concurrency_and_rate_limits_reject_instead_of_queueing() {
    let none = serve_with(
        Limits {
            concurrent: 0,
            ..Limits::default()
        },
        None,
    )
    .await;
    let (status, body) = none.get("/v1/models").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "overloaded");

    let limited = serve_with(
        Limits {
            rate_per_client: std::num::NonZeroU32::new(1),
            ..Limits::default()
        },
        None,
    )
    .await;
    assert_eq!(limited.get("/v1/models").await.0, StatusCode::OK);
    let (status, body) = limited.get("/v1/models").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&body), "rate_limited");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stops_accepting() {
    let f = serve().await;
    let windows: Vec<_> = (0..1024).map(|i| window(i as f64)).collect();
    let request = f
        .client
        .post(format!("{}/v1/models/b/predict", f.base))
        .json(&json!({ "windows": windows }))
        .send();
    let in_flight = tokio::spawn(request);
    let state = f.server.state().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state.metrics.in_flight.get() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::task::yield_now().await;
    }
    let base = f.base.clone();
    f.server.shutdown().await.unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["predictions"].as_array().unwrap().len(), 1024);
    assert!(
        Client::new()
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_committed_one() {
    let f = serve().await;
    let (status, served) = f.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        served,
        serde_json::to_value(tns_serve::openapi_document()).unwrap()
    );
    // Every route the server has is documented, and nothing else.
    let mut paths: Vec<&str> = served["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    let mut routes = vec![
        "/metrics",
        "/openapi.json",
        "/v1/models",
        "/v1/models/{name}/predict",
        "/v1/models/{name}/reload",
        "/v1/models/{name}/sessions",
        "/v1/models/{name}/sessions/{id}",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/ready",
    ];
    routes.sort();
    assert_eq!(paths, routes);
    for route in routes {
        let concrete = route.replace("{name}", "b").replace("{id}", "x");
        let r = f
            .client
            .get(format!("{}{concrete}", f.base))
            .send()
            .await
            .unwrap();
        // Routes exist (a GET on a POST route is 405, not the 400 of unknown routes).
        assert_ne!(r.status(), StatusCode::BAD_REQUEST, "{route} is not routed");
    }
    // The committed copy (docs for users) is the generated one.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = serde_json::to_string_pretty(&served).unwrap() + "\n";
    if std::env::var("TNS_WRITE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&committed, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == generated,
        "crates/tns-serve/openapi.json is out of date; regenerate with TNS_WRITE_OPENAPI=1 cargo test -p tns-serve --test http"
    );
}

/// `carry_state`: an S4D model with absolute inputs streams with its state carried, over the
/// native route and KServe sequences alike; after `lookback` rows its forecast is the
/// window's (what `/predict` answers), and its certificates report the rows carried. A model
/// that cannot carry its state refuses with a 422.
#[tokio::test]
async fn sessions_carry_a_state_space_networks_state() {
    let network: tns_model::NetworkConfig = "s4d:4,3,1".parse().unwrap();
    let mut example =
        tns_conformance::example(tns_model::ModelKind::SystemA, &network, 6, 2, false, 5).unwrap();
    example.manifest.config.absolute_inputs = true;
    let relative = &mut example.manifest.normalization.relative;
    relative.iter_mut().for_each(|r| *r = false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s4d.tns");
    tns_format::save_model(&path, &example.manifest, &example.tensors).unwrap();
    let mut options = ServeOptions::new(vec![("s4d".into(), path.clone()), ("b".into(), golden())]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.watch = None;
    let server = start(options).await.unwrap();
    let f = Fixture {
        base: format!("http://{}", server.local_addr()),
        server,
        client: Client::new(),
        model_path: path,
        _dir: dir,
    };
    let stream = tns_conformance::random_windows(9, 2, 1, 4);
    let rows: Vec<Vec<f64>> = stream.chunks(2).map(<[f64]>::to_vec).collect();
    let (status, opened) = f
        .post("/v1/models/s4d/sessions?carry_state=true", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["session_id"].as_str().unwrap();
    let (status, first) = f
        .post(
            &format!("/v1/models/s4d/sessions/{id}"),
            &json!({ "observations": rows[..6] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["prediction"]["stream"]["rows"], 6);
    let (_, windowed) = f
        .post("/v1/models/s4d/predict", &json!({ "window": rows[..6] }))
        .await;
    assert_eq!(
        first["prediction"]["prediction"],
        windowed["predictions"][0]["prediction"]
    );
    let (status, later) = f
        .post(
            &format!("/v1/models/s4d/sessions/{id}"),
            &json!({ "observations": rows[6..] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(later["prediction"]["stream"]["rows"], 9);
    // The same over KServe.
    let flat: Vec<f64> = rows[..6].concat();
    let (status, out) = f
        .post(
            "/v2/models/s4d/infer",
            &json!({ "inputs": [{ "name": "observation", "shape": [6, 2], "datatype": "FP64", "data": flat }],
                     "parameters": { "sequence_start": true, "carry_state": true, "sequence_end": true } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let certificate = &out["parameters"]["certificates"][0];
    assert_eq!(certificate["stream"]["rows"], 6);
    assert_eq!(certificate["prediction"], first["prediction"]["prediction"]);
    // The GRU System B cannot.
    let (status, body) = f
        .post("/v1/models/b/sessions?carry_state=true", &json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("S4D and Mamba"), "{body}");
    f.server.shutdown().await.unwrap();
}

/// The server runs whatever network the description holds: System B over an MLP, written by
/// `tns_format::save_model`, predicts with its gate and matches the engine.
#[tokio::test]
async fn system_b_over_an_mlp_serves_with_certificates() {
    let network: tns_model::NetworkConfig = "mlp:16,8".parse().unwrap();
    let example =
        tns_conformance::example(tns_model::ModelKind::SystemB, &network, 6, 2, false, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b-mlp.tns");
    tns_format::save_model(&path, &example.manifest, &example.tensors).unwrap();
    let mut options = ServeOptions::new(vec![("bmlp".into(), path.clone())]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.watch = None;
    let server = start(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let windows = tns_conformance::random_windows(6, 2, 4, 1);
    let rows: Vec<Vec<Vec<f64>>> = windows
        .chunks(12)
        .map(|w| w.chunks(2).map(<[f64]>::to_vec).collect())
        .collect();
    let response = Client::new()
        .post(format!("{base}/v1/models/bmlp/predict"))
        .json(&json!({ "windows": rows }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let engine = tns_engine::Engine::load(&path).unwrap();
    let expected = engine.predict_all(&windows).unwrap();
    for (got, want) in body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected)
    {
        assert_eq!(got["gate"]["test"], "chi2_mahalanobis");
        let values: Vec<f64> = got["prediction"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(values, want.values());
    }
    server.shutdown().await.unwrap();
}

/// Flat prediction values of a certificate.
fn certificate_values(certificate: &Value) -> Vec<f64> {
    certificate["prediction"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect()
}

/// A model with known-future inputs (a covariate and the hour of day in Paris) answers the
/// same through the native API, KServe V2 and a session as the engine does on the input the
/// pipeline assembles — the calendar computed by the server from the request's time, across
/// the 2021-03-28 change to summer time — and a request without them is a clear 422.
#[tokio::test]
async fn future_inputs_and_calendar_serve_like_the_engine() {
    let network: tns_model::NetworkConfig = "mlp:8".parse().unwrap();
    let example =
        tns_conformance::example(tns_model::ModelKind::Mlp, &network, 6, 4, true, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.tns");
    tns_format::save_model(&path, &example.manifest, &example.tensors).unwrap();
    let mut options = ServeOptions::new(vec![("f".into(), path.clone())]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.watch = None;
    let server = start(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let client = Client::new();
    let engine = tns_engine::Engine::load(&path).unwrap();
    let pipeline = engine.pipeline();
    assert_eq!(pipeline.future_columns(), ["c3"]);
    let window = tns_conformance::random_windows(6, 4, 1, 9);
    let rows: Vec<Vec<f64>> = window.chunks(4).map(<[f64]>::to_vec).collect();
    let covariates = [0.25, -1.5];
    let future: Vec<Vec<f64>> = covariates.iter().map(|&c| vec![c]).collect();
    // Origins 00:00 and 01:00 UTC on 2021-03-28: predicted rows at local 02:00/03:00 and
    // 04:00/05:00 (01:00 UTC is 03:00 in Paris).
    for (time, iso) in [
        (1_616_889_600.0, "2021-03-28T00:00:00Z"),
        (1_616_893_200.0, "2021-03-28 01:00"),
    ] {
        let input = pipeline
            .assemble(&window, Some(&covariates), Some(time))
            .unwrap();
        let want = engine.predict_all(&input).unwrap()[0].values().to_vec();
        let post = |path: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client.post(path).json(&body).send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }
        };
        let (status, body) = post(
            format!("{base}/v1/models/f/predict"),
            json!({"window": rows, "future": future, "time": iso}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(certificate_values(&body["predictions"][0]), want);
        let (status, body) = post(
            format!("{base}/v2/models/f/infer"),
            json!({"inputs": [
                {"name": "window", "shape": [1, 6, 4], "datatype": "FP64", "data": window},
                {"name": "future", "shape": [1, 2, 1], "datatype": "FP64", "data": covariates},
                {"name": "time", "shape": [1], "datatype": "BYTES", "data": [iso]},
            ]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            certificate_values(&body["parameters"]["certificates"][0]),
            want
        );
        let (status, opened) = post(format!("{base}/v1/models/f/sessions"), json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{opened}");
        assert_eq!(opened["future"], json!(["c3"]));
        assert_eq!(opened["needs_time"], json!(true));
        let id = opened["session_id"].as_str().unwrap();
        let times: Vec<f64> = (0..6).map(|k| time - 3600.0 * (5 - k) as f64).collect();
        let (status, body) = post(
            format!("{base}/v1/models/f/sessions/{id}"),
            json!({"observations": rows, "times": times, "future": future}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(certificate_values(&body["prediction"]), want);
    }
    // The calendar makes the two origins differ: the hour feature is read.
    let at = |t: f64| {
        let input = pipeline
            .assemble(&window, Some(&covariates), Some(t))
            .unwrap();
        engine.predict_all(&input).unwrap()[0].values().to_vec()
    };
    assert_ne!(at(1_616_889_600.0), at(1_616_893_200.0));
    // Missing covariates, a wrong shape, a missing time: 422 with a message that says what.
    for (body, expect) in [
        (json!({"window": rows, "time": 0}), "c3"),
        (
            json!({"window": rows, "future": [[1.0, 2.0], [3.0, 4.0]], "time": 0}),
            "future 0, row 0 has 2 values",
        ),
        (json!({"window": rows, "future": future}), "time"),
        (
            json!({"window": rows, "future": future, "time": "noon"}),
            "ISO-8601",
        ),
    ] {
        let r = client
            .post(format!("{base}/v1/models/f/predict"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(text.contains(expect), "{text} lacks {expect:?}");
    }
    server.shutdown().await.unwrap();
}

/// A session opened with `?adaptive_gamma=` answers with adaptive intervals: the certificate
/// names the method and its long-run guarantee, and each response reports the coverage of
/// the intervals resolved so far. A bad step is a 422.
#[tokio::test]
async fn adaptive_sessions_report_their_method_and_coverage() {
    let f = serve().await;
    let (status, opened) = f
        .post("/v1/models/b/sessions?adaptive_gamma=0.05", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["session_id"].as_str().unwrap();
    let mut rows = window(0.0);
    rows.extend(window(0.5).into_iter().take(3));
    let (status, body) = f
        .post(
            &format!("/v1/models/b/sessions/{id}"),
            &json!({ "observations": rows }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let interval = &body["prediction"]["interval"];
    assert_eq!(interval["method"], "adaptive_conformal");
    assert!(interval["guarantee"].as_str().unwrap().contains("long-run"));
    // 13 rows, lookback 10, lead 1: forecasts at rows 9–12, three of them resolved, four
    // targets each.
    let coverage = body["adaptive_coverage"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&coverage), "{body}");
    let (status, body) = f
        .post("/v1/models/b/sessions?adaptive_gamma=2", &json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    f.server.shutdown().await.unwrap();
}

/// Streaming over KServe V2 with Triton's sequence parameters: `sequence_start` opens an
/// adaptive session and returns its id, later requests send `observation` rows to it and get
/// the adaptive interval and coverage, the same forecast as the native session route, and
/// `sequence_end` closes it.
#[tokio::test]
async fn kserve_sequences_stream_with_adaptive_intervals() {
    let f = serve().await;
    let observe = |rows: Vec<Vec<f64>>, parameters: serde_json::Value| {
        let flat: Vec<f64> = rows.concat();
        json!({ "inputs": [{ "name": "observation", "shape": [rows.len(), 4], "datatype": "FP64", "data": flat }],
                "parameters": parameters })
    };
    let rows = window(0.0);
    let (status, out) = f
        .post(
            "/v2/models/b/infer",
            &observe(
                rows[..5].to_vec(),
                json!({ "sequence_start": true, "adaptive_gamma": 0.05 }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let id = out["parameters"]["sequence_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(out["parameters"]["observations"], 5);
    // No full window yet: empty tensors, no certificate.
    assert_eq!(out["outputs"][0]["shape"], json!([0, 1, 4]));
    assert_eq!(out["parameters"]["certificates"], json!([]));
    let mut more = rows[5..].to_vec();
    more.extend(window(0.5).into_iter().take(3));
    let (status, out) = f
        .post(
            "/v2/models/b/infer",
            &observe(more.clone(), json!({ "sequence_id": id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["parameters"]["observations"], 13);
    assert_eq!(out["outputs"][0]["shape"], json!([1, 1, 4]));
    let certificate = &out["parameters"]["certificates"][0];
    assert_eq!(certificate["interval"]["method"], "adaptive_conformal");
    assert!(
        out["parameters"]["adaptive_coverage"].as_f64().is_some(),
        "{out}"
    );
    // The same rows through the native session route give the same forecast and interval.
    let (_, opened) = f
        .post("/v1/models/b/sessions?adaptive_gamma=0.05", &json!({}))
        .await;
    let native_id = opened["session_id"].as_str().unwrap();
    let mut all = rows[..5].to_vec();
    all.extend(more);
    let (_, native) = f
        .post(
            &format!("/v1/models/b/sessions/{native_id}"),
            &json!({ "observations": all }),
        )
        .await;
    assert_eq!(native["prediction"]["interval"], certificate["interval"]);
    assert_eq!(
        native["prediction"]["prediction"],
        certificate["prediction"]
    );
    // sequence_end closes the session after its rows.
    let (status, body) = f
        .post(
            "/v2/models/b/infer",
            &observe(
                vec![vec![0.0; 4]],
                json!({ "sequence_id": id, "sequence_end": true }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["parameters"]["observations"], 14);
    let (status, body) = f
        .post(
            "/v2/models/b/infer",
            &observe(vec![vec![0.0; 4]], json!({ "sequence_id": id })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A window in a sequence, both start and id, or a bad shape are refused.
    for (request, expect) in [
        (
            json!({ "inputs": [{ "name": "window", "shape": [10, 4], "datatype": "FP32", "data": window(0.0).concat() }],
                    "parameters": { "sequence_start": true } }),
            "unknown input",
        ),
        (
            observe(
                vec![vec![0.0; 4]],
                json!({ "sequence_start": true, "sequence_id": "x" }),
            ),
            "not both",
        ),
        (
            json!({ "inputs": [{ "name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 0.0, 0.0] }],
                    "parameters": { "sequence_start": true } }),
            "expected [rows, 4]",
        ),
        (
            observe(vec![vec![0.0; 4]], json!({ "sequence_end": true })),
            "sequence_id",
        ),
        // The same input checks as a window request: no input twice, numbers as FP32/FP64.
        (
            json!({ "inputs": [
                        { "name": "observation", "shape": [1, 4], "datatype": "FP32", "data": [0.0, 0.0, 0.0, 0.0] },
                        { "name": "observation", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 1.0, 1.0, 1.0] }],
                    "parameters": { "sequence_start": true } }),
            "given twice",
        ),
        (
            json!({ "inputs": [{ "name": "observation", "shape": [1, 4], "datatype": "BYTES", "data": [0.0, 0.0, 0.0, 0.0] }],
                    "parameters": { "sequence_start": true } }),
            "use FP32 or FP64",
        ),
    ] {
        let (status, body) = f.post("/v2/models/b/infer", &request).await;
        assert!(status.is_client_error(), "{status} {body}");
        assert!(body.to_string().contains(expect), "{body} lacks {expect:?}");
    }
    f.server.shutdown().await.unwrap();
}

/// Micro-batching: concurrent predicts and KServe infers wait up to the delay, run as one
/// batch (the metric shows batches of more than one window), and each answer equals the
/// unbatched server's; a bad window fails only its own request, with the same error; a
/// reload under batching serves the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_batched_requests_get_their_own_answers() {
    let batching = tns_serve::MicroBatching {
        max_delay: Duration::from_millis(20),
        max_windows: 64,
        queue: 256,
    };
    let batched = serve_options(Limits::default(), Some(TOKEN), Some(batching)).await;
    let plain = serve().await;
    let body = |i: usize| json!({ "windows": [window(i as f64 * 0.1), window(-(i as f64))] });
    let bodies: Vec<Value> = (0..24).map(body).collect();
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|b| batched.post("/v1/models/b/predict", b)),
    )
    .await;
    for (i, (status, answer)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        let (_, alone) = plain.post("/v1/models/b/predict", &body(i)).await;
        assert_eq!(answer["predictions"], alone["predictions"], "request {i}");
    }
    let metrics = batched.metrics_text().await;
    let line = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let (sum, count) = (
        line("tns_micro_batch_windows_sum{model=\"b\"}"),
        line("tns_micro_batch_windows_count{model=\"b\"}"),
    );
    assert_eq!(count, 24.0, "{metrics}");
    assert!(
        sum / count > 2.0,
        "requests ran in batches of {} windows",
        sum / count
    );
    // A bad window among good ones: only its request fails, as it would alone.
    let mut bad = window(0.0);
    bad[3][1] = 1e31;
    let bad_body = json!({ "window": bad });
    let (mixed, (bad_status, bad_answer)) = tokio::join!(
        futures_util::future::join_all(
            bodies[..8]
                .iter()
                .map(|b| batched.post("/v1/models/b/predict", b))
        ),
        batched.post("/v1/models/b/predict", &bad_body),
    );
    assert!(mixed.iter().all(|(s, _)| *s == StatusCode::OK));
    let (alone_status, alone_answer) = plain.post("/v1/models/b/predict", &bad_body).await;
    assert_eq!(
        (bad_status, error_code(&bad_answer)),
        (alone_status, error_code(&alone_answer))
    );
    assert_eq!(
        bad_answer["error"]["message"],
        alone_answer["error"]["message"]
    );
    // KServe infer goes through the same queue.
    let flat: Vec<f64> = window(0.0).concat();
    let infer = json!({ "inputs": [{ "name": "window", "shape": [10, 4], "datatype": "FP64", "data": flat }] });
    let (status, out) = batched.post("/v2/models/b/infer", &infer).await;
    let (_, alone) = plain.post("/v2/models/b/infer", &infer).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["outputs"], alone["outputs"]);
    // A reload starts the new version's queue.
    let (status, reloaded) = batched.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{reloaded}");
    let (status, _) = batched.post("/v1/models/b/predict", &body(0)).await;
    assert_eq!(status, StatusCode::OK);
    batched.server.shutdown().await.unwrap();
    plain.server.shutdown().await.unwrap();
}

/// A batch that fills runs at once: with a delay of a minute and room for four windows, two
/// requests of two windows each, the second sent when the first already waits in the
/// batch, are answered long before the delay is up (the batching thread sleeps while it
/// gathers and the request that fills the batch wakes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_micro_batch_does_not_wait_for_its_delay() {
    let batching = tns_serve::MicroBatching {
        max_delay: Duration::from_secs(60),
        max_windows: 4,
        queue: 16,
    };
    let batched = serve_options(Limits::default(), Some(TOKEN), Some(batching)).await;
    let body = |i: f64| json!({ "windows": [window(i), window(-i)] });
    let (first, second) = (body(0.1), body(0.2));
    let both = futures_util::future::join(batched.post("/v1/models/b/predict", &first), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        batched.post("/v1/models/b/predict", &second).await
    });
    let ((s1, a1), (s2, a2)) = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("a full batch waited for its delay");
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{a1} {a2}");
    batched.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_model_that_cannot_predict_is_refused_at_reload_and_its_faults_are_5xx() {
    let f = serve().await;
    // The case: Kalman q = 1e308 reloaded with 200, then every predict answered
    // 422. Now the reload predicts a probe input first and refuses the file.
    let (manifest, tensors) = tns_format::load_model(&golden()).unwrap();
    let mut broken = manifest.clone();
    for axis in &mut broken.kalman.as_mut().unwrap().params {
        axis.q = 1e308;
    }
    tns_format::save_model(&f.model_path, &broken, &tensors).unwrap();
    let (status, body) = f.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("probe input"),
        "{body}"
    );
    let (status, _) = f
        .post("/v1/models/b/predict", &json!({ "window": window(0.0) }))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Inputs too large to compute with are the client's error.
    let mut huge = window(0.0);
    huge[3][0] = 1e200;
    let (status, body) = f
        .post("/v1/models/b/predict", &json!({ "window": huge }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1e30"));

    // A model that passes its probe but overflows on a valid window: a non-finite forecast
    // is never returned; the answer is the model's fault (500 model_error).
    let mut ex = tns_conformance::example(
        tns_model::ModelKind::Linear,
        &tns_model::NetworkConfig::Linear,
        4,
        3,
        false,
        1,
    )
    .unwrap();
    for t in &mut ex.tensors {
        let fill = if t.shape.len() == 2 { 3e38 } else { 0.0 };
        t.data.iter_mut().for_each(|v| *v = fill);
    }
    let n = ex.manifest.normalization.clone();
    tns_format::save_model(&f.model_path, &ex.manifest, &ex.tensors).unwrap();
    let (status, body) = f.reload(Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let far: Vec<Vec<f64>> = (0..4)
        .map(|_| {
            n.mean
                .iter()
                .zip(&n.std)
                .map(|(m, s)| m + 10.0 * s)
                .collect()
        })
        .collect();
    let (status, body) = f
        .post("/v1/models/b/predict", &json!({ "window": far }))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(error_code(&body), "model_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not finite")
    );
}

#[tokio::test]
async fn every_refusal_carries_the_json_error_body_and_paths_stay_private() {
    let f = serve().await;
    let answer = |r: reqwest::Response| async move {
        let status = r.status();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, body) = answer(
        f.client
            .get(format!("{}/v1/models/b/predict", f.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
    let long = "a".repeat(9000);
    let (status, body) = answer(
        f.client
            .get(format!("{}/v1/models?q={long}", f.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    assert_eq!(error_code(&body), "uri_too_long");
    // Any route can answer 414, so the document lists it on every operation.
    let document = serde_json::to_value(tns_serve::openapi_document()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"].get("414").is_some(),
                "{method} {path} does not document 414"
            );
        }
    }
    let (status, body) = answer(
        f.client
            .get(format!("{}/v2/health/live", f.base))
            .header("x-padding", "b".repeat(40_000))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(&body), "headers_too_large");
    // The model file's path is for the admin only.
    let (_, public) = f.get("/v1/models").await;
    assert!(public["models"][0].get("path").is_none(), "{public}");
    let admin = f
        .client
        .get(format!("{}/v1/models", f.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let admin: Value = admin.json().await.unwrap();
    assert!(
        admin["models"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("b.tns")
    );
}

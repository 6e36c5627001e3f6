//! Hostile clients over real loopback sockets, bounded in time: slow bodies, idle and
//! half-sent connections, a connection flood, shutdown with a request half-sent, and probes
//! that answer whatever the load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::json;
use tns_serve::{Limits, Running, ServeOptions, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-system-b-v1.tns")
}

async fn serve(limits: Limits) -> (Running, String) {
    let mut options = ServeOptions::new(vec![("b".into(), golden())]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.limits = limits;
    options.watch = None;
    let server = start(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

fn window() -> Vec<Vec<f64>> {
    (0..10)
        .map(|i| {
            let t = i as f64 * 0.05;
            vec![1.0 + 2.0 * t, -0.5 + t, 2.0, 1.0]
        })
        .collect()
}

/// Opens a socket and sends a predict request's head and the first byte of a 1,000-byte
/// body, then nothing more.
async fn slow_body(server: &Running) -> TcpStream {
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(
        b"POST /v1/models/b/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    s
}

/// What the server sends before it closes the socket (bounded by `within`).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

async fn predict_status(client: &Client, base: &str) -> StatusCode {
    client
        .post(format!("{base}/v1/models/b/predict"))
        .json(&json!({ "window": window() }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn slow_bodies_hold_no_concurrency_slot_and_time_out() {
    // Before: 300 trickling bodies held every slot and everyone got 503.
    let limits = Limits {
        concurrent: 4,
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (server, base) = serve(limits).await;
    let mut attackers = Vec::new();
    for _ in 0..40 {
        attackers.push(slow_body(&server).await);
    }
    let client = Client::new();
    for _ in 0..20 {
        assert_eq!(predict_status(&client, &base).await, StatusCode::OK);
    }
    let live = client
        .get(format!("{base}/v2/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    // Each slow body is answered 408 (JSON) once its timeout passes.
    for s in &mut attackers {
        let answer = read_until_closed(s, Duration::from_secs(10))
            .await
            .expect("a slow body was never answered");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    // Before: 5,000 idle sockets stayed open for good.
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, _) = serve(limits).await;
    let started = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        if i % 2 == 1 {
            // Half a request head.
            s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHo")
                .await
                .unwrap();
        }
        sockets.push(s);
    }
    for s in &mut sockets {
        assert!(
            read_until_closed(s, Duration::from_secs(10))
                .await
                .is_some(),
            "an idle connection stayed open"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let limits = Limits {
        connections: 8,
        ..Limits::default()
    };
    let (server, base) = serve(limits).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(slow_body(&server).await);
    }
    // The accept loop takes the 8 before the 9th arrives: wait until the server holds them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = TcpStream::connect(server.local_addr()).await.unwrap();
    let answer = read_until_closed(&mut ninth, Duration::from_secs(5)).await;
    assert_eq!(answer.as_deref(), Some(""), "the 9th connection was served");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(predict_status(&Client::new(), &base).await, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn probes_answer_when_no_concurrency_slot_is_free() {
    let limits = Limits {
        concurrent: 0,
        ..Limits::default()
    };
    let (server, base) = serve(limits).await;
    let client = Client::new();
    assert_eq!(
        predict_status(&client, &base).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for path in ["/v2/health/live", "/v2/health/ready", "/metrics"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_with_a_deadline_past_a_half_sent_request() {
    // Before: SIGTERM hung for as long as a client held a half-sent request.
    let limits = Limits {
        drain: Duration::from_secs(1),
        body_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let (server, _) = serve(limits).await;
    let mut half = slow_body(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown hung on a half-sent request")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        read_until_closed(&mut half, Duration::from_secs(5))
            .await
            .is_some()
    );
}

async fn open_session(client: &Client, base: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = client.post(format!("{base}/v1/models/b/sessions"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.json(&json!({})).send().await.unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["session_id"].as_str().map_or_else(
        || {
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        },
        str::to_string,
    );
    (status, id)
}

#[tokio::test]
async fn one_client_cannot_fill_the_session_table() {
    // Before: one client opened 10,000 sessions and everyone else got 429 for 300 s.
    let limits = Limits {
        sessions_per_client: 5,
        ..Limits::default()
    };
    let (server, base) = serve(limits).await;
    let client = Client::new();
    let mut flood = Vec::new();
    loop {
        let (status, id) = open_session(&client, &base, None).await;
        if status != StatusCode::CREATED {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert!(id.contains("limit per client"), "{id}");
            break;
        }
        flood.push(id);
        assert!(flood.len() <= 5, "the quota was not enforced");
    }
    assert_eq!(flood.len(), 5);
    // Another client (here told apart by its token) still opens one, bound to its token.
    let (status, alice) = open_session(&client, &base, Some("alice-token")).await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    let observe = |token: Option<&'static str>| {
        let mut request = client.post(format!("{base}/v1/models/b/sessions/{alice}"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request
            .json(&json!({ "observations": window()[..2] }))
            .send()
    };
    assert_eq!(observe(None).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        observe(Some("mallory")).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        observe(Some("alice-token")).await.unwrap().status(),
        StatusCode::OK
    );
    let delete = client
        .delete(format!("{base}/v1/models/b/sessions/{alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NOT_FOUND);
    // Closing one of the flood's frees a place in its quota.
    let closed = client
        .delete(format!("{base}/v1/models/b/sessions/{}", flood[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        open_session(&client, &base, None).await.0,
        StatusCode::CREATED
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sessions_are_bounded_in_bytes() {
    let (server, base) = serve(Limits::default()).await;
    let client = Client::new();
    assert_eq!(
        open_session(&client, &base, None).await.0,
        StatusCode::CREATED
    );
    let one = server.state().sessions.bytes();
    assert!(one > 0);
    server.shutdown().await.unwrap();
    // Room for three and a half sessions: the fourth is refused.
    let limits = Limits {
        session_bytes: 3 * one + one / 2,
        ..Limits::default()
    };
    let (server, base) = serve(limits).await;
    for _ in 0..3 {
        assert_eq!(
            open_session(&client, &base, None).await.0,
            StatusCode::CREATED
        );
    }
    let (status, message) = open_session(&client, &base, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(message.contains("bytes"), "{message}");
    assert_eq!(server.state().sessions.bytes(), 3 * one);
    server.shutdown().await.unwrap();
}

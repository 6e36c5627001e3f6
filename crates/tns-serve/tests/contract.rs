//! The server against its own OpenAPI document: schemathesis (property-based HTTP fuzzing
//! and stateful sequences) runs against a live server for a bounded time and fails on any
//! 5xx, any status, content type, header or body the document does not list, any invalid
//! request accepted, or a missing auth header accepted.
//!
//! Needs `schemathesis` importable by `$TNS_PYTHON` (else `python3`); skipped with a
//! message when it is not, unless `TNS_REQUIRE_SCHEMATHESIS=1` (CI), where it fails.
//! `TNS_SCHEMATHESIS_SECONDS` sets the time budget (default 60).

use std::path::Path;
use std::process::Command;

use tns_conformance::{python, python_modules_available};
use tns_serve::{Limits, ServeOptions, start};

const TOKEN: &str = "contract-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_to_its_openapi_document() {
    if !python_modules_available(
        "schemathesis",
        "TNS_REQUIRE_SCHEMATHESIS",
        "the OpenAPI contract test",
        "schemathesis",
    ) {
        return;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("b.tns");
    std::fs::copy(
        here.join("../../tests/fixtures/golden-system-b-v1.tns"),
        &model,
    )
    .unwrap();
    let mut options = ServeOptions::new(vec![("b".into(), model)]);
    options.addr = "127.0.0.1:0".parse().unwrap();
    options.admin_token = Some(TOKEN.into());
    options.watch = None;
    // The fuzzer opens many sessions from one client; the quota itself is tested elsewhere.
    options.limits = Limits {
        sessions_per_client: 100_000,
        ..Limits::default()
    };
    let server = start(options).await.unwrap();
    let url = format!("http://{}/openapi.json", server.local_addr());
    let seconds = std::env::var("TNS_SCHEMATHESIS_SECONDS").unwrap_or_else(|_| "60".into());
    let config = here.join("tests/schemathesis.toml");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .current_dir(dir.path())
            .args([
                "-c",
                "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            ])
            .arg("--config-file")
            .arg(&config)
            .args(["run", &url, "--checks", "all"])
            // A body can satisfy the document and still not fit the served model (its
            // window shape is the model's, not the document's), so "a schema-valid request
            // must be accepted" cannot hold for a model server.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-time", &seconds, "--workers", "2", "--no-color"])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--generation-database", "none"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}

//! Assertions and the onnxruntime runner shared by the conformance suite and the backends'
//! own tests. They panic on a mismatch, as assertions do.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Asserts equal JSON documents, numbers within `tolerance · max(|expected|, floor)`: the
/// engine's f32 network may round differently from the reference, nothing more.
pub fn assert_json_within(got: &Value, expected: &Value, tolerance: f64, floor: f64, label: &str) {
    match (got, expected) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            assert!(
                (x - y).abs() <= tolerance * y.abs().max(floor),
                "{label}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{label}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_json_within(p, q, tolerance, floor, &format!("{label}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{label}"
            );
            for (k, v) in x {
                assert_json_within(v, &y[k], tolerance, floor, &format!("{label}.{k}"));
            }
        }
        _ => assert_eq!(got, expected, "{label}"),
    }
}

/// The Python that has onnxruntime: `$TNS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("TNS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether [`python`] can import `modules` (comma-separated). When it cannot, says on
/// stderr what is skipped and how to install them, and returns false — unless the
/// environment variable `require` is `1` (CI), where it panics instead: a check that CI
/// must run never passes by being skipped.
pub fn python_modules_available(modules: &str, require: &str, skipped: &str, pip: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var(require).as_deref() != Ok("1"),
            "{require}=1 but {} cannot import {modules}",
            python()
        );
        eprintln!(
            "SKIPPED {skipped}: {} cannot import {modules} (pip install {pip}, or set TNS_PYTHON)",
            python()
        );
    }
    ok
}

/// Whether onnxruntime and numpy can be imported (see [`python_modules_available`];
/// `TNS_REQUIRE_ONNXRUNTIME=1` makes their absence fail).
pub fn onnxruntime_available() -> bool {
    python_modules_available(
        "onnxruntime, numpy",
        "TNS_REQUIRE_ONNXRUNTIME",
        "the ONNX backend",
        "onnxruntime onnx numpy",
    )
}

/// Runs `crates/tns-onnx/tests/ort_parity.py` on the cases under `dir` (each a folder with
/// `model.onnx`, `windows.f32` and the engine's `expected.json`); panics if any case fails.
/// Returns the script's JSON report.
pub fn run_ort_parity(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tns-onnx/tests/ort_parity.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(
        out.status.success(),
        "onnxruntime parity failed (see above)"
    );
    report
}

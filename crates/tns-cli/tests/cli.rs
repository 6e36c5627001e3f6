//! The `tns` binary end to end: generate, train, predict, and clear errors on bad input.

use std::process::Command;

fn tns(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tns"))
        .args(args)
        .output()
        .expect("run tns")
}

#[test]
fn synth_train_predict_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("turn.csv");
    let model = dir.path().join("b.tns");
    let out = tns(&[
        "data",
        "synth",
        "trajectory",
        "--regime",
        "turn",
        "--rows",
        "1500",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "t",
        "--model",
        "system-b",
        "--epochs",
        "2",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let window: Vec<Vec<f64>> = (0..10)
        .map(|i| vec![i as f64 * 0.25, 1.0, 5.0, 0.0])
        .collect();
    let input = dir.path().join("w.json");
    std::fs::write(&input, serde_json::json!({ "window": window }).to_string()).unwrap();
    let out = tns(&[
        "predict",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cert["gate"]["test"], "chi2_mahalanobis");
    assert_eq!(cert["interval"]["method"], "split_conformal");
    // Moving at 5 m/s along x for 0.45 s: the next x is near 2.5 m.
    let x = cert["prediction"][0][0].as_f64().unwrap();
    assert!((x - 2.5).abs() < 0.3, "{x}");

    // A tampered model file is refused with the reason.
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let out = tns(&[
        "predict",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
}

#[test]
fn malformed_csv_is_reported_with_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "t,x\n0,1\n1,2\n2,oops\n").unwrap();
    let out = tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "t",
        "-o",
        "/dev/null",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 4") && err.contains("\"x\"") && err.contains("oops"),
        "{err}"
    );
}

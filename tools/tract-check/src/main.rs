//! Runs every case that `crates/tns-onnx/tests/onnxruntime_parity.rs` wrote (with
//! `TNS_ONNX_CASES_DIR=DIR`) in tract and compares with the engine, like the onnxruntime
//! script: `|tract − engine| ≤ 1e-5 · max(|engine|, residual scale)`.
//!
//!     cargo run --release --manifest-path tools/tract-check/Cargo.toml -- DIR

use std::path::Path;

use tract_onnx::prelude::*;

fn check(case: &Path) -> TractResult<(String, f64)> {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("expected.json"))?)?;
    let n = expected["n"].as_u64().unwrap_or(0) as usize;
    let (l, f) = (
        expected["lookback"].as_u64().unwrap_or(0) as usize,
        expected["features"].as_u64().unwrap_or(0) as usize,
    );
    let (h, t) = (
        expected["horizon"].as_u64().unwrap_or(0) as usize,
        expected["targets"].as_u64().unwrap_or(0) as usize,
    );
    let bytes = std::fs::read(case.join("windows.f32"))?;
    let windows: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let model = tract_onnx::onnx()
        .model_for_path(case.join("model.onnx"))?
        .with_input_fact(0, f32::fact([n, l, f]).into())?
        .into_optimized()?
        .into_runnable()?;
    let input = tract_ndarray::Array3::from_shape_vec((n, l, f), windows)?;
    let outputs = model.run(tvec!(input.into_tensor().into()))?;
    let forecast = outputs[0].to_plain_array_view::<f32>()?;
    let want: Vec<f64> = expected["outputs"]["forecast"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let scale: Vec<f64> = expected["scale"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let threshold = expected["threshold"].as_f64();
    let statistic = expected["outputs"]["gate_statistic"].as_array();
    let mut worst = 0f64;
    for (i, (got, want)) in forecast.iter().zip(&want).enumerate() {
        // Windows whose gate statistic sits within 1e-4 of the threshold are undecidable in f32.
        let window = i / (h * t);
        if let (Some(stat), Some(thr)) = (statistic, threshold) {
            let near = (0..h).any(|k| {
                stat[window * h + k]
                    .as_f64()
                    .is_some_and(|s| (s - thr).abs() <= 1e-4 * thr)
            });
            if near {
                continue;
            }
        }
        let floor = scale[i % (h * t)];
        worst = worst.max((f64::from(*got) - want).abs() / want.abs().max(floor));
    }
    let name = case.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok((name, worst))
}

fn main() -> TractResult<()> {
    let root = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: tract-check DIR"))?;
    let mut cases: Vec<_> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failed = false;
    for case in cases {
        match check(&case) {
            Ok((name, worst)) => {
                let ok = worst <= 1e-5;
                failed |= !ok;
                println!("{name}: tract loads and runs it; worst relative forecast error {worst:.1e} {}", if ok { "ok" } else { "FAIL" });
            }
            Err(e) => {
                failed = true;
                println!("{}: tract failed: {e:#}", case.display());
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

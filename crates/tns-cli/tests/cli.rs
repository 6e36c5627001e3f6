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
        dir.path().join("m.tns").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 4") && err.contains("\"x\"") && err.contains("oops"),
        "{err}"
    );
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn system_b_over_any_network_trains_evaluates_exports_and_quantizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let synth = TURN_2000;
    let train = |model: &str, network: Option<&str>, out: &str| {
        let mut args = vec!["train", "--model", model, "--epochs", "2", "-o", out];
        args.extend(synth);
        if let Some(n) = network {
            args.extend(["--network", n, "--name", out]);
        }
        tns(&args)
    };
    let (b_mlp, b_gru, mlp) = (path("b-mlp.tns"), path("b-gru.tns"), path("mlp.tns"));
    let log = train("system-b", Some("mlp:16,8"), &b_mlp);
    let stderr = String::from_utf8_lossy(&log.stderr);
    assert!(stderr.contains("system-b over mlp:16,8"), "{stderr}");
    // Not a terminal: one log line per epoch instead of a progress bar.
    assert!(
        stderr.contains("epoch 1/2: train") && stderr.contains("epoch 2/2: train"),
        "{stderr}"
    );
    ok(log);
    ok(train("system-b", None, &b_gru));
    ok(train("mlp", None, &mlp));
    // DLinear, a stacked LSTM, a TCN, N-HiTS, a transformer (also with overlapping patches,
    // causal attention and a head on every token, and channel-independent), S4D and Mamba as
    // System B's correction:
    // train, inspect, export, quantize.
    for (i, (network, layer)) in [
        ("dlinear:5", "decompose"),
        ("lstm:8,2", "lstm"),
        ("tcn:4,2,3", "tcn-block"),
        ("nhits:2,1,16,2", "nhits"),
        ("transformer:8,2,1,1,2", "transformer-block"),
        ("s4d:8,4,2", "s4d-block"),
        ("mamba:8,4,2,3,2", "mamba-block"),
        (
            "transformer:8,2,1,1,4,2,causal,flatten",
            "transformer-block",
        ),
        (
            "transformer:8,2,1,1,2,flatten,independent",
            "transformer-block",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let file = path(&format!("b-{i}-{layer}.tns"));
        ok(train("system-b", Some(network), &file));
        let inspect = ok(tns(&["inspect", &file]));
        assert!(
            inspect.contains(network) && inspect.contains(layer),
            "{inspect}"
        );
        ok(tns(&[
            "export",
            "onnx",
            &file,
            "-o",
            &path(&format!("b-{i}-{layer}.onnx")),
        ]));
        let quantized = path(&format!("b-{i}-{layer}-int8.tns"));
        let mut args = vec![
            "quantize",
            file.as_str(),
            "--int8",
            "-o",
            quantized.as_str(),
        ];
        args.extend(synth);
        ok(tns(&args));
    }

    // One table: System B over the MLP against the MLP and System B over the GRU.
    let mut args = vec!["eval", b_mlp.as_str(), mlp.as_str(), b_gru.as_str()];
    args.extend(synth);
    let table = ok(tns(&args));
    let comparison = table.split("\n\n").next().unwrap_or_default();
    assert_eq!(comparison.matches("\n| ").count(), 3, "{table}");
    // The second table scores every model: MAE, sMAPE, MASE, pinball, Winkler, coverage.
    assert!(
        table.contains("| model | MAE | RMSE | sMAPE % | MASE |"),
        "{table}"
    );
    assert!(
        table.contains("b-mlp.tns") && table.contains("| mlp |"),
        "{table}"
    );

    // The description drives inspect, ONNX export and INT8.
    let inspect = ok(tns(&["inspect", &b_mlp]));
    assert!(
        inspect.contains("network      mlp:16,8") && inspect.contains("(relu)"),
        "{inspect}"
    );
    ok(tns(&["export", "onnx", &b_mlp, "-o", &path("b-mlp.onnx")]));
    let mut args = vec!["quantize", b_mlp.as_str(), "--int8", "-o"];
    let q = path("b-mlp-int8.tns");
    args.push(&q);
    args.extend(synth);
    ok(tns(&args));
    let window: Vec<Vec<f64>> = (0..10)
        .map(|i| vec![i as f64 * 0.25, 1.0, 5.0, 0.0])
        .collect();
    let input = path("w.json");
    std::fs::write(&input, serde_json::json!({ "window": window }).to_string()).unwrap();
    for model in [&b_mlp, &q] {
        let cert: serde_json::Value =
            serde_json::from_str(&ok(tns(&["predict", model, "-i", &input]))).unwrap();
        assert_eq!(cert["gate"]["test"], "chi2_mahalanobis", "{model}");
    }
}

#[test]
fn bad_networks_are_refused_with_the_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("m.tns");
    let refused = |model: &str, network: &str| {
        let out = tns(&[
            "train",
            "--synth",
            "trajectory",
            "--rows",
            "500",
            "--model",
            model,
            "--network",
            network,
            "-o",
            output.to_str().unwrap(),
        ]);
        assert!(
            !out.status.success(),
            "{model} --network {network} was accepted"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("system-b", "tcn:4");
    assert!(
        err.contains("mlp:W1") && err.contains("gru:H") && err.contains("lstm:H"),
        "{err}"
    );
    let err = refused("kalman", "mlp:4");
    assert!(err.contains("kalman has no network"), "{err}");
}

/// A long-format file with a text column and two series of very different scale: the model
/// records its time column, series filter and split, and `tns eval` reads them back, so
/// evaluating with `--data` alone scores series A only.
#[test]
fn eval_reads_columns_series_and_split_from_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("long.csv");
    let mut text = String::from("id,when,note,holiday,y\n");
    for (id, scale) in [("A", 1.0), ("B", 1e6)] {
        for i in 0..400 {
            let y = scale * ((i as f64 * 0.3).sin() + 2.0);
            let holiday = if i % 7 == 0 { "TRUE" } else { "FALSE" };
            let (day, hour) = (1 + i / 24, i % 24);
            text.push_str(&format!(
                "{id},2020-01-{day:02}T{hour:02}:00:00+00:00,x,{holiday},{y}\n"
            ));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let model = dir.path().join("a.tns");
    let out = tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "when",
        "--series-column",
        "id",
        "--series",
        "A",
        "--targets",
        "y",
        "--model",
        "linear",
        "--lookback",
        "8",
        "--epochs",
        "2",
        "--val-start",
        "2020-01-11",
        "--cal-start",
        "2020-01-13",
        "--test-start",
        "2020-01-15",
        "-o",
        model.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped columns holding text or dates: note"),
        "{stderr}"
    );
    assert!(stderr.contains("test from 2020-01-15 00:00:00"), "{stderr}");
    let table = ok(tns(&[
        "eval",
        "--data",
        csv.to_str().unwrap(),
        model.to_str().unwrap(),
    ]));
    let mse: f64 = table
        .lines()
        .find(|l| l.starts_with("| linear"))
        .and_then(|l| l.split('|').nth(3))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{table}"));
    // Series B's values are 10⁶ times larger: any of its windows would dominate the MSE.
    assert!(mse < 1.0, "test MSE {mse}: series B was scored\n{table}");
    // The same model twice: two rows with distinct names.
    let twice = ok(tns(&[
        "eval",
        "--data",
        csv.to_str().unwrap(),
        model.to_str().unwrap(),
        model.to_str().unwrap(),
    ]));
    assert!(
        twice.contains("| linear (a) #1 |") && twice.contains("| linear (a) #2 |"),
        "{twice}"
    );
}

/// `tns backtest` fits each fold on history before it only and scores the origins inside it.
#[test]
fn backtest_folds_forecast_only_inside_their_period() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("hourly.csv");
    let mut text = String::from("when,y\n");
    for i in 0..24 * 200 {
        let y = (i as f64 * std::f64::consts::TAU / 24.0).sin() * 10.0 + 50.0 + (i % 7) as f64;
        text.push_str(&format!("{},{y}\n", 1_600_000_000 + 3600 * i));
    }
    std::fs::write(&csv, text).unwrap();
    let (report, predictions) = (dir.path().join("bt.json"), dir.path().join("bt.csv"));
    let out = tns(&[
        "backtest",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "when",
        "--targets",
        "y",
        "--models",
        "persistence,seasonal-naive,linear",
        "--season",
        "24",
        "--lookback",
        "24",
        "--horizon",
        "24",
        "--origin-every",
        "24",
        "--folds",
        "3",
        "--epochs",
        "2",
        "--report",
        report.to_str().unwrap(),
        "--predictions",
        predictions.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| seasonal-naive |") && stdout.contains("fold 3 MAE"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 9);
    // Every forecast of fold k predicts rows inside fold k's test period.
    let rows = std::fs::read_to_string(&predictions).unwrap();
    for line in rows.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let fold: usize = cells[0].parse().unwrap();
        let r = results.iter().find(|r| r["fold"] == fold).unwrap();
        let (start, end) = (
            seconds(r["test_start"].as_str().unwrap()),
            seconds(r["test_end"].as_str().unwrap()),
        );
        let step: i64 = cells[4].parse().unwrap();
        let target = seconds(cells[3]) + 3600 * step;
        assert!(
            target >= start && target < end,
            "{line}: target outside the fold"
        );
    }
}

/// Seconds since 1970 of a UTC `YYYY-MM-DD HH:MM:SS` (days from the civil date).
fn seconds(text: &str) -> i64 {
    let n: Vec<i64> = text
        .split(['-', ' ', ':'])
        .map(|p| p.parse().unwrap())
        .collect();
    let (y, m, d) = if n[1] <= 2 {
        (n[0] - 1, n[1] + 9, n[2])
    } else {
        (n[0], n[1] - 3, n[2])
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + n[3] * 3600 + n[4] * 60 + n[5]
}

/// `tns predict --data F --output P` streams a file into forecasts, skips nothing but the
/// first incomplete windows and the rows across a gap, and resumes an interrupted run.
#[test]
fn predict_scores_a_file_streaming_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("hourly.csv");
    let mut text = String::from("when,y,x\n");
    let mut hour = 0;
    for i in 0..400 {
        // A gap of 5 hours after row 300.
        hour += if i == 300 { 6 } else { 1 };
        let y = (i as f64 * 0.26).sin() * 3.0 + 10.0;
        text.push_str(&format!("{},{y},{}\n", 1_600_000_000 + 3600 * hour, i % 5));
    }
    std::fs::write(&csv, text).unwrap();
    let model = dir.path().join("m.tns");
    ok(tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "when",
        "--targets",
        "y",
        "--model",
        "linear",
        "--lookback",
        "12",
        "--horizon",
        "2",
        "--epochs",
        "2",
        "-o",
        model.to_str().unwrap(),
    ]));
    let out = dir.path().join("p.csv");
    let run = || {
        ok(tns(&[
            "predict",
            model.to_str().unwrap(),
            "--data",
            csv.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]))
    };
    run();
    let full = std::fs::read_to_string(&out).unwrap();
    // Windows: rows 12..=300 before the gap and 12 rows after it; 2 steps each.
    let forecasts = (300 - 12 + 1) + (100 - 12 + 1);
    assert_eq!(full.lines().count(), 1 + 2 * forecasts, "{}", &full[..200]);
    // Interrupted after 21 lines and half of the next: the run resumes to the same file.
    let lines: Vec<&str> = full.lines().collect();
    let torn = format!("{}\n{}", lines[..21].join("\n"), &lines[21][..10]);
    std::fs::remove_file(&out).unwrap();
    std::fs::write(dir.path().join("p.csv.partial"), torn).unwrap();
    run();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), full);
}

/// Output folders are settled before any work: `--run-dir` and report folders are created,
/// a missing `-o` folder is an error before training.
#[test]
fn output_folders_are_checked_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("runs/nested");
    let model = dir.path().join("m.tns");
    let synth = ["--synth", "trajectory", "--rows", "1500", "--epochs", "1"];
    let mut args = vec![
        "train",
        "--model",
        "linear",
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    args.extend(["-o", model.to_str().unwrap()]);
    args.extend(synth);
    ok(tns(&args));
    assert!(run_dir.join("linear.ckpt").exists());
    let missing = dir.path().join("nowhere/m.tns");
    let mut args = vec![
        "train",
        "--model",
        "linear",
        "-o",
        missing.to_str().unwrap(),
    ];
    args.extend(synth);
    let out = tns(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && !err.contains("epoch 1/1"),
        "{err}"
    );
    let report = dir.path().join("reports/deep/cmp");
    let mut args = vec![
        "eval",
        model.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(&synth[..4]);
    ok(tns(&args));
    assert!(report.with_extension("md").exists());
}

/// A target driven by a covariate known a day ahead and by the local hour: `--future` and
/// `--calendar` (with `--timezone`) train, are recorded in the model file, and every command
/// reads them from it — eval, streaming predict, JSON predict and ONNX export. The model
/// with them beats the same model without them by a wide margin (the covariate is white
/// noise: no window of the past predicts it).
#[test]
fn future_covariates_and_calendar_train_evaluate_predict_and_export() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("load.csv");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut text = String::from("time,load_forecast,y\n");
    // Hourly from 2021-01-01 00:00 UTC over 120 days (crossing the March DST change).
    let start = 1_609_459_200i64;
    for i in 0..24 * 120 {
        let t = start + 3600 * i;
        let local_hour = chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .with_timezone(&chrono_tz::Europe::Paris)
            .format("%H")
            .to_string()
            .parse::<f64>()
            .unwrap();
        let load: f64 = rng.random_range(-1.0..1.0);
        let y = 5.0 * (std::f64::consts::TAU * local_hour / 24.0).sin()
            + 3.0 * load
            + 0.05 * rng.random_range(-1.0..1.0);
        let stamp = chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S");
        text.push_str(&format!("{stamp},{load},{y}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let train = |model: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            csv.to_str().unwrap(),
            "--time-column",
            "time",
            "--targets",
            "y",
            "--model",
            "linear",
            "--lookback",
            "24",
            "--horizon",
            "6",
            "--origin-every",
            "6",
            "--epochs",
            "30",
            "-o",
            model.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(tns(&args))
    };
    let with = dir.path().join("with.tns");
    let without = dir.path().join("without.tns");
    train(
        &with,
        &[
            "--future",
            "load_forecast",
            "--calendar",
            "hour,dow",
            "--timezone",
            "Europe/Paris",
        ],
    );
    train(&without, &[]);
    let table = ok(tns(&[
        "eval",
        "--data",
        csv.to_str().unwrap(),
        with.to_str().unwrap(),
        without.to_str().unwrap(),
    ]));
    let mae = |name: &str| -> f64 {
        let header: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("| model"))
            .unwrap_or_else(|| panic!("{table}"))
            .split('|')
            .map(str::trim)
            .collect();
        let column = header.iter().position(|h| *h == "MAE").unwrap();
        table
            .lines()
            .find(|l| l.starts_with(&format!("| linear {name}")))
            .and_then(|l| l.split('|').nth(column))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{table}"))
    };
    let (a, b) = (mae("(with)"), mae("(without)"));
    assert!(
        a < 0.5 * b,
        "MAE with future inputs {a}, without {b}\n{table}"
    );
    // Streaming scoring reads the covariates from the rows after each origin.
    let scored = dir.path().join("scored.csv");
    ok(tns(&[
        "predict",
        with.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
        "--output",
        scored.to_str().unwrap(),
        "--origin-every",
        "24",
    ]));
    let lines = std::fs::read_to_string(&scored).unwrap().lines().count();
    // Origins need 24 rows of history and 6 rows ahead: (2880 − 29) / 24 + 1 of them.
    assert_eq!(lines, 1 + 6 * ((24 * 120 - 29) / 24 + 1));
    // One JSON input: window, covariates, time.
    let input = dir.path().join("in.json");
    let window: Vec<Vec<f64>> = (0..24).map(|i| vec![0.1, (i as f64).sin()]).collect();
    let future = vec![vec![0.5]; 6];
    std::fs::write(
        &input,
        serde_json::json!({"window": window, "future": future, "time": "2021-03-28T00:00:00Z"})
            .to_string(),
    )
    .unwrap();
    let certificate = ok(tns(&[
        "predict",
        with.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
    ]));
    assert!(certificate.contains("\"prediction\""), "{certificate}");
    // Without the time, a clear error.
    std::fs::write(
        &input,
        serde_json::json!({"window": window, "future": future}).to_string(),
    )
    .unwrap();
    let out = tns(&[
        "predict",
        with.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("calendar features"),
        "{stderr}"
    );
    let onnx = dir.path().join("with.onnx");
    let said = ok(tns(&[
        "export",
        "onnx",
        with.to_str().unwrap(),
        "-o",
        onnx.to_str().unwrap(),
    ]));
    assert!(
        said.contains("future [batch, 6, 5] (load_forecast, hour_sin, hour_cos, dow_sin, dow_cos)"),
        "{said}"
    );
    // Intervals calibrated by the hour of the predicted step: the certificate names the
    // method, the ONNX graph exports it, and a model without the hour refuses it.
    let hourly = dir.path().join("hourly.tns");
    let calibrate = |model: &std::path::Path, out: &std::path::Path| {
        tns(&[
            "calibrate",
            model.to_str().unwrap(),
            "--interval",
            "split",
            "--interval-by",
            "hour",
            "--data",
            csv.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    ok(calibrate(&with, &hourly));
    let timed = dir.path().join("timed.json");
    std::fs::write(
        &timed,
        serde_json::json!({"window": window, "future": future, "time": "2021-03-28T00:00:00Z"})
            .to_string(),
    )
    .unwrap();
    let certificate: serde_json::Value = serde_json::from_str(&ok(tns(&[
        "predict",
        hourly.to_str().unwrap(),
        "-i",
        timed.to_str().unwrap(),
    ])))
    .unwrap();
    let interval = &certificate["interval"];
    assert_eq!(
        interval["method"], "mondrian_hour_split_conformal",
        "{interval}"
    );
    assert!(
        interval["guarantee"]
            .as_str()
            .unwrap()
            .contains("conditional on the hour"),
        "{interval}"
    );
    assert!(ok(tns(&["inspect", hourly.to_str().unwrap()])).contains("hour 23"));
    ok(tns(&[
        "export",
        "onnx",
        hourly.to_str().unwrap(),
        "-o",
        dir.path().join("hourly.onnx").to_str().unwrap(),
    ]));
    let out = calibrate(&without, &dir.path().join("refused.tns"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--calendar hour"),
        "{stderr}"
    );
    // A calendar on data without date-times is refused up front.
    let out = tns(&[
        "train",
        "--synth",
        "trajectory",
        "--rows",
        "600",
        "--model",
        "linear",
        "--calendar",
        "hour",
        "-o",
        dir.path().join("x.tns").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("date-time"),
        "{stderr}"
    );
}

/// `--seasons` gives kalman and system-b a structural prior fitted by maximum likelihood: on a
/// daily cycle it forecasts a day ahead far better than the local-trend prior, it exports to
/// ONNX, and other kinds refuse it.
#[test]
fn a_structural_prior_forecasts_a_daily_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let csv = hourly_cycle_csv(dir.path(), false);
    let train = |name: &str, extra: &[&str]| {
        let (path, out) = train_day_ahead_kalman(&csv, dir.path(), name, extra);
        ok(out);
        path
    };
    let structural = train("structural", &["--seasons", "24:3"]);
    let trend = train("trend", &[]);
    let table = ok(tns(&[
        "eval",
        "--data",
        csv.to_str().unwrap(),
        structural.to_str().unwrap(),
        trend.to_str().unwrap(),
    ]));
    let mae = |name: &str| eval_mae(&table, name);
    assert!(
        mae("structural") < 0.2 * mae("trend"),
        "structural {} vs trend {}\n{table}",
        mae("structural"),
        mae("trend")
    );
    let onnx = dir.path().join("s.onnx");
    ok(tns(&[
        "export",
        "onnx",
        structural.to_str().unwrap(),
        "-o",
        onnx.to_str().unwrap(),
    ]));
    let out = tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "t",
        "--model",
        "mlp",
        "--seasons",
        "24:3",
        "-o",
        dir.path().join("x.tns").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("kalman or system-b"),
        "{stderr}"
    );
}

/// Issue 13 item 8: no command writes over one of its inputs, through a symbolic link or onto
/// a device; each is refused before any work, and the input is left as it was.
#[test]
fn outputs_never_destroy_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("victim.csv");
    ok(tns(&[
        "data",
        "synth",
        "trajectory",
        "--rows",
        "600",
        "-o",
        csv.to_str().unwrap(),
    ]));
    let before = std::fs::read(&csv).unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = tns(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(
        &[
            "train",
            "--data",
            csv.to_str().unwrap(),
            "--time-column",
            "t",
            "--model",
            "linear",
            "-o",
            csv.to_str().unwrap(),
        ],
        "also an input",
    );
    assert_eq!(std::fs::read(&csv).unwrap(), before, "the input changed");
    let model = dir.path().join("m.tns");
    ok(tns(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "t",
        "--model",
        "linear",
        "--epochs",
        "1",
        "-o",
        model.to_str().unwrap(),
    ]));
    let model_bytes = std::fs::read(&model).unwrap();
    refused(
        &[
            "export",
            "onnx",
            model.to_str().unwrap(),
            "-o",
            model.to_str().unwrap(),
        ],
        "also an input",
    );
    // The same file by another path.
    let other = dir.path().join(".").join("m.tns");
    refused(
        &[
            "export",
            "onnx",
            model.to_str().unwrap(),
            "-o",
            other.to_str().unwrap(),
        ],
        "also an input",
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        model_bytes,
        "the model changed"
    );
    refused(
        &[
            "predict",
            model.to_str().unwrap(),
            "--data",
            csv.to_str().unwrap(),
            "--output",
            csv.to_str().unwrap(),
        ],
        "also an input",
    );
    refused(
        &[
            "eval",
            "--data",
            csv.to_str().unwrap(),
            model.to_str().unwrap(),
            "--predictions",
            csv.to_str().unwrap(),
        ],
        "also an input",
    );
    #[cfg(unix)]
    {
        let link = dir.path().join("link.onnx");
        std::os::unix::fs::symlink(dir.path().join("target.onnx"), &link).unwrap();
        refused(
            &[
                "export",
                "onnx",
                model.to_str().unwrap(),
                "-o",
                link.to_str().unwrap(),
            ],
            "symbolic link",
        );
        refused(
            &["export", "onnx", model.to_str().unwrap(), "-o", "/dev/null"],
            "not a regular file",
        );
    }
    assert_eq!(std::fs::read(&csv).unwrap(), before, "the input changed");
}

/// Issue 13 item 12: options that would silently write an untrained model or run a server
/// that cannot answer are refused with a message naming them.
#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("m.tns");
    let train = |extra: &[&str], says: &str| {
        let mut args = vec![
            "train",
            "--synth",
            "trajectory",
            "--rows",
            "600",
            "--model",
            "linear",
            "-o",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = tns(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    };
    train(&["--patience", "0"], "--patience");
    train(&["--epochs", "0"], "--epochs");
    train(
        &[
            "--stop-after",
            "0",
            "--run-dir",
            dir.path().to_str().unwrap(),
        ],
        "--stop-after",
    );
    train(&["--gate-penalty", "NaN"], "--gate-penalty");
    train(&["--lr=-1"], "--lr");
    train(&["--targets", "x,x"], "listed twice");
    assert!(!output.exists(), "a refused run wrote a model");
    for flag in ["--workers", "--max-concurrent", "--max-batch"] {
        let out = tns(&["serve", "m=x.tns", flag, "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(flag),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn inconsistent_manifests_and_non_files_are_refused_without_a_panic() {
    // The issue's cases made `tns inspect` index out of bounds (exit 101); the loader now
    // checks every length and index against the description first.
    let dir = tempfile::tempdir().unwrap();
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden-system-b-v1.tns");
    let (manifest, tensors) = tns_format::load_model(&golden).unwrap();
    type Edit = fn(&mut tns_format::Manifest);
    let edits: [(&str, Edit); 4] = [
        ("short mean", |m| m.normalization.mean.truncate(2)),
        ("short relative", |m| m.normalization.relative.truncate(1)),
        ("axis 99", |m| {
            m.kalman.as_mut().unwrap().spec.axes[0].position = 99;
        }),
        ("short radii", |m| {
            m.conformal.as_mut().unwrap().radii.pop();
        }),
    ];
    for (what, edit) in edits {
        let mut m = manifest.clone();
        edit(&mut m);
        let path = dir.path().join("edited.tns");
        tns_format::save_model(&path, &m, &tensors).unwrap();
        let window = dir.path().join("w.json");
        std::fs::write(&window, r#"{"window": [[0, 0, 0, 0]]}"#).unwrap();
        let model = path.to_str().unwrap();
        for args in [
            vec!["inspect", model],
            vec!["predict", model, "-i", window.to_str().unwrap()],
        ] {
            let out = tns(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what}, {args:?}: {stderr}");
            assert!(stderr.contains("manifest is invalid"), "{what}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        }
    }
    // Not a model file: a device and a FIFO are refused before any read (they would never
    // end or block), a folder too.
    let fifo = dir.path().join("fifo.tns");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for path in [
        "/dev/zero",
        fifo.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ] {
        let out = tns(&["inspect", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{path}: {stderr}");
    }
}

#[test]
fn inputs_that_are_not_files_or_not_in_time_order_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    let model = dir.path().join("p.tns");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    assert!(
        tns(&[
            "data",
            "synth",
            "trajectory",
            "--rows",
            "800",
            "-o",
            &path(&csv)
        ])
        .status
        .success()
    );
    let out = tns(&[
        "train",
        "--data",
        &path(&csv),
        "--time-column",
        "t",
        "--model",
        "persistence",
        "-o",
        &path(&model),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = |args: &[&str], needle: &str| {
        let out = tns(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    // The generators build their data in memory: a row count beyond the cap is refused at
    // once, before any allocation.
    let out = tns(&[
        "data",
        "synth",
        "trajectory",
        "--rows",
        "100000000",
        "-o",
        &path(&dir.path().join("big.csv")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1..=10000000"));
    assert!(!dir.path().join("big.csv").exists());
    // Devices are refused before any read (they would never end).
    refused(
        &[
            "train",
            "--data",
            "/dev/zero",
            "-o",
            &path(&dir.path().join("z.tns")),
        ],
        "not a regular file",
    );
    refused(
        &["predict", &path(&model), "-i", "/dev/zero"],
        "not a regular file",
    );
    refused(
        &[
            "predict",
            &path(&model),
            "--data",
            "/dev/zero",
            "-o",
            &path(&dir.path().join("f.csv")),
        ],
        "not a regular file",
    );
    // A window whose times go backwards, or are not numbers, is not a window.
    let rows: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "{},{},1,0.5,0",
                if i == 5 { 0.0 } else { i as f64 * 0.05 },
                i
            )
        })
        .collect();
    let unsorted = dir.path().join("unsorted.csv");
    std::fs::write(&unsorted, format!("t,x,y,vx,vy\n{}\n", rows.join("\n"))).unwrap();
    refused(
        &["predict", &path(&model), "-i", &path(&unsorted)],
        "does not increase",
    );
    let nan = dir.path().join("nan.csv");
    std::fs::write(&nan, "t,x,y,vx,vy\n0,1,1,0,0\nNaN,1,1,0,0\n").unwrap();
    refused(&["predict", &path(&model), "-i", &path(&nan)], "\"t\"");
}

#[test]
fn sigterm_drains_with_a_deadline_while_a_request_is_half_sent() {
    // Before: `tns serve` hung on SIGTERM for as long as a client held a half-sent request.
    use std::io::{BufRead, BufReader, Write};
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden-system-b-v1.tns");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tns"))
        .args(["serve", &format!("b={}", golden.display())])
        .args([
            "--addr",
            "127.0.0.1:0",
            "--watch-seconds",
            "0",
            "--drain-seconds",
            "1",
        ])
        .args(["--body-timeout-seconds", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(
        b"POST /v1/models/b/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"win",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Exits within the 1 s drain plus a margin, cleanly.
    let deadline = started + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("tns serve did not exit after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

#[test]
fn a_structural_prior_regressed_on_a_known_driver_uses_its_future() {
    // y = daily cycle + 3·x, x an irregular driver known in advance (as a day-ahead forecast).
    let dir = tempfile::tempdir().unwrap();
    let csv = hourly_cycle_csv(dir.path(), true);
    let train = |name: &str, extra: &[&str]| {
        let mut args = vec!["--seasons", "24:3"];
        args.extend_from_slice(extra);
        train_day_ahead_kalman(&csv, dir.path(), name, &args)
    };
    let (regressed, out) = train("regressed", &["--future", "x", "--prior-regressors", "x"]);
    ok(out);
    let (blind, out) = train("blind", &[]);
    ok(out);
    let table = ok(tns(&[
        "eval",
        "--data",
        csv.to_str().unwrap(),
        regressed.to_str().unwrap(),
        blind.to_str().unwrap(),
    ]));
    let mae = |name: &str| eval_mae(&table, name);
    assert!(
        mae("regressed") < 0.3 * mae("blind"),
        "regressed {} vs blind {}\n{table}",
        mae("regressed"),
        mae("blind")
    );
    // The inspect output names the regression and its fitted β; the ONNX export carries it.
    let text = ok(tns(&["inspect", regressed.to_str().unwrap()]));
    assert!(
        text.contains("regression on x") && text.contains("β ["),
        "{text}"
    );
    assert!(
        ok(tns(&["inspect", regressed.to_str().unwrap(), "--json"])).contains("\"regressors\"")
    );
    let onnx = dir.path().join("r.onnx");
    ok(tns(&[
        "export",
        "onnx",
        regressed.to_str().unwrap(),
        "-o",
        onnx.to_str().unwrap(),
    ]));
    // A regressor must be a known-future input.
    let (_, out) = train("bad", &["--prior-regressors", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("known-future input"),
        "{stderr}"
    );
}

/// 150 days of an hourly daily cycle with a little noise (`t,y`), plus `3·x` for an irregular
/// driver `x` known in advance when `driver` (`t,y,x`); returns the CSV's path.
fn hourly_cycle_csv(dir: &std::path::Path, driver: bool) -> std::path::PathBuf {
    let csv = dir.join(if driver { "driven.csv" } else { "cycle.csv" });
    let mut text = String::from(if driver { "t,y,x\n" } else { "t,y\n" });
    for i in 0..24 * 150 {
        let angle = std::f64::consts::TAU * i as f64 / 24.0;
        let x = (i as f64 * 0.071).sin() * 4.0 + (i as f64 * 0.0173).cos() * 2.0;
        let mut y =
            20.0 + 5.0 * angle.sin() + 2.0 * (2.0 * angle).cos() + 0.3 * (i as f64 * 7.1).sin();
        if driver {
            y += 3.0 * x;
            text.push_str(&format!("{i},{y},{x}\n"));
        } else {
            text.push_str(&format!("{i},{y}\n"));
        }
    }
    std::fs::write(&csv, text).unwrap();
    csv
}

/// `tns train` of a day-ahead Kalman model of `y` (lookback 72, origins every 24 rows) on
/// `csv`, with `extra` options; the model's path and the command's output.
fn train_day_ahead_kalman(
    csv: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (std::path::PathBuf, std::process::Output) {
    let path = dir.join(format!("{name}.tns"));
    let mut args = vec![
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--time-column",
        "t",
        "--targets",
        "y",
        "--model",
        "kalman",
        "--name",
        name,
        "--lookback",
        "72",
        "--horizon",
        "24",
        "--origin-every",
        "24",
        "-o",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = tns(&args);
    (path, out)
}

/// A model's test MAE in `tns eval`'s first table.
fn eval_mae(table: &str, name: &str) -> f64 {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("{table}"));
    line.split('|').nth(5).unwrap().trim().parse().unwrap()
}

/// The generated data of the interval tests: 2,000 rows of the `turn` trajectory.
const TURN_2000: [&str; 6] = [
    "--synth",
    "trajectory",
    "--regime",
    "turn",
    "--rows",
    "2000",
];

#[test]
fn normalized_intervals_follow_the_window_volatility_through_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let synth = TURN_2000;
    let (model, split, int8) = (path("n.tns"), path("s.tns"), path("n-int8.tns"));
    let mut args = vec![
        "train",
        "--model",
        "system-b",
        "--network",
        "mlp:8",
        "--epochs",
        "1",
        "--interval",
        "normalized",
        "--interval-rows",
        "6",
        "-o",
        &model,
    ];
    args.extend(synth);
    ok(tns(&args));
    let inspect = ok(tns(&["inspect", &model]));
    assert!(inspect.contains("window_volatility"), "{inspect}");
    // A calm and a volatile window (the same last row): the interval scales with the
    // mean absolute change of each target over the last 6 rows.
    let window = |wiggle: f64| -> Vec<Vec<f64>> {
        (0..10)
            .map(|i| {
                let w = if i % 2 == 0 { wiggle } else { -wiggle };
                vec![i as f64 * 0.25 + w, 1.0 + w, 5.0, 0.0]
            })
            .collect()
    };
    let width = |model: &str, wiggle: f64| -> (f64, serde_json::Value) {
        let input = path(&format!("w{wiggle}.json"));
        std::fs::write(
            &input,
            serde_json::json!({ "window": window(wiggle) }).to_string(),
        )
        .unwrap();
        let cert: serde_json::Value =
            serde_json::from_str(&ok(tns(&["predict", model, "-i", &input]))).unwrap();
        let iv = &cert["interval"];
        let w = iv["upper"][0][0].as_f64().unwrap() - iv["lower"][0][0].as_f64().unwrap();
        (w, iv.clone())
    };
    let (calm, iv) = width(&model, 0.01);
    let (volatile, _) = width(&model, 1.0);
    assert_eq!(iv["method"], "normalized_split_conformal", "{iv}");
    assert!(iv["scale"][0].as_f64().unwrap() > 0.0, "{iv}");
    assert!(volatile > 5.0 * calm, "calm {calm}, volatile {volatile}");
    // Eval names the method; recalibrating to split conformal gives one width again;
    // INT8 recalibrates with the same method.
    let mut args = vec!["eval", model.as_str()];
    args.extend(synth);
    let table = ok(tns(&args));
    assert!(table.contains("| normalized conformal |"), "{table}");
    let mut args = vec![
        "calibrate",
        model.as_str(),
        "--interval",
        "split",
        "-o",
        &split,
    ];
    args.extend(synth);
    ok(tns(&args));
    let (a, iv) = width(&split, 0.01);
    let (b, _) = width(&split, 1.0);
    assert_eq!(iv["method"], "split_conformal");
    assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{a} {b}");
    let mut args = vec!["quantize", model.as_str(), "--int8", "-o", &int8];
    args.extend(synth);
    ok(tns(&args));
    assert_eq!(width(&int8, 1.0).1["method"], "normalized_split_conformal");
    // Nothing is written over the model, and bad rows are refused.
    let mut args = vec![
        "calibrate",
        model.as_str(),
        "--interval",
        "normalized",
        "--interval-rows",
        "1",
        "-o",
        &split,
    ];
    args.extend(synth);
    let out = tns(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 2"));
}

#[test]
fn quantile_heads_give_cqr_intervals_through_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let synth = TURN_2000;
    let (model, int8, onnx) = (path("q.tns"), path("q-int8.tns"), path("q.onnx"));
    let mut args = vec![
        "train",
        "--model",
        "system-b",
        "--network",
        "mlp:8",
        "--epochs",
        "2",
        "--quantile-heads",
        "-o",
        &model,
    ];
    args.extend(synth);
    ok(tns(&args));
    let input = path("w.json");
    let window: Vec<Vec<f64>> = (0..10)
        .map(|i| vec![i as f64 * 0.25, 1.0, 5.0, 0.0])
        .collect();
    std::fs::write(&input, serde_json::json!({ "window": window }).to_string()).unwrap();
    let certificate = |model: &str| -> serde_json::Value {
        serde_json::from_str(&ok(tns(&["predict", model, "-i", &input]))).unwrap()
    };
    let inspect = ok(tns(&["inspect", &model]));
    assert!(
        inspect.contains("quantile 0.05 and quantile 0.95"),
        "{inspect}"
    );
    let cert = certificate(&model);
    let iv = &cert["interval"];
    assert_eq!(iv["method"], "conformalized_quantile_regression", "{iv}");
    // The certificate carries the quantiles the interval grew from.
    assert_eq!(iv["quantiles"].as_array().unwrap().len(), 2, "{iv}");
    assert!(
        iv["guarantee"].as_str().unwrap().contains("quantile band"),
        "{iv}"
    );
    // The interval holds the forecast, and is not symmetric around it (it grows from the
    // predicted quantiles, not from the point).
    let (mut asymmetric, mut outputs) = (0, 0);
    for (k, row) in cert["prediction"].as_array().unwrap().iter().enumerate() {
        for (j, p) in row.as_array().unwrap().iter().enumerate() {
            let p = p.as_f64().unwrap();
            let (lo, hi) = (
                iv["lower"][k][j].as_f64().unwrap(),
                iv["upper"][k][j].as_f64().unwrap(),
            );
            assert!(lo <= p && p <= hi, "{lo} {p} {hi}");
            asymmetric += usize::from(((p - lo) - (hi - p)).abs() > 1e-9 * (hi - lo));
            outputs += 1;
        }
    }
    assert!(asymmetric > 0, "{outputs} symmetric intervals: {iv}");
    // Eval names the method and replays ACI over it; INT8 and a recalibration keep it;
    // ONNX exports the quantiles.
    let mut args = vec!["eval", model.as_str()];
    args.extend(synth);
    let table = ok(tns(&args));
    assert!(table.contains("| CQR |"), "{table}");
    let mut args = vec!["quantize", model.as_str(), "--int8", "-o", &int8];
    args.extend(synth);
    ok(tns(&args));
    assert_eq!(
        certificate(&int8)["interval"]["method"],
        "conformalized_quantile_regression"
    );
    let recalibrated = path("qn.tns");
    let mut args = vec![
        "calibrate",
        model.as_str(),
        "--interval",
        "normalized",
        "-o",
        &recalibrated,
    ];
    args.extend(synth);
    ok(tns(&args));
    assert_eq!(
        certificate(&recalibrated)["interval"]["method"],
        "normalized_conformalized_quantile_regression"
    );
    ok(tns(&["export", "onnx", &model, "-o", &onnx]));
    let bytes = std::fs::read(&onnx).unwrap();
    let has = |name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
    assert!(has("quantile_lower") && has("quantile_upper"));
    // A kind without a network has no heads to train.
    let kalman = path("k.tns");
    let mut args = vec![
        "train",
        "--model",
        "kalman",
        "--quantile-heads",
        "-o",
        &kalman,
    ];
    args.extend(synth);
    let out = tns(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no network"));
}

#[test]
fn lr_find_writes_its_curve_and_suggests_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, svg) = (dir.path().join("lr.csv"), dir.path().join("lr.svg"));
    let out = ok(tns(&[
        "lr-find",
        "--synth",
        "trajectory",
        "--rows",
        "2000",
        "--model",
        "system-a",
        "--steps",
        "60",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]));
    assert!(out.contains("suggested --lr"), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("lr,loss,smoothed\n") && text.lines().count() > 10,
        "{text}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    // Kinds without a network are refused with the reason.
    let refused = tns(&[
        "lr-find",
        "--synth",
        "trajectory",
        "--rows",
        "2000",
        "--model",
        "kalman",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no network"));
}

#[test]
fn tune_halves_trials_writes_the_best_model_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tune");
    let out_s = out.to_str().unwrap();
    let args = [
        "tune",
        "--synth",
        "trajectory",
        "--regime",
        "turn",
        "--rows",
        "3000",
        "--model",
        "system-b",
        "--epochs",
        "4",
        "--min-epochs",
        "1",
        "--eta",
        "2",
        "--trials",
        "4",
        "--out",
        out_s,
    ];
    let table = ok(tns(&args));
    // Rungs at 1, 2 and 4 epochs; trial 0 (the configuration given) reaches the last one.
    assert!(
        table.contains("| 1 epochs | 2 epochs | 4 epochs |"),
        "{table}"
    );
    assert!(table.contains("| best |"), "{table}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tune.json")).unwrap()).unwrap();
    let trials = state["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    assert_eq!(trials[0]["rungs"].as_array().unwrap().len(), 3);
    let reached: Vec<usize> = trials
        .iter()
        .map(|t| t["rungs"].as_array().unwrap().len())
        .collect();
    // Rung 1 keeps the best half of 4, rung 2 the best half of those; trial 0 goes on
    // besides when it is not among them. At least one trial stops at rung 1.
    let finished = reached.iter().filter(|&&r| r == 3).count();
    assert!(
        (1..=3).contains(&finished) && reached.contains(&1),
        "{reached:?}"
    );
    assert!(out.join("tune.svg").is_file() && out.join("tune.md").is_file());
    ok(tns(&["inspect", out.join("best.tns").to_str().unwrap()]));
    // Started again, it trains nothing and reports the same table.
    let again = tns(&args);
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming"));
    assert_eq!(ok(again), table);
    // Another search in the same folder is refused.
    let mut other = args.to_vec();
    other[10] = "5";
    let refused = tns(&other);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another search"));
}

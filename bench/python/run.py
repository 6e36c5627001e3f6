#!/usr/bin/env python3
"""Per-call latency of `Model.predict(window)` from Python against onnxruntime's Python API
on the exported graph of the same model (one thread each), and the throughput of
`predict_frame`. Follows PRODUCT.md §8: 10^4 warm-up calls, 10^5 timed calls, inputs drawn
from 10^4 distinct windows, percentiles with a bootstrap CI of P99.9, the timer's overhead, the
environment; the two runtimes alternate in blocks so that drift hits both.

    bash bench/python/run.sh          # builds the wheel and the models, then runs this
Writes results/python/latency.{json,md}.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

import tns

ROOT = Path(__file__).resolve().parents[2]


def percentiles(ns):
    ns = np.asarray(ns, dtype=np.float64) / 1e3
    q = lambda a, p: float(np.percentile(a, p))
    rng = np.random.default_rng(0)
    boot = [q(rng.choice(ns, len(ns)), 99.9) for _ in range(200)]
    return {
        "p50": q(ns, 50),
        "p90": q(ns, 90),
        "p99": q(ns, 99),
        "p999": q(ns, 99.9),
        "p999_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "max": float(ns.max()),
        "calls": len(ns),
    }


def timer_overhead():
    clock = time.perf_counter_ns
    samples = []
    for _ in range(100_000):
        a = clock()
        samples.append(clock() - a)
    return float(np.median(samples)) / 1e3


def latency(model_path, calls, warmup, distinct, blocks):
    model = tns.load(model_path)
    onnx_path = Path(str(model_path) + ".onnx")
    model.export_onnx(onnx_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    windows = [np.ascontiguousarray(w) for w in _data_windows(model, distinct, rng)]
    onnx_inputs = [w[None].astype(np.float32) for w in windows]
    name = session.get_inputs()[0].name
    clock = time.perf_counter_ns

    def tns_call(i):
        a = clock()
        model.predict(windows[i]).prediction
        return clock() - a

    def ort_call(i):
        a = clock()
        session.run(None, {name: onnx_inputs[i]})
        return clock() - a

    for i in range(warmup):
        tns_call(i % distinct)
        ort_call(i % distinct)
    times = {"tns": [], "onnxruntime": []}
    per_block = calls // blocks
    for b in range(blocks):
        for label, call in (("tns", tns_call), ("onnxruntime", ort_call)):
            out = times[label]
            for i in range(per_block):
                out.append(call((b * per_block + i) % distinct))
    # Equal answers: the timed paths compute the same forecast.
    check = session.run(None, {name: onnx_inputs[0]})[0]
    np.testing.assert_allclose(check[0], model.predict(windows[0]).prediction, rtol=1e-4, atol=1e-4)
    return {k: percentiles(v) for k, v in times.items()}


def _data_windows(model, n, rng):
    """n windows of the generated trajectory data the models were trained on."""
    data = pd.read_csv(ROOT / "target" / "python-bench" / "turn.csv")[model.features].to_numpy()
    starts = rng.choice(len(data) - model.lookback, size=n, replace=False)
    return [data[s : s + model.lookback] for s in starts]


def frame_throughput(model_path, rows_per_series, series):
    model = tns.load(model_path)
    t = pd.date_range("2020-01-01", periods=rows_per_series, freq="h")
    rng = np.random.default_rng(2)
    frames = []
    for k in range(series):
        load = np.sin(2 * np.pi * t.hour / 24) + 0.1 * rng.normal(size=len(t))
        frames.append(pd.DataFrame({"ds": t, "unique_id": f"S{k}", "load": load, "y": 10 + 3 * load + rng.normal(size=len(t))}))
    df = pd.concat(frames, ignore_index=True)
    model.predict_frame(df.head(1000))
    best = None
    for _ in range(3):
        start = time.perf_counter()
        out = model.predict_frame(df)
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    forecasts = len(out) // (model.horizon * len(model.targets))
    return {"rows": len(df), "series": series, "forecasts": forecasts, "seconds": best,
            "rows_per_s": len(df) / best, "forecasts_per_s": forecasts / best}


def environment():
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {"cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": ort.__version__, "tns": tns.__version__, "git": sha, "threads": 1}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=10_000)
    p.add_argument("--out", default=str(ROOT / "results" / "python"))
    args = p.parse_args()
    models = ROOT / "target" / "python-bench"
    result = {"environment": environment(), "timer_overhead_us": timer_overhead(), "calls": args.calls, "latency": {}}
    for label, file in [("System A (gru:32), [1, 10, 4]", "a.tns"), ("System B (gru:32), [1, 10, 4]", "b.tns"),
                        ("System B (mlp:64,64), [1, 10, 4]", "b-mlp.tns")]:
        print(f"latency: {label}", file=sys.stderr)
        result["latency"][label] = latency(models / file, args.calls, args.warmup, 10_000, 10)
    print("predict_frame throughput", file=sys.stderr)
    result["predict_frame"] = frame_throughput(models / "pooled.tns", 50_000, 4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Per call from Python, one thread, {args.calls:,} timed calls after {args.warmup:,} warm-up calls over 10,000 distinct windows; "
        f"TNS: `m.predict(window).prediction`; onnxruntime {result['environment']['onnxruntime']}: `session.run` on the graph `m.export_onnx` wrote "
        f"(float32 input prepared beforehand). CPU: {result['environment']['cpu']}; Python {result['environment']['python']}; "
        f"timer overhead {result['timer_overhead_us']:.3f} µs (included).",
        "",
        "| model | runtime | P50 µs | P90 µs | P99 µs | P99.9 µs (95% CI) | max µs | P50 ratio | P99.9 ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in result["latency"].items():
        t, o = runs["tns"], runs["onnxruntime"]
        for name, r in (("tns", t), ("onnxruntime", o)):
            ratio = (f"**{o['p50'] / t['p50']:.1f}×**", f"**{o['p999'] / t['p999']:.1f}×**") if name == "tns" else ("", "")
            lines.append(
                f"| {label} | {name} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} ({r['p999_ci'][0]:.2f}–{r['p999_ci'][1]:.2f}) | {r['max']:.1f} | {ratio[0]} | {ratio[1]} |"
            )
    f = result["predict_frame"]
    lines += [
        "",
        f"`predict_frame` (pooled System B over mlp:16, lookback 24, horizon 6, a covariate and hour-of-day features): "
        f"{f['rows']:,} rows of {f['series']} series → {f['forecasts']:,} forecasts in {f['seconds']:.2f} s "
        f"(best of 3): **{f['rows_per_s']:,.0f} rows/s, {f['forecasts_per_s']:,.0f} forecasts/s**, the series scored in parallel on "
        f"{os.cpu_count()} cores.",
    ]
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

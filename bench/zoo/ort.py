"""ONNX Runtime beside the engine (issue 15's latency table; not in CI).

Reads the `zoo.json` that `tns bench-zoo` wrote, times ONNX Runtime (1 thread, sequential,
all graph optimizations) on each model's exported graph with the same windows, one window per
call, the same number of warm-up and timed calls, and writes results/zoo/latency.{json,md}
with the engine's and ONNX Runtime's P50 and P99.9 and their ratios.

    python bench/zoo/ort.py target/zoo/zoo.json results/zoo [--calls N] [--warmup N]
"""

import argparse
import json
import pathlib
import time

import numpy as np
import onnxruntime as ort


def percentile(sorted_ns, p):
    k = min(max(int(np.ceil(p * len(sorted_ns))), 1), len(sorted_ns)) - 1
    return float(sorted_ns[k])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("zoo")
    ap.add_argument("out")
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=10_000)
    ap.add_argument("--name", default="latency", help="stem of the written files")
    ap.add_argument("--command", default="bash bench/zoo/run.sh",
                    help="the command the table says produced it")
    args = ap.parse_args()
    runs = json.loads(pathlib.Path(args.zoo).read_text())
    rows = []
    for r in runs:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(r["onnx"], opts, providers=["CPUExecutionProvider"])
        windows = np.fromfile(r["windows"], dtype=np.float32).reshape(
            -1, 1, r["lookback"], r["features"])
        name = session.get_inputs()[0].name
        n = len(windows)
        for i in range(args.warmup):
            session.run(None, {name: windows[i % n]})
        lat = np.empty(args.calls)
        for i in range(args.calls):
            w = windows[i % n]
            t0 = time.perf_counter_ns()
            session.run(None, {name: w})
            lat[i] = time.perf_counter_ns() - t0
        lat.sort()
        ort_ns = {"p50": percentile(lat, 0.5), "p999": percentile(lat, 0.999)}
        e = r["engine_ns"]
        row = {**{k: r[k] for k in ("network", "shape", "lookback", "features", "horizon",
                                    "parameters", "macs")},
               "engine_ns": {"p50": e["p50"], "p999": e["p999"]}, "onnxruntime_ns": ort_ns,
               "ratio_p50": ort_ns["p50"] / e["p50"], "ratio_p999": ort_ns["p999"] / e["p999"],
               "train_windows_per_second": r.get("train_windows_per_second")}
        rows.append(row)
        print(f"{r['shape']} {r['network']}: engine {e['p50'] / 1e3:.2f} µs, "
              f"ORT {ort_ns['p50'] / 1e3:.2f} µs (×{row['ratio_p50']:.1f})", flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"onnxruntime": ort.__version__, "calls": args.calls, "warmup": args.warmup,
         "runs": rows}, indent=2) + "\n")
    md = [
        f"Produced by `{args.command}` (System A over each network, single-sample calls, "
        f"{args.calls} timed after {args.warmup} warm-up, the same windows for both; ONNX Runtime "
        f"{ort.__version__} on 1 thread running the graph `tns export onnx` writes). Training: "
        f"windows per second of one epoch on Candle, every core, validation included.",
        "",
        "| shape | network | parameters | MACs | engine P50 µs | ORT P50 µs | P50 ratio | engine P99.9 µs | ORT P99.9 µs | P99.9 ratio | training windows/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e, o = r["engine_ns"], r["onnxruntime_ns"]
        shape = f"{r['shape']} [{r['lookback']}, {r['features']}] → {r['horizon']}"
        md.append(
            f"| {shape} | {r['network']} | {r['parameters']} | {r['macs']} | {e['p50'] / 1e3:.2f} | "
            f"{o['p50'] / 1e3:.2f} | {r['ratio_p50']:.1f}× | {e['p999'] / 1e3:.2f} | "
            f"{o['p999'] / 1e3:.2f} | {r['ratio_p999']:.1f}× | "
            f"{r['train_windows_per_second'] or 0:.0f} |")
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

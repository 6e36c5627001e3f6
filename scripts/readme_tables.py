#!/usr/bin/env python3
"""Regenerates the result tables of README.md and docs/*.md from the results files (PRODUCT.md §8: no
hand-typed numbers). Each table sits between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`; a block whose results file is missing is left as it is.

    python3 scripts/readme_tables.py            # rewrite README.md and docs/*.md in place
    python3 scripts/readme_tables.py --check    # exit 1 if any of them is out of date

Blocks:
  demo-mixed, demo-turn, demo-cv  results/demo-<regime>/report.md   (tns demo --regime R --out results/demo-R)
  bench                           results/bench/bench.{json,md}     (tns bench)
  peers                           results/bench/peers.json          (bash bench/peers/run.sh)
  int8                            results/bench/bench.json          (tns bench; its `int8` sections)
  onnx                            results/onnx/parity.json          (TNS_ONNX_PARITY_OUT=... cargo test -p tns-onnx)
  serve                           results/serve/load.{json,md}      (bash bench/serve/run.sh)
  serve-pinned                    results/serve/pinned-*.{json,md}  (bash bench/serve/pinned.sh)
  b-over-mlp                      results/demo-<regime>/system-b-mlp-vs-mlp.md (tns eval … --reference mlp)
  refactor-ab                     results/refactor-ab/summary.md    (bash bench/ab/run.sh OLD NEW)
  realdata                        results/realdata/epf.md           (TNS_NHITS=1 bash bench/realdata/run.sh)
  pedestrian                      results/realdata/pedestrian{,-calendar}.md (bash bench/realdata/pedestrian.sh)
  train                           results/train/speed.md            (python bench/train/run.py, a Python with torch)
  tune-turn                       results/tune-turn/tune.md         (tns tune … --out target/tune-turn, copied)
  train-memory                    results/train/memory.md           (bash bench/train/memory.sh)
  zoo-latency                     results/zoo/latency.md            (bash bench/zoo/run.sh)
  zoo-turn, zoo-mixed             results/zoo/accuracy-<regime>.md  (bash bench/zoo/accuracy.sh)
  zoo-nhits                       results/zoo/nhits-fr.md           (bash bench/zoo/nhits.sh)
  zoo-independence                results/zoo/independence-*.md     (bash bench/zoo/independence.sh)
  zoo-latency-independence-mamba  results/zoo/latency-independence-mamba.md (bash bench/zoo/run.sh … --name latency-independence-mamba)
  zoo-latency-ii                  results/zoo/latency-zoo2.md       (bash bench/zoo/run.sh … --name latency-zoo2)
  zoo-stream                      results/zoo/streaming.md          (tns bench-stream)
  tail                            results/tail/tail.md              (tns bench-tail, after tns bench)
  python                          results/python/latency.md         (bash bench/python/run.sh)
  int8-widths                     results/int8/widths.md            (bash bench/int8/run.sh)
  wasm                            results/wasm/wasm.md              (bash web/build.sh && node web/test/run.mjs)
  wasm-no-simd                    results/wasm/no-simd/wasm.md      (TNS_WASM_SIMD=0 bash web/build.sh && node web/test/run.mjs --no-browser --out results/wasm/no-simd)
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    full = os.path.join(ROOT, path)
    return open(full).read() if os.path.exists(full) else None


def whole(path):
    """A results file as it is, or None when it is missing."""
    report = read(path)
    return None if report is None else report.strip() + "\n"


def demo(regime):
    report = read(f"results/demo-{regime}/report.md")
    if report is None:
        return None
    cmd = "cargo run --release -- demo" + ("" if regime == "mixed" else f" --regime {regime}")
    return f"Produced by `{cmd} --out results/demo-{regime}` (file `results/demo-{regime}/report.md`):\n\n{report.strip()}\n"


def b_over_mlp():
    parts = []
    for regime in ["turn", "mixed"]:
        stem = f"results/demo-{regime}/system-b-mlp-vs-mlp"
        table = read(f"{stem}.md")
        if table is None:
            return None
        cmd = (
            f"tns eval --synth trajectory --regime {regime} --reference mlp "
            f"results/demo-{regime}/models/{{system-b-mlp,mlp,system-b}}.tns --report {stem}"
        )
        parts.append(
            f"**{regime}**, produced after the demo above by `{cmd}` (file `{stem}.md`):\n\n{table.strip()}\n"
        )
    return "\n".join(parts)


def produced(path, command, files):
    """A results file verbatim, under the line that names the command and files behind it."""
    body = read(path)
    if body is None:
        return None
    return f"Produced by `{command}` ({files}):\n\n" + body.strip() + "\n"


def refactor_ab():
    return produced(
        "results/refactor-ab/summary.md",
        "bash bench/ab/run.sh OLD_TNS NEW_TNS 5",
        "file `results/refactor-ab/summary.md`",
    )


def realdata():
    return produced(
        "results/realdata/epf.md",
        "TNS_NHITS=1 bash bench/realdata/run.sh",
        "files `results/realdata/*.json`, `epf.md`",
    )


def train():
    return produced(
        "results/train/speed.md",
        "bench/peers/.venv/bin/python bench/train/run.py",
        "files `results/train/speed.{json,md}`",
    )


def zoo_independence():
    reports = [read(f"results/zoo/independence-{task}.md")
               for task in ["turn", "mixed", "both-h1", "fr-h24", "be-h24"]]
    if any(r is None for r in reports):
        return None
    return "\n".join(r.strip() + "\n" for r in reports)


def tail():
    return produced(
        "results/tail/tail.md",
        "tns bench-tail",
        "files `results/tail/tail.{json,md}`, after `tns bench` wrote the models it times",
    )


def python_binding():
    return produced(
        "results/python/latency.md",
        "bash bench/python/run.sh",
        "files `results/python/latency.{json,md}`",
    )


def int8_widths():
    return produced(
        "results/int8/widths.md",
        "bash bench/int8/run.sh",
        "files `results/int8/widths.{json,md}`",
    )


def wasm():
    return produced(
        "results/wasm/wasm.md",
        "bash web/build.sh && node web/test/run.mjs",
        "files `results/wasm/wasm.{json,md}`, `page.png`, `page-hourly.png`",
    )


def wasm_no_simd():
    return produced(
        "results/wasm/no-simd/wasm.md",
        "TNS_WASM_SIMD=0 bash web/build.sh && node web/test/run.mjs --no-browser --out results/wasm/no-simd",
        "files `results/wasm/no-simd/wasm.{json,md}`",
    )


def zoo_accuracy(regime):
    report = read(f"results/zoo/accuracy-{regime}.md")
    return None if report is None else report.strip() + "\n"


def tune_turn():
    return produced(
        "results/tune-turn/tune.md",
        "tns tune --synth trajectory --regime turn --model system-b --epochs 27 --trials 9 --out target/tune-turn",
        "`tune.md`, `tune.json`, `tune.svg` copied to `results/tune-turn/`",
    )


def pedestrian():
    every = read("results/realdata/pedestrian.md")
    calendar = read("results/realdata/pedestrian-calendar.md")
    if every is None or calendar is None:
        return None
    return (
        "Produced by `bash bench/realdata/pedestrian.sh` (files "
        "`results/realdata/pedestrian{,-calendar}.{md,json}`). Lookback 48, no calendar:\n\n"
        f"{every.strip()}\n\nThe MLP with a week of history and hour and day-of-week "
        f"features of the predicted hours (`--lookback 168 --calendar hour,dow`), same folds:\n\n"
        f"{calendar.strip()}\n"
    )


def bench():
    raw = read("results/bench/bench.json")
    table = read("results/bench/bench.md")
    if raw is None or table is None:
        return None
    b = json.loads(raw)
    lines = ["Produced by `cargo run --release -- bench` (files `results/bench/bench.{json,md}`).", ""]
    lines.append("Targets of issue 3 against the measurements:")
    lines.append("")
    lines.append("| target | goal | measured | met |")
    lines.append("|---|---|---|---|")
    for shape in b["shapes"]:
        if shape["shape"] != "compact":
            continue
        models = {m["kind"]: m for m in shape["models"]}
        a = models["system-a"]["latency_ns"]
        lines.append(f"| System A compact P50 | ≤ 2 µs | {a['p50'] / 1e3:.2f} µs | {'yes' if a['p50'] <= 2000 else 'no'} |")
        lines.append(f"| System A compact P99.9 | ≤ 10 µs | {a['p999'] / 1e3:.2f} µs [{a['p999_ci'][0] / 1e3:.2f}, {a['p999_ci'][1] / 1e3:.2f}] | {'yes' if a['p999'] <= 10000 else 'no'} |")
        over = shape["b_minus_a_ns"]
        lines.append(f"| System B − System A (P50) | ≤ 1 µs | {over['p50'] / 1e3:+.2f} µs (mean {over['mean'] / 1e3:+.2f}, P99.9 {over['p999'] / 1e3:+.2f}) | {'yes' if over['p50'] <= 1000 else 'no'} |")
        one = [t for t in shape["throughput"] if t["model"] == "system-a" and t["threads"] == 1]
        best = max(one, key=lambda t: t["peak_share"])
        lines.append(f"| System A batch throughput, 1 core | ≥ 50% of FMA peak | {100 * best['peak_share']:.1f}% at batch {best['batch']} ({best['gflops']:.1f} GFLOP/s) | {'yes' if best['peak_share'] >= 0.5 else 'no'} |")
        two = {t["batch"]: t for t in shape["throughput"] if t["model"] == "system-a" and t["threads"] == 2}
        if best["batch"] in two:
            lines.append(f"| scaling to 2 cores (batch {best['batch']}) | near-linear | {two[best['batch']]['windows_per_second'] / best['windows_per_second']:.2f}× | {'yes' if two[best['batch']]['windows_per_second'] / best['windows_per_second'] >= 1.8 else 'no'} |")
        rss = models["system-b"]["peak_rss_kib"]
        if rss is not None:
            # The goal is in MB (10^6 bytes); VmHWM is in KiB.
            lines.append(f"| peak RSS, process serving one model | ≤ 12 MB | {rss / 1024:.1f} MiB ({rss * 1024 / 1e6:.1f} MB) | {'yes' if rss * 1024 <= 12e6 else 'no'} |")
    lines.append("")
    lines.append("Targets of issue 19 (engine speed) that this file measures:")
    lines.append("")
    lines.append("| target | goal | measured | met |")
    lines.append("|---|---|---|---|")
    for shape in b["shapes"]:
        models = {m["kind"]: m for m in shape["models"]}
        over = shape["b_minus_a_ns"]
        goal = 200 if shape["shape"] == "compact" else 1000
        stages = over.get("stages")
        by_stage = ""
        if stages is not None:
            added = stages[0] + stages[2]
            by_stage = (
                f"; by stage means prior {stages[0] / 1e3:+.2f}, gate+cert {stages[2] / 1e3:+.2f}, "
                f"network {stages[1] / 1e3:+.2f} (the same GRU: run-to-run spread)"
            )
        lines.append(
            f"| System B − System A, {shape['shape']} (P50) | ≤ {goal / 1e3:g} µs | {over['p50'] / 1e3:+.2f} µs{by_stage} | "
            f"{'yes' if over['p50'] <= goal else 'no'} |"
        )
        if shape["shape"] == "compact":
            a = models["system-a"]["latency_ns"]
            lines.append(f"| System A compact P50 | ≤ 1.2 µs | {a['p50'] / 1e3:.2f} µs | {'yes' if a['p50'] <= 1200 else 'no'} |")
            lines.append(f"| System A compact P99.9 | ≤ 3 µs | {a['p999'] / 1e3:.2f} µs | {'yes' if a['p999'] <= 3000 else 'no'} |")
        one = [t for t in shape["throughput"] if t["model"] == "system-a" and t["threads"] == 1]
        best = max(one, key=lambda t: t["peak_share"])
        lines.append(f"| System A batch, 1 core, {shape['shape']} | ≥ 60% of FMA peak | {100 * best['peak_share']:.1f}% at batch {best['batch']} | {'yes' if best['peak_share'] >= 0.6 else 'no'} |")
    lines.append("")
    lines.append(table.strip())
    return "\n".join(lines) + "\n"


def peers():
    raw = read("results/bench/peers.json")
    ours = read("results/bench/bench.json")
    if raw is None or ours is None:
        return None
    p, b = json.loads(raw), json.loads(ours)
    env = p["environment"]
    lines = [
        "Produced by `bash bench/peers/run.sh` after `tns bench` (file `results/bench/peers.json`): the same GRU with the same weights, "
        f"outputs checked against the engine before timing; onnxruntime {env['onnxruntime']}, torch {env['torch']}, 1 thread, "
        f"Python timer overhead {env['timer_overhead_ns']:.0f} ns. TNS times its whole System A path (checks, normalization, network, "
        "base, interval); the peers time the network alone.",
        "",
        "| shape | engine | P50 µs | P99.9 µs | TNS speed-up at P50 | at P99.9 | timed calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in p["shapes"]:
        tns = next(s for s in b["shapes"] if s["shape"] == shape["shape"])
        a = next(m for m in tns["models"] if m["kind"] == "system-a")["latency_ns"]
        lines.append(f"| {shape['shape']} | TNS engine (System A) | {a['p50'] / 1e3:.2f} | {a['p999'] / 1e3:.2f} | 1× | 1× | {b['protocol']['calls']} |")
        for name, label in [("onnxruntime", "ONNX Runtime"), ("torchscript", "TorchScript"), ("torch_eager", "PyTorch eager")]:
            l = shape["latency_ns"][name]
            lines.append(
                f"| {shape['shape']} | {label} | {l['p50'] / 1e3:.2f} | {l['p999'] / 1e3:.2f} | {l['p50'] / a['p50']:.1f}× | {l['p999'] / a['p999']:.1f}× | {shape['calls'][name]} |"
            )
    return "\n".join(lines) + "\n"


def int8():
    raw = read("results/bench/bench.json")
    if raw is None:
        return None
    b = json.loads(raw)
    lines = [
        "Produced by `cargo run --release -- bench` (file `results/bench/bench.json`, sections `int8`): the benchmark's "
        "System A and B, quantized with the same code as `tns quantize`, their conformal radii recalibrated on the "
        "calibration split, timed with the same protocol. ΔMSE is a paired block bootstrap 95% CI on the test split.",
        "",
        "| shape | model | weights f32 → INT8 (bytes) | file (bytes) | P50 INT8/f32 | network stage INT8/f32 | test MSE f32 → INT8 | ΔMSE 95% CI | coverage f32 → INT8 (recalibrated), nominal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in b["shapes"]:
        for q in shape.get("int8", []):
            a = q["accuracy"]
            pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"
            lines.append(
                f"| {shape['shape']} | {q['kind']} | {a['weight_bytes_f32']} → {a['weight_bytes_int8']} ({a['weight_ratio']:.2f}× smaller) "
                f"| {q['file_bytes_f32']} → {q['file_bytes_int8']} ({q['file_bytes_f32'] / q['file_bytes_int8']:.2f}×) "
                f"| {q['latency_p50_ratio']:.2f} | {q['network_ns_ratio']:.2f} "
                f"| {a['test_mse_f32']:.4e} → {a['test_mse_int8']:.4e} ({100 * a['mse_change']:+.2f}%) "
                f"| [{a['mse_diff']['low']:.2e}, {a['mse_diff']['high']:.2e}] "
                f"| {pct(a['coverage_f32'])} → {pct(a['coverage_int8'])}, {pct(a['nominal_coverage'])} |"
            )
    return "\n".join(lines) + "\n"


def onnx():
    raw = read("results/onnx/parity.json")
    if raw is None:
        return None
    r = json.loads(raw)
    lines = [
        "Produced by `TNS_ONNX_PARITY_OUT=results/onnx/parity.json cargo test --release -p tns-onnx` with onnxruntime "
        f"{r['onnxruntime']} importable (file `results/onnx/parity.json`); CI runs the same test. Worst relative error "
        f"over all windows, `|ort − engine| / max(|engine|, residual scale)`; tolerance {r['tolerance']:.0e}.",
        "",
        "| model | shape | windows | outputs | worst error: forecast | base | correction | gate d² | interval | gate rejections | undecidable | ONNX checker |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"]:
        w = c["worst_relative_error"]
        f = lambda k: f"{w[k]:.1e}" if k in w else "–"
        interval = max((w[k] for k in ("lower", "upper") if k in w), default=None)
        lines.append(
            f"| {c['kind']} | {c['shape'].lower()} | {c['windows']} | {len(c['outputs'])} | {f('forecast')} | {f('base')} | {f('correction')} "
            f"| {f('gate_statistic')} | {'–' if interval is None else f'{interval:.1e}'} | {'–' if c['gate_fallbacks'] is None else c['gate_fallbacks']} "
            f"| {c['undecidable_windows']} | {c['onnx_checker']} |"
        )
    return "\n".join(lines) + "\n"


def serve():
    raw = read("results/serve/load.json")
    table = read("results/serve/load.md")
    if raw is None or table is None:
        return None
    r = json.loads(raw)
    at_5000 = [x for x in r["rates"] if x["target_rate"] == 5000]
    reload_run = r["reload_under_load"]
    rss = r["server_peak_rss_kib"] / 1024
    lines = ["Produced by `bash bench/serve/run.sh` (files `results/serve/load.{json,md}`).", ""]
    lines.append("| target | goal | measured | met |")
    lines.append("|---|---|---|---|")
    if at_5000:
        x = at_5000[0]
        met = x["p99_ms"] <= 1.0 and x["failed"] == 0 and x["achieved_rate"] >= 0.95 * 5000
        lines.append(f"| p99 at 5,000 req/s open loop, zero errors | ≤ 1 ms, 0 errors | p99 {x['p99_ms']:.3f} ms, {x['failed']} failed of {x['requests']} | {'yes' if met else 'no'} |")
    met = reload_run["run"]["failed"] == 0 and reload_run["reloads_ok"] > 0
    lines.append(f"| failed requests across reloads under load | 0 | {reload_run['run']['failed']} failed of {reload_run['run']['requests']}, {reload_run['reloads_ok']} reloads | {'yes' if met else 'no'} |")
    lines.append(f"| server peak RSS, one model | ≤ 20 MB | {rss:.1f} MiB | {'yes' if rss * 1.048576 <= 20 else 'no'} |")
    lines.append("")
    lines.append(table.strip())
    return "\n".join(lines) + "\n"


def serve_pinned():
    runs = {name: read(f"results/serve/pinned-{name}.json") for name in ("off", "batched")}
    tables = {name: read(f"results/serve/pinned-{name}.md") for name in ("off", "batched")}
    if any(v is None for v in list(runs.values()) + list(tables.values())):
        return None
    off, batched = (json.loads(runs[n]) for n in ("off", "batched"))
    lines = [
        "Produced by `bash bench/serve/pinned.sh` (files `results/serve/pinned-{off,batched}.{json,md}`):",
        f"{off['environment']['pinning']}.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    at = [x for x in off["rates"] if x["target_rate"] == 10000]
    if at:
        x = at[0]
        met = x["p99_ms"] <= 1.0 and x["failed"] == 0 and x["achieved_rate"] >= 0.95 * 10000
        lines.append(f"| p99 at 10,000 req/s, batching off | ≤ 1 ms, 0 failed | p99 {x['p99_ms']:.3f} ms, {x['failed']} failed of {x['requests']} | {'yes' if met else 'no'} |")
    best = batched.get("max_sustained_2ms")
    rate = best["rate"] if best else None
    met = rate is not None and rate >= 25000
    lines.append(f"| highest rate at p99 ≤ 2 ms, 0 failed, with micro-batching ({batched['environment']['micro_batch_us']} µs) | ≥ 25,000 req/s | {rate if rate else 'none'} req/s | {'yes' if met else 'no'} |")
    best_off = off.get("max_sustained_2ms")
    lines.append(f"| the same without micro-batching | – | {best_off['rate'] if best_off else 'none'} req/s | – |")
    lines += ["", "Batching off:", "", tables["off"].strip(), "", "Micro-batching on:", "", tables["batched"].strip()]
    return "\n".join(lines) + "\n"


BLOCKS = {
    "int8": int8,
    "onnx": onnx,
    "serve": serve,
    "serve-pinned": serve_pinned,
    "demo-mixed": lambda: demo("mixed"),
    "demo-turn": lambda: demo("turn"),
    "demo-cv": lambda: demo("cv"),
    "bench": bench,
    "peers": peers,
    "b-over-mlp": b_over_mlp,
    "refactor-ab": refactor_ab,
    "realdata": realdata,
    "pedestrian": pedestrian,
    "train": train,
    "tune-turn": tune_turn,
    "train-memory": lambda: whole("results/train/memory.md"),
    "zoo-latency": lambda: whole("results/zoo/latency.md"),
    "zoo-turn": lambda: zoo_accuracy("turn"),
    "zoo-mixed": lambda: zoo_accuracy("mixed"),
    "zoo-nhits": lambda: whole("results/zoo/nhits-fr.md"),
    "zoo-independence": zoo_independence,
    "zoo-latency-independence-mamba": lambda: whole("results/zoo/latency-independence-mamba.md"),
    "zoo-latency-ii": lambda: whole("results/zoo/latency-zoo2.md"),
    "zoo-stream": lambda: whole("results/zoo/streaming.md"),
    "tail": tail,
    "python": python_binding,
    "wasm": wasm,
    "int8-widths": int8_widths,
    "wasm-no-simd": wasm_no_simd,
}


def main():
    docs = os.path.join(ROOT, "docs")
    files = ["README.md"] + sorted(
        os.path.join("docs", f) for f in os.listdir(docs) if f.endswith(".md")
    )
    stale = []
    for rel in files:
        path = os.path.join(ROOT, rel)
        text = open(path).read()
        new = text
        for name, make in BLOCKS.items():
            pattern = re.compile(rf"(<!-- results:{name} -->\n)(.*?)(<!-- /results:{name} -->)", re.S)
            if not pattern.search(new):
                continue
            body = make()
            if body is not None:
                new = pattern.sub(lambda m: m.group(1) + body + m.group(3), new)
        if new == text:
            continue
        if "--check" in sys.argv:
            stale.append(rel)
        else:
            open(path + ".tmp", "w").write(new)
            os.replace(path + ".tmp", path)
            print(f"{rel} updated")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python3 scripts/readme_tables.py")
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerates the result tables of README.md from the results files (PRODUCT.md §8: no
hand-typed numbers). Each table sits between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`; a block whose results file is missing is left as it is.

    python3 scripts/readme_tables.py            # rewrite README.md in place
    python3 scripts/readme_tables.py --check    # exit 1 if README.md is out of date

Blocks:
  demo-mixed, demo-turn, demo-cv  results/demo-<regime>/report.md   (tns demo --regime R --out results/demo-R)
  bench                           results/bench/bench.{json,md}     (tns bench)
  peers                           results/bench/peers.json          (bash bench/peers/run.sh)
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    full = os.path.join(ROOT, path)
    return open(full).read() if os.path.exists(full) else None


def demo(regime):
    report = read(f"results/demo-{regime}/report.md")
    if report is None:
        return None
    cmd = "cargo run --release -- demo" + ("" if regime == "mixed" else f" --regime {regime}")
    return f"Produced by `{cmd} --out results/demo-{regime}` (file `results/demo-{regime}/report.md`):\n\n{report.strip()}\n"


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
            lines.append(f"| peak RSS, process serving one model | ≤ 12 MB | {rss / 1024:.1f} MiB | {'yes' if rss <= 12 * 1024 else 'no'} |")
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


BLOCKS = {
    "demo-mixed": lambda: demo("mixed"),
    "demo-turn": lambda: demo("turn"),
    "demo-cv": lambda: demo("cv"),
    "bench": bench,
    "peers": peers,
}


def main():
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    new = text
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(.*?)(<!-- /results:{name} -->)", re.S)
        if not pattern.search(new):
            continue
        body = make()
        if body is not None:
            new = pattern.sub(lambda m: m.group(1) + body + m.group(3), new)
    if "--check" in sys.argv:
        if new != text:
            print("README.md is out of date: run python3 scripts/readme_tables.py")
            sys.exit(1)
        return
    if new != text:
        open(path + ".tmp", "w").write(new)
        os.replace(path + ".tmp", path)
        print("README.md updated")


if __name__ == "__main__":
    main()

"""Summarizes an A/B run of bench/ab/run.sh: per model, the single-sample P50 and P99.9 of
every run of each binary, their medians, and the median difference B − A; then the batch
throughput of each binary (medians). Writes DIR/summary.md and prints it."""

import json
import pathlib
import statistics
import sys

MODELS = ["persistence", "kalman", "system-a", "system-b"]


def runs(folder: pathlib.Path, side: str) -> list[dict]:
    files = sorted(folder.glob(f"{side}-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in files]


def latency(run: dict, model: str, key: str) -> float:
    shape = run["shapes"][0]
    entry = next(m for m in shape["models"] if m["kind"] == model)
    return entry["latency_ns"][key] / 1e3


def rss(run: dict, model: str) -> float:
    shape = run["shapes"][0]
    entry = next(m for m in shape["models"] if m["kind"] == model)
    return entry["peak_rss_kib"] / 1024


def throughput(run: dict, key: tuple) -> dict:
    rows = run["shapes"][0]["throughput"]
    return next(r for r in rows if (r["model"], r["batch"], r["threads"]) == key)


def main() -> None:
    folder = pathlib.Path(sys.argv[1])
    a, b = runs(folder, "a"), runs(folder, "b")
    sha = lambda rs: rs[0]["environment"]["git_sha"] if rs else "?"
    lines = [
        f"A = git {sha(a)}, B = git {sha(b)}; {len(a)} + {len(b)} alternating runs of "
        "`tns bench --shape compact` on one machine (µs, single-sample, 10⁵ timed calls each).",
        "",
        "| model | A P50 runs | B P50 runs | A P50 median | B P50 median | B − A (P50 medians) | A P99.9 median | B P99.9 median | peak RSS MiB A → B (medians) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        pa = [latency(r, model, "p50") for r in a]
        pb = [latency(r, model, "p50") for r in b]
        ta = [latency(r, model, "p999") for r in a]
        tb = [latency(r, model, "p999") for r in b]
        ra = [rss(r, model) for r in a]
        rb = [rss(r, model) for r in b]
        fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)
        lines.append(
            f"| {model} | {fmt(pa)} | {fmt(pb)} | {statistics.median(pa):.2f} | "
            f"{statistics.median(pb):.2f} | {statistics.median(pb) - statistics.median(pa):+.2f} | "
            f"{statistics.median(ta):.2f} | {statistics.median(tb):.2f} | "
            f"{statistics.median(ra):.1f} → {statistics.median(rb):.1f} |"
        )
    lines += [
        "",
        "Batch throughput (`predict_batch`, windows/s and share of the FMA peak each run "
        "measured, medians over the runs):",
        "",
        "| model | batch | threads | A windows/s | B windows/s | B / A | A peak share | B peak share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in a[0]["shapes"][0]["throughput"] if a else []:
        key = (row["model"], row["batch"], row["threads"])
        pick = lambda rs, field: statistics.median(throughput(r, key)[field] for r in rs)
        wa, wb = pick(a, "windows_per_second"), pick(b, "windows_per_second")
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {wa:,.0f} | {wb:,.0f} | {wb / wa:.2f} | "
            f"{100 * pick(a, 'peak_share'):.1f}% | {100 * pick(b, 'peak_share'):.1f}% |"
        )
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

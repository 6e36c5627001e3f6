#!/usr/bin/env bash
# What one step of a GRU costs on a long window, in nanoseconds and in cycles, beside the FMA
# bounds of the step: `tns bench-zoo` times System A over GRU(4 → H) at lookbacks 168 and 512
# (the real-data and long shapes, 24 steps ahead), and the difference of the two P50s over the
# 344 extra steps is the marginal cost of a step (the per-call work cancels). `tns bench-core`
# measures the clock (a chain of dependent integer adds), the FMA latency and the FMA rate,
# since `perf stat` on this VM has no cycle counter. With OLD set to another `tns` binary, its
# runs alternate with TNS's and its rows come first. Writes results/long/steps.md.
#
#   [OLD=tns-before] bash bench/long/steps.sh [TNS] [RUNS]   (default: target/release/tns, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
tns=${1:-target/release/tns} runs=${2:-3}
networks='gru:16;gru:32;gru:64'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tns" bench-core > "$work/core.json"
old=${OLD:-}
for i in $(seq 1 "$runs"); do
  for side in old new; do
    bin=$tns; [ "$side" = old ] && bin=$old
    [ -n "$bin" ] || continue
    "$bin" bench-zoo --networks "$networks" --shapes real-data,long --calls 20000 \
        --out "$work/$side-$i" 2> /dev/null
  done
done
mkdir -p results/long
python3 - "$work" "$runs" "$tns" "$old" <<'PY'
import json, math, pathlib, statistics, sys
work, runs, tns, old = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sides = [("old", old), ("new", tns)] if old else [("new", tns)]
core = json.loads((work / "core.json").read_text())
ghz, lat, rate, lanes = core["clock_ghz"], core["fma_latency_cycles"], core["fma_per_cycle"], core["fma_lanes"]
p50 = {}
for side, _ in sides:
    for i in range(1, runs + 1):
        for r in json.loads((work / f"{side}-{i}" / "zoo.json").read_text()):
            p50.setdefault((side, r["network"], r["lookback"]), []).append(r["engine_ns"]["p50"])
rows = ["| binary | network | P50 µs at 168 | P50 µs at 512 | ns a step | cycles a step | product chain (cycles) | FMA throughput (cycles) | cycles over the larger bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
for side, net in dict.fromkeys((s, n) for s, n, _ in p50):
    h = int(net.split(":")[1])
    short, long_ = statistics.median(p50[(side, net, 168)]), statistics.median(p50[(side, net, 512)])
    ns = (long_ - short) / (512 - 168)
    cycles = ns * ghz
    chain = h * lat
    fmas = math.ceil(3 * h / lanes) * (h + 4)
    throughput = fmas / rate
    binary = dict(sides)[side]
    rows.append(f"| `{binary}` | {net} | {short / 1e3:.2f} | {long_ / 1e3:.2f} | {ns:.1f} | {cycles:.0f} | {chain:.0f} | {throughput:.0f} | {cycles / max(chain, throughput):.2f}× |")
prefix = f"OLD={old} " if old else ""
head = (f"Produced by `{prefix}bash bench/long/steps.sh {tns} {runs}`: System A over GRU(4 → H), `tns bench-zoo` "
        f"single-sample P50 at lookbacks 168 and 512 (24 steps ahead; the median of {runs} runs each, the binaries alternating), "
        f"and `tns bench-core`: clock {ghz:.2f} GHz (a chain of dependent integer adds), FMA latency {lat:.2f} cycles, "
        f"{rate:.2f} FMA instructions a cycle on {lanes * 32}-bit registers.\n\n"
        "A step's cost is the difference of the two P50s over the 344 extra steps (the per-call work cancels; "
        "the step's input product and normalization stay in it). *Product chain*: the recurrent product's "
        "H dependent multiply-adds per output, whose order the engine's numerics fix (each output adds its "
        "products in column order, the same bits in every path). *FMA throughput*: the step's "
        f"⌈3H/{lanes}⌉ · (H + 4) FMA instructions (recurrent and input products) at the measured rate. "
        "The cell (two sigmoids and a tanh per unit, each an exponential and a division) comes after the "
        "product on the step's critical path, so neither bound counts it.")
out = pathlib.Path("results/long/steps.md")
out.write_text(head + "\n\n" + "\n".join(rows) + "\n")
print(out.read_text())
PY

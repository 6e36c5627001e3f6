#!/usr/bin/env bash
# Training speed and peak memory under two `tns` binaries, alternately (A, B, A, B, …) so
# that slow drifts of the machine hit both: `tns bench-zoo`'s one-epoch training rate
# (windows per second, every core, validation included) at the real-data shape [168, 4] → 24,
# and the process's peak RSS (GNU time); then `bench/train/memory.sh` under each (System A at
# lookback 336: epoch seconds and peak RSS of `tns train`).
#
#   bash bench/train/ab.sh OLD_TNS NEW_TNS NAME [RUNS] [NETWORKS]   # → results/train/ab-NAME.md
#   MEMORY=0 bash bench/train/ab.sh …   # the training rates only, without memory.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: bench/train/ab.sh OLD_TNS NEW_TNS NAME [RUNS] [NETWORKS]"
a=${1:?$usage} b=${2:?$usage} name=${3:?$usage} runs=${4:-3}
networks=${5:-gru:32;mamba:32,16,2,4,2;transformer:32,4,2,2,2;s4d:32,16,2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 1 "$runs"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    /usr/bin/time -f '%M' -o "$work/$side-$i.rss" "$bin" bench-zoo --networks "$networks" \
        --shapes real-data --calls 100 --warmup 10 --out "$work/$side-$i" > /dev/null 2>&1
  done
done
memory_runs=$runs
[ "${MEMORY:-1}" = 0 ] && memory_runs=0
for i in $(seq 1 "$memory_runs"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    TNS=$bin OUT="$work/memory-$side-$i.md" bash bench/train/memory.sh > /dev/null
  done
done
python3 - "$work" "$runs" "$networks" "$name" "$@" <<'PY'
import json, pathlib, shlex, statistics, sys
work, runs, networks, name = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
args = shlex.join(sys.argv[5:])
rates, rss = {}, {}
for side in "ab":
    for i in range(1, runs + 1):
        rss.setdefault(side, []).append(int((work / f"{side}-{i}.rss").read_text().split()[-1]) / 1024)
        for r in json.loads((work / f"{side}-{i}" / "zoo.json").read_text()):
            rates.setdefault((r["network"], side), []).append(r["train_windows_per_second"])
names = list(dict.fromkeys(n for n, _ in rates))
memory_runs = sorted(work.glob("memory-*.md"))
env = "" if memory_runs else "MEMORY=0 "
lines = [
    f"Produced by `{env}bash bench/train/ab.sh {args}` (`tns bench-zoo --shapes real-data`: "
    f"one epoch of training on every core, [168, 4] → 24, System A over each network; "
    f"{runs} runs per binary, alternately; medians, every run in brackets).",
    "",
    "| network | A training windows/s | B training windows/s | B ÷ A |",
    "|---|---:|---:|---:|",
]
for n in names:
    ra, rb = rates[(n, "a")], rates[(n, "b")]
    ma, mb = statistics.median(ra), statistics.median(rb)
    runs_of = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
    lines.append(f"| {n} | {ma:.0f} ({runs_of(ra)}) | {mb:.0f} ({runs_of(rb)}) | {mb / ma:.2f}× |")
lines += ["", "| binary | peak RSS of the whole run, MiB (every run) |", "|---|---|"]
for side, label in (("a", "A"), ("b", "B")):
    lines.append(f"| {label} | {', '.join(f'{x:.0f}' for x in rss[side])} |")
lines += [] if not memory_runs else ["", "`bash bench/train/memory.sh` under each binary (System A, lookback 336, one epoch of `tns train`):", "",
          "| run | binary | data | training windows | peak RSS MiB | epoch seconds |", "|---:|---|---|---:|---:|---:|"]
for i in range(1, runs + 1 if memory_runs else 1):
    for side, label in (("a", "A"), ("b", "B")):
        for row in (work / f"memory-{side}-{i}.md").read_text().splitlines():
            if row.startswith("| ") and not row.startswith("| data"):
                lines.append(f"| {i} | {label} {row}")
out = pathlib.Path("results/train") / f"ab-{name}.md"
out.write_text("\n".join(lines) + "\n")
print(out.read_text())
PY

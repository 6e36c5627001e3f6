#!/usr/bin/env bash
# Peak RSS of a process that loads one model and predicts (`tns bench-rss`, the child `tns
# bench` measures), for two `tns` binaries, alternating, RUNS times each, on the System B models
# of both shapes. The child prints `VmHWM RssAnon RssFile` (KiB; binaries from before that split
# print VmHWM alone). File-backed pages are mapped in the page cache's granules, so they vary
# with the cache's state from one run to the next: the alternation gives both binaries the same
# conditions. Also lists each binary's relocation sections, which the loader reads at start.
# MODELS: a `tns bench --out DIR` run's DIR/models (default: a fresh `NEW bench` run, ~2 min).
# Writes results/rss/ab-NAME.md.
#
#   [MODELS=dir] bash bench/rss/ab.sh OLD NEW NAME [RUNS]   (default 5 runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1 new=$2 name=$3 runs=${4:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models=${MODELS:-}
if [ -z "$models" ]; then
  "$new" bench --out "$work/bench" > /dev/null 2>&1
  models=$work/bench/models
fi
for i in $(seq 1 "$runs"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    for shape in compact seed; do
      echo "$side $shape $("$bin" bench-rss "$models/$shape-system-b.tns")" >> "$work/rss.txt"
    done
  done
done
for side in old new; do
  bin=$old; [ "$side" = new ] && bin=$new
  size -A "$bin" | awk -v s="$side" '$1 ~ /^\.(rela?|relr)\./ {print s, $1, $2}' >> "$work/sections.txt"
done
mkdir -p results/rss
python3 - "$work" "$old" "$new" "$name" "$runs" <<'PY'
import pathlib, statistics, sys
work, old, new, name, runs = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = {}
for line in (work / "rss.txt").read_text().splitlines():
    side, shape, *kib = line.split()
    rows.setdefault((side, shape), []).append([int(k) for k in kib])
def mib(values):
    return f"{statistics.median(values) / 1024:.2f} ({min(values) / 1024:.2f}–{max(values) / 1024:.2f})"
out = [f"# Peak RSS of a serving process, two binaries ({name})", "",
       f"Produced by `bash bench/rss/ab.sh {old} {new} {name} {runs}`: `tns bench-rss` on the System B model of each shape (`tns bench`'s), {runs} alternating runs of each binary. MiB, median (min–max). Anon and file: `RssAnon` and `RssFile` at the end of the run (the child of binaries from before the split prints VmHWM alone).", "",
       "| binary | shape | peak RSS (VmHWM) | MB (10^6 bytes), median | anon at end | file-backed at end |", "|---|---|---:|---:|---:|---:|"]
for (side, shape), runs_ in rows.items():
    binary = old if side == "old" else new
    peak = [r[0] for r in runs_]
    split = [r for r in runs_ if len(r) == 3]
    anon = mib([r[1] for r in split]) if split else "n/a"
    file = mib([r[2] for r in split]) if split else "n/a"
    out.append(f"| `{binary}` | {shape} | {mib(peak)} | {statistics.median(peak) * 1024 / 1e6:.2f} | {anon} | {file} |")
out += ["", "Relocation sections of each binary (bytes, `size -A`):", "", "| binary | section | bytes |", "|---|---|---:|"]
for line in (work / "sections.txt").read_text().splitlines():
    side, section, size = line.split()
    out.append(f"| `{old if side == 'old' else new}` | `{section}` | {int(size):,} |")
path = pathlib.Path("results/rss") / f"ab-{name}.md"
path.write_text("\n".join(out) + "\n")
print(path.read_text())
PY

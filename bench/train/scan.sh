#!/usr/bin/env bash
# Mamba's selective scan in training: one forward and backward pass of the fused op at
# lookback 512 (E 64, N 16; batches of 1 to 128 rows), criterion's
# crates/tns-models/benches/scan.rs, on 1 and 2 threads (RAYON_NUM_THREADS). Given a base
# revision, the same bench source also runs against that revision's op (a git worktree,
# this tree's bench file and tns-models manifest copied in), alternately with this tree's,
# so that slow drifts of the machine hit both. glibc keeps freed memory, as `tns` sets it for
# training (crates/tns-cli/src/main.rs, keep_freed_memory): with glibc's defaults the bench
# measures mostly page faults of Candle's tensors, and its figures moved by 1.5× from one
# run to the next.
#
#   bash bench/train/scan.sh [BASE_REV] [RUNS]   # → results/train/scan.md
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
base=${1:-} runs=${2:-1}
export MALLOC_MMAP_THRESHOLD_=$((32 << 20)) MALLOC_TRIM_THRESHOLD_=$((1 << 30))
work=$(mktemp -d)
cleanup() {
  if [ -n "$base" ]; then git worktree remove --force "$work/base" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trees=(new)
if [ -n "$base" ]; then
  git worktree add --detach "$work/base" "$base" >/dev/null 2>&1
  mkdir -p "$work/base/crates/tns-models/benches"
  cp crates/tns-models/benches/scan.rs "$work/base/crates/tns-models/benches/"
  cp crates/tns-models/Cargo.toml "$work/base/crates/tns-models/Cargo.toml"
  cp Cargo.lock "$work/base/Cargo.lock"
  trees=(base new)
fi
for i in $(seq 1 "$runs"); do
  for threads in 1 2; do
    for tree in "${trees[@]}"; do
      # The base builds into a target directory of its own: sharing this tree's, cargo took
      # one tree's fresh artifacts for the other's and ran the same op on both sides.
      dir=$root target=$root/target
      [ "$tree" = base ] && dir=$work/base target=$root/target/bench-base
      (cd "$dir" && RAYON_NUM_THREADS=$threads CARGO_TARGET_DIR="$target" \
        cargo bench -q -p tns-models --bench scan -- --output-format bencher 2>/dev/null) \
        > "$work/$tree-$threads-$i.txt"
    done
  done
done
mkdir -p results/train
python3 - "$work" "$runs" "$base" "$(git rev-parse --short HEAD)" <<'PY' > results/train/scan.md.tmp
import pathlib, re, statistics, sys
work, runs, base, head = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
pattern = re.compile(r"batch (\d+) \.\.\. bench:\s+([\d,]+) ns/iter")
times = {}
for f in sorted(work.glob("*.txt")):
    tree, threads, _ = f.stem.split("-")
    for batch, ns in pattern.findall(f.read_text()):
        times.setdefault((tree, int(threads), int(batch)), []).append(int(ns.replace(",", "")) / 1e6)
if not times:
    sys.exit("bench/train/scan.sh: the bench printed no results")
trees = ["base", "new"] if base else ["new"]
label = {"base": f"base ({base})", "new": f"this tree ({head})"}
command = " ".join(["bash bench/train/scan.sh"] + [base] * bool(base) + [str(runs)] * (runs != 1))
lines = [
    f"Produced by `{command}` (criterion, `crates/tns-models/benches/scan.rs`: one forward and backward pass of the "
    "selective scan, lookback 512, E 64, N 16; glibc keeping freed memory as `tns` training does; "
    f"{runs} run(s) per tree and thread count, medians of criterion's per-run estimates; "
    "ms per call, and per row of the batch).",
    "",
    "| batch | threads | " + " | ".join(f"{label[t]} ms (per row)" for t in trees)
    + (" | base ÷ this tree |" if base else " |"),
    "|---:|---:|" + "---:|" * len(trees) + ("---:|" if base else ""),
]
for (threads, batch) in sorted({(t, b) for (_, t, b) in times}):
    cells, meds = [], []
    for tree in trees:
        m = statistics.median(times[(tree, threads, batch)])
        meds.append(m)
        cells.append(f"{m:.2f} ({m / batch:.2f})")
    ratio = f" {meds[0] / meds[1]:.2f}× |" if base else ""
    lines.append(f"| {batch} | {threads} | " + " | ".join(cells) + " |" + ratio)
print("\n".join(lines))
PY
mv results/train/scan.md.tmp results/train/scan.md
cat results/train/scan.md

#!/usr/bin/env bash
# Peak memory of training at a long lookback (issue 14's bounded-memory goal; not in CI):
# System A (GRU(4 → 32)) at lookback 336 for one epoch on ~30k generated training windows
# (trajectory `turn`, 52,000 rows, no gaps) and on the EPF prices (both series). Peak RSS from
# GNU time's "Maximum resident set size".
#
#   bash bench/train/memory.sh      # → results/train/memory.md
#   TNS=/path/to/tns OUT=/tmp/memory.md bash bench/train/memory.sh   # another binary, elsewhere
set -euo pipefail
cd "$(dirname "$0")/../.."
tns=${TNS:-target/release/tns}
[ -n "${TNS:-}" ] || cargo build --release -q -p tns-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tns" data synth trajectory --regime turn --rows 52000 -o "$work/turn.csv" 2>/dev/null
run() {
  local label=$1; shift
  /usr/bin/time -v "$tns" train "$@" --model system-a --lookback 336 --epochs 1 --patience 1 \
      -o "$work/model.tns" > "$work/out" 2>&1
  local windows rss seconds
  windows=$(grep -o 'on [0-9]* train' "$work/out" | grep -o '[0-9]*')
  rss=$(grep 'Maximum resident' "$work/out" | grep -o '[0-9]*$')
  seconds=$(grep -o 'validation loss [0-9.]*), [0-9.]* s' "$work/out" | grep -o '[0-9.]* s$')
  echo "| $label | $windows | $((rss / 1024)) | ${seconds% s} |"
}
{
  echo "Produced by \`bash bench/train/memory.sh\` (System A, GRU(→32), lookback 336, one epoch, batch 128, every core; peak RSS of the whole \`tns train\` process)."
  echo
  echo "| data | training windows | peak RSS MiB | epoch seconds |"
  echo "|---|---:|---:|---:|"
  run "generated turn, 52,000 rows × 4 columns" --data "$work/turn.csv" --time-column t
  run "EPF FR + BE prices, 5 columns" --data ../shared/data/epf_fr_be.csv --time-column ds \
      --series-column unique_id --targets y
} > "${OUT:-results/train/memory.md}"
cat "${OUT:-results/train/memory.md}"

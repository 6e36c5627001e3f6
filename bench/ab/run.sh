#!/usr/bin/env bash
# A/B latency check of two `tns` binaries: runs `tns bench --shape compact` alternately
# (A, B, A, B, …) so that slow drifts of the machine hit both, keeps each run's bench.json
# under results/NAME/ (default refactor-ab), and writes the summary with scripts/bench_ab.py.
#
#   bash bench/ab/run.sh OLD_TNS NEW_TNS [RUNS] [NAME]
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: bench/ab/run.sh OLD_TNS NEW_TNS [RUNS] [NAME]"
a=${1:?$usage}
b=${2:?$usage}
runs=${3:-5}
out=results/${4:-refactor-ab}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    "$bin" bench --shape compact --out "$work/$side-$i" > /dev/null
    cp "$work/$side-$i/bench.json" "$out/$side-$i.json"
  done
done
python3 scripts/bench_ab.py "$out"

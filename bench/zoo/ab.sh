#!/usr/bin/env bash
# A/B engine latency of one zoo network under two `tns` binaries: `tns bench-zoo` at the
# compact and real-data shapes, alternately (A, B, A, B, …) so that slow drifts of the machine
# hit both (NETWORK may list several, `;`-separated); writes results/zoo/ab-NAME.md with every run's engine P50 and P99.9.
#
#   bash bench/zoo/ab.sh OLD_TNS NEW_TNS NETWORK NAME [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: bench/zoo/ab.sh OLD_TNS NEW_TNS NETWORK NAME [RUNS]"
a=${1:?$usage} b=${2:?$usage} network=${3:?$usage} name=${4:?$usage} runs=${5:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 1 "$runs"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    "$bin" bench-zoo --networks "$network" --shapes compact,real-data --calls 20000 \
        --out "$work/$side-$i" 2> /dev/null
  done
done
python3 - "$work" "$runs" "$network" "$name" "$@" <<'PY'
import json, pathlib, shlex, sys
work, runs, network, name = pathlib.Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
args = shlex.join(sys.argv[5:])
rows = ["| run | binary | network | shape | engine P50 µs | engine P99.9 µs |", "|---:|---|---|---|---:|---:|"]
for i in range(1, runs + 1):
    for side, label in (("a", "A (old)"), ("b", "B (new)")):
        for r in json.loads((work / f"{side}-{i}" / "zoo.json").read_text()):
            e = r["engine_ns"]
            rows.append(f"| {i} | {label} | {r['network']} | {r['shape']} | {e['p50'] / 1e3:.2f} | {e['p999'] / 1e3:.2f} |")
head = (f"Produced by `bash bench/zoo/ab.sh {args}` ({network}, System A, `tns bench-zoo` "
        f"single-sample calls, 20000 timed after 10000 warm-up, the two binaries alternately):")
out = pathlib.Path("results/zoo") / f"ab-{name}.md"
out.write_text(head + "\n\n" + "\n".join(rows) + "\n")
print(out.read_text())
PY

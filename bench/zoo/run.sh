#!/usr/bin/env bash
# The zoo's latency table (issues 15 and 16; not in CI): the engine (`tns bench-zoo`) and ONNX
# Runtime (bench/zoo/ort.py, 1 thread) on each network's exported graph, same windows, same run,
# at the compact, real-data and long (512-row) shapes, with each network's training throughput.
#   bash bench/zoo/run.sh [--calls N]    # → results/zoo/latency.{json,md}
# A subset, to its own files: --networks 'A;B' --shapes compact,real-data --name STEM
#   (→ results/zoo/STEM.{json,md}).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The command as a shell would take it back (the network lists hold semicolons).
command="bash bench/zoo/run.sh$(printf " '%s'" "$@")"
calls=100000 name=latency zoo=()
while [ $# -gt 0 ]; do
  case $1 in
    --calls) calls=$2 ;;
    --networks | --shapes) zoo+=("$1" "$2") ;;
    --name) name=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
cargo build --release -q -p tns-cli
target/release/tns bench-zoo --calls "$calls" "${zoo[@]}" --out "target/zoo-$name"
venv=target/ci-python
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q onnxruntime numpy; }
"$venv/bin/python" bench/zoo/ort.py "target/zoo-$name/zoo.json" results/zoo --calls "$calls" \
    --name "$name" --command "$command"

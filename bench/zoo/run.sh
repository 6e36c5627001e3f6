#!/usr/bin/env bash
# The zoo's latency table (issues 15 and 16; not in CI): the engine (`tns bench-zoo`) and ONNX
# Runtime (bench/zoo/ort.py, 1 thread) on each network's exported graph, same windows, same run,
# at the compact, real-data and long (512-row) shapes, with each network's training throughput.
#   bash bench/zoo/run.sh [--calls N]    # → results/zoo/latency.{json,md}
set -euo pipefail
cd "$(dirname "$0")/../.."
calls=100000
if [ "${1:-}" = --calls ]; then calls=$2; fi
cargo build --release -q -p tns-cli
target/release/tns bench-zoo --calls "$calls" --out target/zoo
venv=target/ci-python
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q onnxruntime numpy; }
"$venv/bin/python" bench/zoo/ort.py target/zoo/zoo.json results/zoo --calls "$calls"

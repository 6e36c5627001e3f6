#!/usr/bin/env bash
# The server on one core, the load generator (oha) on the other (taskset), System B with
# certificates, open loop with latency correction: once with micro-batching off, once with
# it on (--micro-batch-us). Writes results/serve/pinned-{off,batched}.{json,md}. About six
# minutes after the builds. Needs two logical CPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/serve/setup.sh
RATES=${RATES:-2000,5000,10000,15000,20000,25000,30000}
common=(--tns target/release/tns --oha "$TOOLS/bin/oha" --model "$MODEL" --out "$OUT"
        --server-cpus 1 --client-cpus 0 --workers 1 --connections 64 --rates "$RATES")
python3 bench/serve/loadtest.py "${common[@]}" --name pinned-off
python3 bench/serve/loadtest.py "${common[@]}" --name pinned-batched --micro-batch-us "${BATCH_US:-200}"

#!/usr/bin/env bash
# Load test of `tns serve`: open-loop rates with oha (installed from crates.io into
# bench/serve/.tools), a reload every second under load, and the server's peak RSS.
# Writes results/serve/load.{json,md}. Takes about three minutes after the builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/serve/setup.sh
python3 bench/serve/loadtest.py --tns target/release/tns --oha "$TOOLS/bin/oha" --model "$MODEL" --out "$OUT" "$@"

#!/usr/bin/env bash
# Load test of `tns serve`: open-loop rates with oha (installed from crates.io into
# bench/serve/.tools), a reload every second under load, and the server's peak RSS.
# Writes results/serve/load.{json,md}. Takes about three minutes after the builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/serve}
TOOLS=bench/serve/.tools
if ! [ -x "$TOOLS/bin/oha" ]; then
    cargo install oha --locked --version 1.16.0 --root "$TOOLS"
fi
cargo build --release --bin tns
mkdir -p "$OUT/models"
MODEL="$OUT/models/system-b.tns"
if ! [ -f "$MODEL" ]; then
    ./target/release/tns train --synth trajectory --epochs 10 -o "$MODEL"
fi
python3 bench/serve/loadtest.py --tns target/release/tns --oha "$TOOLS/bin/oha" --model "$MODEL" --out "$OUT" "$@"

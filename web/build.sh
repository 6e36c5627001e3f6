#!/usr/bin/env bash
# Builds the browser page into web/dist: the engine compiled to WebAssembly (wasm-bindgen's web
# target), the page, and the bundled models and tables (trained here by the tns binary). The
# toolchain steps it needs: the wasm32-unknown-unknown target and wasm-bindgen-cli at the
# version Cargo.lock pins for the wasm-bindgen crate (both installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1
version=$(awk '/^name = "wasm-bindgen"$/ { getline; sub(/^version = /, ""); gsub(/"/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
  cargo install --quiet wasm-bindgen-cli --version "$version"
fi
(cd web && npm ci --no-audit --no-fund --silent)
# The time zones the browser build carries for calendar features (chrono-tz's whole database
# would double the .wasm): UTC and the main zones of the electricity markets and trading hubs.
zones='^(UTC|Europe/(London|Dublin|Lisbon|Paris|Brussels|Amsterdam|Berlin|Zurich|Rome|Madrid|Vienna|Warsaw|Stockholm|Helsinki|Athens)|America/(New_York|Chicago|Denver|Los_Angeles|Sao_Paulo)|Asia/(Tokyo|Shanghai|Kolkata)|Australia/Sydney)$'
# SIMD128 lets LLVM vectorize the engine's portable kernels (the arithmetic per value is
# unchanged: the loops it vectorizes run across independent outputs). TNS_WASM_SIMD=0 builds
# without it, for comparison.
simd="-C target-feature=+simd128"
[ "${TNS_WASM_SIMD:-1}" = 0 ] && simd=""
CHRONO_TZ_TIMEZONE_FILTER="$zones" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$simd" \
  cargo build --quiet --profile wasm --target wasm32-unknown-unknown -p tns-wasm
cargo build --quiet --release -p tns-cli
dist=web/dist
rm -rf "$dist"
mkdir -p "$dist/pkg" "$dist/models"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$dist/pkg" target/wasm32-unknown-unknown/wasm/tns_wasm.wasm
# Binaryen's optimizer (npm package `binaryen`, pinned in web/package.json) shrinks it further.
web/node_modules/.bin/wasm-opt -Oz ${simd:+--enable-simd} --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-multivalue --enable-reference-types \
  -o "$dist/pkg/tns_wasm_bg.wasm" "$dist/pkg/tns_wasm_bg.wasm"
cp web/index.html web/app.js web/csv.js web/style.css "$dist/"

tns=target/release/tns
work=target/web-models
mkdir -p "$work"
# A generated trajectory: System B over an MLP, trained on one draw and replayed on another.
$tns data synth trajectory --regime turn --rows 12000 --data-seed 7 -o "$work/turn-train.csv"
$tns train --data "$work/turn-train.csv" --time-column t --model system-b --network mlp:32,32 \
  --epochs 8 --name trajectory-b -o "$dist/models/trajectory.tns" 2>/dev/null
$tns data synth trajectory --regime turn --rows 1500 --data-seed 11 -o "$dist/models/trajectory.csv"
# An hourly table with a known-future covariate and calendar features: System B over a
# structural prior (daily seasonal), a day ahead.
python3 web/hourly.py "$work/hourly-train.csv" 2880 1
python3 web/hourly.py "$dist/models/hourly.csv" 1200 2
$tns train --data "$work/hourly-train.csv" --time-column ds --targets price --future load \
  --calendar hour,dow --model system-b --network mlp:32 --seasons 24:3 --lookback 48 \
  --horizon 12 --epochs 8 --name hourly-b -o "$dist/models/hourly.tns" 2>/dev/null
catalog='{"id": "trajectory", "label": "Trajectory (generated) · System B over mlp:32,32", "model": "models/trajectory.tns", "data": "models/trajectory.csv"},
  {"id": "hourly", "label": "Hourly price with a load forecast and calendar · System B, 12 h ahead", "model": "models/hourly.tns", "data": "models/hourly.csv"}'
# Real data, when the shared data is beside the repository: EPF France, a day ahead, with the
# day-ahead load and generation forecasts.
epf=../shared/data/epf_fr_be.csv
if [ -f "$epf" ]; then
  python3 - "$epf" "$dist/models/epf-fr.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["unique_id"] == "FR"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows[-24 * 120:])
PY
  $tns train --data "$epf" --time-column ds --series-column unique_id --series FR --targets y \
    --future gen_forecast,system_load --calendar hour,dow --model system-b --network mlp:64 \
    --seasons 24:4 --lookback 168 --horizon 24 --epochs 8 --name epf-fr-b \
    -o "$dist/models/epf-fr.tns" 2>/dev/null
  catalog="$catalog,
  {\"id\": \"epf-fr\", \"label\": \"EPF France (real prices) · System B, a day ahead\", \"model\": \"models/epf-fr.tns\", \"data\": \"models/epf-fr.csv\"}"
fi
printf '[\n  %s\n]\n' "$catalog" > "$dist/models/index.json"
ls -l "$dist/pkg/tns_wasm_bg.wasm"

#!/usr/bin/env bash
# Python binding benchmark: builds the wheel into a venv with onnxruntime, trains the models
# with the tns binary, then runs bench/python/run.py → results/python/latency.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/python-bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin numpy pandas onnxruntime
cargo build --release --quiet -p tns-cli
"$venv/bin/maturin" build --release --quiet -m crates/tns-python/Cargo.toml -o target/wheels-bench -i "$venv/bin/python"
"$venv/bin/pip" install --quiet --force-reinstall --no-deps target/wheels-bench/tns-*.whl
tns=target/release/tns
dir=target/python-bench
mkdir -p "$dir"
rm -f "$dir"/*.tns
$tns data synth trajectory --regime turn --rows 24000 -o "$dir/turn.csv.tmp" && mv "$dir/turn.csv.tmp" "$dir/turn.csv"
$tns train --data "$dir/turn.csv" --time-column t --model system-a --epochs 10 -o "$dir/a.tns"
$tns train --data "$dir/turn.csv" --time-column t --model system-b --epochs 10 -o "$dir/b.tns"
$tns train --data "$dir/turn.csv" --time-column t --model system-b --network mlp:64,64 --epochs 10 -o "$dir/b-mlp.tns"
"$venv/bin/python" - "$dir" <<'PY'
import sys, numpy as np, pandas as pd, tns
d = sys.argv[1]
t = pd.date_range("2020-01-01", periods=24 * 200, freq="h")
rng = np.random.default_rng(0)
load = np.sin(2 * np.pi * t.hour / 24) + 0.1 * rng.normal(size=len(t))
df = pd.DataFrame({"ds": t, "unique_id": "S0", "load": load, "y": 10 + 3 * load + rng.normal(size=len(t))})
tns.train(df, time_column="ds", series_column="unique_id", targets=["y"], future=["load"], calendar="hour",
          model="system-b", network="mlp:16", seasons="24:2", lookback=24, horizon=6, epochs=3,
          output=f"{d}/pooled.tns", progress=False)
PY
"$venv/bin/python" bench/python/run.py "$@"

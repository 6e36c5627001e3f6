#!/usr/bin/env bash
# The Python package's tests: builds the tns wheel with maturin, installs it into a fresh
# virtual environment with numpy, pandas, pytest, dask[distributed] and onnxruntime, and runs
# crates/tns-python/tests (which compare against the tns binary, built here first).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-tests
rm -rf "$venv" target/wheels
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin numpy pandas pyarrow pytest \
  "dask[distributed]" onnxruntime
cargo build --release --quiet -p tns-cli
"$venv/bin/maturin" build --release --quiet -m crates/tns-python/Cargo.toml -o target/wheels \
  -i "$venv/bin/python"
"$venv/bin/pip" install --quiet --disable-pip-version-check target/wheels/tns-*.whl
TNS_BIN="$PWD/target/release/tns" "$venv/bin/python" -m pytest -q -p no:cacheprovider crates/tns-python/tests
# The inference path (the package without its `train` feature) builds without Candle.
if cargo tree -p tns-python --no-default-features -e normal | grep -q candle; then
  echo "tns-python without its train feature depends on Candle" >&2
  exit 1
fi
cargo check --release --quiet -p tns-python --no-default-features

#!/usr/bin/env bash
# Peer comparison: installs ONNX Runtime, PyTorch and NumPy into bench/peers/.venv (not part
# of CI; PyTorch from PyPI is the large CUDA build, it runs on the CPU), then times the same
# GRU as `tns bench` with the same protocol. Run `cargo run --release -- bench` first.
#   bash bench/peers/run.sh [--results results/bench] [--calls N] [--eager-calls N]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=bench/peers/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# The CPU-only wheel index is smaller; fall back to PyPI where it is unreachable.
"$venv/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch 2>/dev/null \
  || "$venv/bin/pip" install -q torch
"$venv/bin/pip" install -q onnxruntime onnx numpy safetensors
"$venv/bin/python" bench/peers/peers.py "$@"

"""Shared fixtures: the `tns` binary (the CLI the package must agree with) and small models."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tns

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tns_bin():
    path = Path(os.environ.get("TNS_BIN", ROOT / "target" / "release" / "tns"))
    if not path.is_file():
        pytest.fail(f"the tns binary is missing at {path}: run `cargo build --release` first (or set TNS_BIN)")
    return str(path)


def run(tns_bin, *args):
    """Runs the CLI; fails the test with its stderr when it fails."""
    done = subprocess.run([tns_bin, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


# The options both the CLI and Python train with: a small System B on generated data.
SMALL = dict(synth="trajectory", regime="turn", rows=3000, model="system-b", network="mlp:16", epochs=2, seed=3)


def flags(options):
    out = []
    for k, v in options.items():
        out += [f"--{k.replace('_', '-')}", ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    return out


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tns")


@pytest.fixture(scope="session")
def cli_model(tns_bin, workdir):
    """System B over an MLP trained by the CLI."""
    path = workdir / "b.tns"
    run(tns_bin, "train", *flags(SMALL), "-o", path)
    return path


@pytest.fixture(scope="session")
def windows(tns_bin, workdir):
    """Windows of the generated data the small model was trained on: [n, 10, 4]."""
    path = workdir / "turn.csv"
    run(tns_bin, "data", "synth", "trajectory", "--regime", "turn", "--rows", 400, "-o", path)
    data = pd.read_csv(path)[["x", "y", "vx", "vy"]].to_numpy()
    return np.lib.stride_tricks.sliding_window_view(data, (10, 4))[:, 0].copy()


def hourly_frame(seed=0, hours=24 * 70, series=("A", "B")):
    """Two hourly series with a daily cycle, a known-future covariate and mixed timestamps."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, name in enumerate(series):
        t = pd.date_range("2024-01-01", periods=hours, freq="h")
        load = np.sin(2 * np.pi * t.hour / 24) + 0.1 * rng.normal(size=hours)
        y = 10 + 3 * load + k + 0.3 * rng.normal(size=hours).cumsum() * 0.1
        frames.append(pd.DataFrame({"ds": t.strftime("%Y-%m-%dT%H:%M:%S"), "unique_id": name, "load": load, "y": y}))
    return pd.concat(frames, ignore_index=True)


# A pooled seasonal System B with a covariate and calendar features.
POOLED = dict(
    time_column="ds",
    series_column="unique_id",
    targets=["y"],
    future=["load"],
    calendar="hour",
    model="system-b",
    network="mlp:16",
    seasons="24:2",
    lookback=24,
    horizon=6,
    epochs=2,
)


@pytest.fixture(scope="session")
def pooled(tns_bin, workdir):
    """(frame, CSV path, model trained by the CLI on the CSV, model trained by Python on the frame)."""
    df = hourly_frame()
    csv = workdir / "hourly.csv"
    df.to_csv(csv, index=False)
    cli = workdir / "pooled.tns"
    run(tns_bin, "train", "--data", csv, *flags(POOLED), "-o", cli)
    py = tns.train(df, progress=False, **POOLED)
    return df, csv, tns.load(cli), py


def certificate_of(tns_bin, model_path, window, workdir, name="w.json"):
    path = workdir / name
    path.write_text(json.dumps({"window": window.tolist()}))
    return json.loads(run(tns_bin, "predict", model_path, "-i", path))

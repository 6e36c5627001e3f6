"""Runs every exported model under DIR in onnxruntime and compares with the TNS engine.

Each case folder holds model.onnx, windows.f32 (the model inputs, little-endian float32: each
window, then its future block when the model has known-future inputs) and
expected.json (the engine's outputs). A value passes when
|ort - engine| <= 1e-5 * max(|engine|, floor), where the floor is the model's residual scale
at that position (the data-unit size of a correction) for value outputs and the chi-square
threshold for the gate statistic. Gate decisions must be equal, except for statistics within
1e-4 of the threshold (relative), which float32 cannot decide; those windows are counted and
left out of the value comparison. Prints a JSON report; exits 1 on any failure.
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-5


def check_case(case: pathlib.Path) -> dict:
    expected = json.loads((case / "expected.json").read_text())
    n, lookback, features = expected["n"], expected["lookback"], expected["features"]
    horizon, targets = expected["horizon"], expected["targets"]
    future = expected.get("future", 0)
    inputs = np.fromfile(case / "windows.f32", dtype="<f4").reshape(n, -1)
    past = lookback * features
    feeds = {"window": inputs[:, :past].reshape(n, lookback, features)}
    if future:
        # The model input is the window, then the future block [horizon, future].
        feeds["future"] = np.ascontiguousarray(inputs[:, past:].reshape(n, horizon, future))
    model_path = str(case / "model.onnx")
    checker = "onnx not installed"
    try:
        import onnx

        onnx.checker.check_model(onnx.load(model_path), full_check=True)
        checker = "passed"
    except ImportError:
        pass
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    missing = sorted(set(expected["outputs"]) - set(names))
    got = dict(zip(names, session.run(None, feeds)))
    # The batch dimension is dynamic: one window at a time must give the same numbers.
    single = [
        dict(zip(names, session.run(None, {k: v[i : i + 1] for k, v in feeds.items()})))
        for i in range(8)
    ]
    batch_inconsistent = sorted(
        {k for i in range(8) for k in names if not np.array_equal(single[i][k][0], got[k][i])}
    )

    scale = np.tile(np.asarray(expected["scale"], dtype=np.float64), n).reshape(n, horizon, targets)
    failures = []
    undecidable = np.zeros(n, dtype=bool)
    threshold = expected.get("threshold")
    if threshold is not None:
        stat_engine = np.asarray(expected["outputs"]["gate_statistic"]).reshape(n, horizon)
        passed_engine = np.asarray(expected["outputs"]["gate_passed"]).reshape(n, horizon)
        near = np.abs(stat_engine - threshold) <= 1e-4 * threshold
        undecidable = near.any(axis=1)
        flips = (got["gate_passed"] != passed_engine) & ~near
        if flips.any():
            failures.append(f"gate decisions differ on {int(flips.any(axis=1).sum())} windows")
    worst = {}
    for name, values in expected["outputs"].items():
        if name == "gate_passed" or name not in got:
            continue
        want = np.asarray(values, dtype=np.float64)
        have = got[name].astype(np.float64)
        if name == "gate_statistic":
            want, floor = want.reshape(n, horizon), np.full((n, horizon), threshold)
        else:
            want, floor = want.reshape(n, horizon, targets), scale
        keep = ~undecidable
        denominator = np.maximum(np.abs(want), floor)[keep]
        relative = np.abs(have - want)[keep] / denominator
        worst[name] = float(relative.max()) if relative.size else 0.0
        if worst[name] > TOLERANCE or not np.isfinite(have).all():
            failures.append(f"{name}: worst relative error {worst[name]:.2e} > {TOLERANCE:.0e}")
    if missing:
        failures.append(f"outputs missing from the graph: {missing}")
    if batch_inconsistent:
        failures.append(f"batch of 1 differs from the full batch in {batch_inconsistent}")
    return {
        "case": case.name,
        "kind": expected["kind"],
        "shape": expected["shape"],
        "windows": n,
        "onnx_checker": checker,
        "outputs": names,
        "worst_relative_error": worst,
        "gate_fallbacks": None
        if threshold is None
        else int((~np.asarray(expected["outputs"]["gate_passed"])).sum()),
        "undecidable_windows": int(undecidable.sum()),
        "failures": failures,
    }


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    cases = [check_case(c) for c in sorted(p for p in root.iterdir() if p.is_dir())]
    report = {
        "onnxruntime": ort.__version__,
        "tolerance": TOLERANCE,
        "cases": cases,
    }
    print(json.dumps(report, indent=2))
    failed = [c["case"] for c in cases if c["failures"]]
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

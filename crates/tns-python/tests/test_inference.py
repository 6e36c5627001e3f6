"""Inference from Python equals the CLI and the engine, bit for bit."""

import pickle
import threading

import numpy as np
import pytest
from conftest import SMALL, certificate_of, flags, run

import tns


def test_single_window_equals_cli_certificate(tns_bin, cli_model, windows, workdir):
    m = tns.load(cli_model)
    for i in (0, 57, 200):
        f = m.predict(windows[i])
        cli = certificate_of(tns_bin, cli_model, windows[i], workdir)
        assert f.certificates()[0] == cli
        assert f.prediction.tolist() == cli["prediction"]
        assert f.lower.tolist() == cli["interval"]["lower"]
        assert f.upper.tolist() == cli["interval"]["upper"]
        assert f.base.tolist() == cli["prior"]
        assert f.correction.tolist() == cli["correction"]
        assert f.gate_passed.tolist() == cli["gate"]["passed"]
        assert f.gate_statistic.tolist() == cli["gate"]["statistic"]


def test_batch_equals_single_windows(cli_model, windows):
    m = tns.load(cli_model)
    batch = m.predict(windows)
    assert batch.prediction.shape == (len(windows), 1, 4)
    assert batch.gate_passed.shape == (len(windows), 1)
    for i in range(0, len(windows), 37):
        one = m.predict(windows[i])
        assert np.array_equal(batch.prediction[i], one.prediction)
        assert np.array_equal(batch.lower[i], one.lower)
        assert batch.certificates()[i] == one.certificates()[0]


def test_non_contiguous_and_other_dtypes_read_the_same_values(cli_model, windows):
    m = tns.load(cli_model)
    w = windows[3]
    reference = m.predict(w).prediction
    fortran = np.asfortranarray(w)
    assert np.array_equal(m.predict(fortran).prediction, reference)
    assert np.array_equal(m.predict(w.tolist()).prediction, reference)
    strided = np.repeat(windows[:5], 2, axis=0)[::2]
    assert np.array_equal(m.predict(strided).prediction, m.predict(windows[:5]).prediction)


def test_session_forecasts_equal_window_predictions(cli_model, windows):
    m = tns.load(cli_model)
    rows = np.concatenate([windows[0], windows[10:20, -1]])
    s = m.session()
    for k, row in enumerate(rows):
        out = s.push(row)
        if k + 1 < m.lookback:
            assert out is None
            continue
        window = rows[k + 1 - m.lookback : k + 1]
        assert np.array_equal(out.prediction, m.predict(window).prediction)
    assert s.observations == len(rows)


def test_sessions_carry_a_state_space_state(tns_bin, workdir, windows, cli_model):
    """An S4D trained with absolute inputs streams with its state carried: the window's forecast
    after exactly `lookback` rows, a longer context after; other models refuse."""
    path = workdir / "s4d.tns"
    run(tns_bin, "train", *flags(dict(SMALL, model="system-a", network="s4d:4,3,1", epochs=1)),
        "--absolute-inputs", "-o", path)
    m = tns.load(path)
    rows = np.concatenate([windows[0], windows[10:15, -1]])
    carried, windowed = m.session(carry_state=True), m.session()
    for k, row in enumerate(rows):
        a, b = windowed.push(row), carried.push(row)
        if k + 1 == m.lookback:
            assert np.array_equal(a.prediction, b.prediction)
            assert b.certificates()[0]["stream"]["rows"] == m.lookback
    assert b.certificates()[0]["stream"]["rows"] == len(rows)
    with pytest.raises(ValueError, match="S4D and Mamba"):
        tns.load(cli_model).session(carry_state=True)
    with pytest.raises(ValueError, match="gamma"):
        m.session(adaptive_gamma=2.0)


def test_quantile_heads_give_cqr_intervals(tns_bin, workdir, windows, cli_model):
    """A model trained with quantile heads exposes its quantile forecasts; its interval grows
    from them (CQR) and holds the forecast; a model without heads has none."""
    path = workdir / "cqr.tns"
    run(tns_bin, "train", *flags(dict(SMALL, epochs=2)), "--quantile-heads", "-o", path)
    out = tns.load(path).predict(windows[:20])
    assert out.quantile_lower.shape == out.prediction.shape == out.lower.shape
    assert np.all(out.lower <= out.prediction) and np.all(out.prediction <= out.upper)
    assert not np.allclose(out.prediction - out.lower, out.upper - out.prediction)
    assert out.certificates()[0]["interval"]["method"] == "conformalized_quantile_regression"
    assert tns.load(cli_model).predict(windows[0]).quantile_lower is None


def test_metadata_and_properties(cli_model):
    m = tns.load(cli_model)
    meta = m.metadata
    assert meta["config"]["lookback"] == m.lookback == 10
    assert m.features == ["x", "y", "vx", "vy"] and m.targets == m.features
    assert m.sha256 == meta["file"]["sha256"] if "file" in meta else len(m.sha256) == 64
    assert "system-b" in repr(m)


def test_bytes_pickle_and_save_round_trip(cli_model, windows, tmp_path):
    m = tns.load(cli_model)
    assert m.to_bytes() == cli_model.read_bytes()
    clone = pickle.loads(pickle.dumps(m))
    assert isinstance(clone, tns.Model)
    assert np.array_equal(clone.predict(windows[1]).prediction, m.predict(windows[1]).prediction)
    out = tmp_path / "copy.tns"
    m.save(out)
    assert out.read_bytes() == cli_model.read_bytes()


def test_bad_inputs_are_clear_errors(cli_model, windows, tmp_path):
    m = tns.load(cli_model)
    with pytest.raises(ValueError, match=r"shape \[9, 4\].*lookback=10, features=4"):
        m.predict(windows[0][:9])
    bad = windows[0].copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="not finite|NaN"):
        m.predict(bad)
    with pytest.raises(ValueError, match="takes no known-future"):
        m.predict(windows[0], future=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="not an array of numbers"):
        m.predict([["a"] * 4] * 10)
    with pytest.raises(OSError):
        tns.load(tmp_path / "missing.tns")
    data = bytearray(cli_model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="(?i)checksum|sha|tamper|corrupt"):
        tns.Model(bytes(data))
    with pytest.raises(ValueError):
        tns.Model(bytes(data[:100]))
    s = m.session()
    with pytest.raises(ValueError):
        s.push([1.0, 2.0])
    assert s.observations == 0


def test_batches_release_the_gil(cli_model, windows):
    m = tns.load(cli_model)
    big = np.tile(windows, (200, 1, 1))
    ticks = []
    running = threading.Event()

    def count():
        running.set()
        while running.is_set():
            ticks.append(1)

    thread = threading.Thread(target=count)
    thread.start()
    running.wait()
    before = len(ticks)
    m.predict(big)
    during = len(ticks) - before
    running.clear()
    thread.join()
    # With the GIL held for the whole batch the counter would stand still.
    assert during > 100, during


def test_onnx_export_matches_the_engine(cli_model, windows, tmp_path):
    import onnxruntime as ort

    m = tns.load(cli_model)
    path = tmp_path / "b.onnx"
    m.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: windows[:50].astype(np.float32)})
    names = [o.name for o in session.get_outputs()]
    onnx = dict(zip(names, outputs))["forecast"]
    np.testing.assert_allclose(onnx, m.predict(windows[:50]).prediction, rtol=1e-4, atol=1e-4)

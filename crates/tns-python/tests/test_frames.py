"""Data frames: scoring equals `tns predict --data`, training equals `tns train`."""

import numpy as np
import pandas as pd
import pytest
from conftest import POOLED, SMALL, flags, run

import tns


def test_python_training_equals_cli_training(cli_model, windows):
    py = tns.train(progress=False, **SMALL)
    cli = tns.load(cli_model)
    assert py.metadata["tensors_sha256"] == cli.metadata["tensors_sha256"]
    assert np.array_equal(py.predict(windows).prediction, cli.predict(windows).prediction)
    # Certificates agree but for the model's identity: the file's checksum covers the
    # training summary, whose wall-clock seconds differ between any two runs.
    def without_identity(forecast):
        return [{k: v for k, v in c.items() if k != "model"} for c in forecast.certificates()]

    assert without_identity(py.predict(windows[:20])) == without_identity(cli.predict(windows[:20]))


def test_pooled_frame_training_equals_csv_training(pooled):
    df, _, cli, py = pooled
    assert py.metadata["tensors_sha256"] == cli.metadata["tensors_sha256"]
    assert py.future_columns == ["load"] and py.needs_time


def test_predict_frame_equals_cli_scoring(tns_bin, pooled, workdir):
    df, csv, cli, py = pooled
    out = workdir / "forecasts.csv"
    run(tns_bin, "predict", workdir / "pooled.tns", "--data", csv, "-o", out, "--origin-every", 5)
    # Python's float() reads the CLI's shortest round-trip digits back exactly (older pandas
    # parsers do not by default).
    expected = pd.read_csv(out, converters={c: float for c in ("prediction", "lower", "upper")})
    got = py.predict_frame(df, origin_every=5)
    assert list(got.columns) == list(expected.columns)
    assert str(got["origin_time"].dtype) == "datetime64[ns, UTC]"
    key = ["series", "origin_time", "step", "target"]
    expected["origin_time"] = pd.to_datetime(expected["origin_time"], utc=True).astype("datetime64[ns, UTC]")
    got = got.sort_values(key).reset_index(drop=True)
    expected = expected.sort_values(key).reset_index(drop=True)
    assert len(got) == len(expected) > 100
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)


def test_predict_frame_sorts_rows_and_skips_gaps(pooled):
    df, _, _, py = pooled
    whole = py.predict_frame(df)
    shuffled = py.predict_frame(df.sample(frac=1.0, random_state=1))
    key = ["series", "origin_time", "step", "target"]
    pd.testing.assert_frame_equal(
        whole.sort_values(key).reset_index(drop=True), shuffled.sort_values(key).reset_index(drop=True)
    )
    gap = df.drop(index=range(100, 110))
    # The series loses the origins whose window or horizon reaches into the 10 missing hours.
    assert len(py.predict_frame(gap)) < len(whole)


def test_predict_with_future_and_time_equals_frame_scoring(pooled):
    df, _, _, py = pooled
    a = df[df.unique_id == "A"].reset_index(drop=True)
    frame = py.predict_frame(a)
    origin = 30  # window rows 7..30, predicted rows 31..36
    window = a.loc[origin - 23 : origin, ["load", "y"]].to_numpy()
    future = a.loc[origin + 1 : origin + 6, ["load"]].to_numpy()
    f = py.predict(window, future=future, time=a.loc[origin, "ds"])
    t = pd.Timestamp(a.loc[origin, "ds"], tz="UTC")
    expected = frame[frame.origin_time == t].prediction.to_numpy()
    assert np.array_equal(f.prediction.reshape(-1), expected)
    batch = py.predict(np.stack([window, window]), future=np.stack([future, future]), time=[a.loc[origin, "ds"]] * 2)
    assert np.array_equal(batch.prediction[1].reshape(-1), expected)
    with pytest.raises(ValueError, match="known-future covariates"):
        py.predict(window, time=a.loc[origin, "ds"])
    with pytest.raises(ValueError, match="time|origin"):
        py.predict(window, future=future)


def test_evaluate_equals_cli_eval(tns_bin, pooled, workdir):
    df, csv, cli, py = pooled
    table = tns.evaluate([workdir / "pooled.tns", py], df)
    run(tns_bin, "eval", "--data", csv, workdir / "pooled.tns", workdir / "pooled.tns", "--report", workdir / "eval")
    import json

    report = json.loads((workdir / "eval.json").read_text())
    assert list(table.index) == ["system-b #1", "system-b #2"]
    assert table["mse"].tolist() == [m["overall"]["mse"] for m in report["models"]]
    assert table.loc["system-b #1", "coverage"] == report["models"][0]["coverage"]


def test_unknown_and_bad_options_are_clear_errors():
    with pytest.raises(TypeError, match="did you mean lookback"):
        tns.train(synth="trajectory", lookbak=10)
    with pytest.raises(ValueError, match="--epochs"):
        tns.train(synth="trajectory", epochs=0)
    with pytest.raises(ValueError, match="give --data FILE.csv or --synth"):
        tns.train(epochs=1)
    names = [name for name, *_ in tns.options()]
    assert {"lookback", "network", "calendar", "future", "time_column", "epochs"} <= set(names)


def test_progress_callback_reports_steps_and_epochs():
    events = []
    tns.train(callback=lambda e, info: events.append((e, dict(info))), **{**SMALL, "epochs": 2})
    steps = [i["step"] for e, i in events if e == "step"]
    epochs = [i["epoch"] for e, i in events if e == "epoch"]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] == events[0][1]["total"]
    assert epochs == [1, 2]


def test_an_exception_in_the_callback_stops_training():
    class Stop(Exception):
        pass

    calls = []

    def callback(event, info):
        calls.append(event)
        if len(calls) == 3:
            raise Stop()

    with pytest.raises(Stop):
        tns.train(callback=callback, **{**SMALL, "epochs": 30})
    assert len(calls) == 3


def test_row_scoring_refuses_interleaved_series(pooled):
    _, _, _, py = pooled
    rows = 3 * py.lookback
    values = np.ones((rows, len(py.features)))
    codes = np.array([0, 1] * (rows // 2) + [0] * (rows % 2), dtype=np.int64)
    with pytest.raises(ValueError, match="contiguous"):
        py._score_rows(codes, ["A", "B"], np.arange(rows, dtype=np.float64), values, 1)

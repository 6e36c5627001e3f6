"""TNS (Temporal Neural Solver) from Python.

Load a model file trained by ``tns train`` (or by :func:`train`), predict windows as numpy
arrays with their certificates, stream observations through a session, score a pandas
DataFrame, train and evaluate with the CLI's own options::

    import tns
    m = tns.load("b.tns")
    f = m.predict(window)            # window: [lookback, features] or [n, lookback, features]
    f.prediction, f.lower, f.upper   # numpy arrays
    f.certificates()[0]["gate"]      # the server's certificate, as a dict

Every prediction runs on the compiled engine (the code the CLI and the server run); batches
release the GIL and use every core.
"""

from __future__ import annotations

import difflib
import os

from . import _native
from ._native import Forecast, Session, parse_times

__version__ = _native.__version__
__all__ = [
    "Model",
    "Forecast",
    "Session",
    "load",
    "train",
    "evaluate",
    "options",
    "parse_times",
]


class Model(_native.Model):
    """A trained model, compiled by the inference engine: ``Model(path)`` or ``Model(bytes)``.

    ``predict(window, future=None, time=None)`` predicts one window or a batch;
    ``session()`` streams rows; ``predict_frame(df)`` scores a DataFrame; ``metadata`` is the
    manifest; ``save``, ``to_bytes`` and ``export_onnx`` write it out."""

    __slots__ = ()

    def predict_frame(self, df, origin_every=1):
        """Forecasts at every complete window of a pandas DataFrame, as ``tns predict MODEL
        --data FILE`` does for a CSV file.

        The frame holds the model's time column, series column (for pooled models) and feature
        columns, by the names it was trained on. Rows are put in time order within each series;
        a window never spans a gap. Returns a DataFrame with one row per forecast origin, step
        and target: ``series, origin_time, step, target, prediction, lower, upper``
        (``origin_time`` as UTC ``Timestamp``s for date-time columns)."""
        from ._frame import predict_frame

        return predict_frame(self, df, origin_every)

    def __reduce__(self):
        # Pickled as the model file's bytes: what Dask and multiprocessing ship to workers.
        return (type(self), (self.to_bytes(),))


def load(path) -> Model:
    """Loads a model file (checksum, format and every manifest field checked)."""
    return Model(os.fspath(path))


def options(job: str = "train"):
    """The options of :func:`train` (``"train"``) or :func:`evaluate` (``"evaluate"``), from the
    CLI's definitions: a list of ``(name, help, default, takes_value)``, with ``name`` the
    keyword argument (``lookback``) of the flag (``--lookback``)."""
    _need_training()
    return [(flag.replace("-", "_"), help, default, takes) for flag, help, default, takes in _native._options(job)]


def _need_training():
    if not _native.HAS_TRAINING:
        raise RuntimeError("this build of tns has no training (built without the `train` feature)")


def _flags(job, kwargs):
    """Keyword arguments as the CLI's flags: ``lookback=168`` → ``--lookback 168``; lists are
    joined with commas; ``True`` sets a switch; ``None`` and ``False`` leave an option out."""
    known = {flag: takes for flag, _, _, takes in _native._options(job)}
    args = []
    for key, value in kwargs.items():
        flag = key.replace("_", "-")
        if flag not in known:
            close = difflib.get_close_matches(flag, known, n=3)
            hint = f"; did you mean {', '.join(c.replace('-', '_') for c in close)}?" if close else ""
            raise TypeError(f"{job}() got an unknown option {key!r}{hint} (tns.options({job!r}) lists them)")
        if value is None or value is False:
            continue
        if not known[flag]:
            if value is not True:
                raise TypeError(f"option {key!r} is a switch: give True or False")
            args.append(f"--{flag}")
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [f"--{flag}", str(value)]
    return args


def _frame_csv(data, kwargs):
    """The data argument as CSV bytes (a DataFrame), or as the ``data`` option (a path)."""
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        kwargs["data"] = os.fspath(data)
        return None
    time_column = kwargs.get("time_column")
    if time_column is not None and time_column not in data.columns and data.index.name == time_column:
        data = data.reset_index()
    return data.to_csv(index=False).encode()


def _progress_callback(callback, progress):
    """The user's callback, else a tqdm bar when tqdm is installed and progress is on."""
    if callback is not None or not progress:
        return callback
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bar = None

    def report(event, info):
        nonlocal bar
        if event == "step":
            if bar is None:
                bar = tqdm(total=info["total"], unit="step")
            bar.update(info["step"] - bar.n)
        elif bar is not None:
            bar.set_postfix(epoch=int(info["epoch"]), train=f"{info['train_loss']:.4f}", val=f"{info['val_loss']:.4f}")
            if info["epoch"] == info["epochs"]:
                bar.close()

    return report


def train(data=None, *, output=None, callback=None, progress=True, **options) -> Model:
    """Trains a model with the CLI's options and defaults (``tns train --help``; a keyword
    argument per flag, ``_`` for ``-``; :func:`options` lists them).

    ``data``: a pandas DataFrame (read exactly as a CSV file with the same columns), a CSV path,
    or ``None`` with ``synth="trajectory"`` for generated data. ``output``: also write the model
    file there (atomically). ``callback(event, info)`` is called after every optimizer step
    (``event == "step"``, ``info`` with ``step`` and ``total``) and epoch (``"epoch"``, with the
    losses); without one, a tqdm bar shows progress when tqdm is installed. Ctrl-C stops
    training between two steps with ``KeyboardInterrupt``. The GIL is released while training.

    Example: ``tns.train(df, time_column="ds", series_column="unique_id", targets=["y"],
    model="system-b", network="mlp:64,64", lookback=168, horizon=24, calendar=["hour", "dow"],
    future=["load_forecast"], epochs=20)``."""
    _need_training()
    frame = _frame_csv(data, options)
    args = _flags("train", options)
    file = _native._train(args, frame, None if output is None else os.fspath(output), _progress_callback(callback, progress))
    return Model(file)


def evaluate(models, data=None, **options):
    """Scores models on the test split of the data and compares them, as ``tns eval`` does;
    returns the comparison as a pandas DataFrame, one row per model (MSE, RMSE, MAE, MASE,
    sMAPE, the paired-bootstrap ΔMSE interval against the reference, gate pass rate,
    coverage, interval width).

    ``models``: :class:`Model` objects or paths. ``data``: a DataFrame or a CSV path (default:
    the file the first model was trained on, if recorded); the time and series columns and the
    split come from the first model's file unless given (``time_column=…``, ``split=[…]``)."""
    import json

    import pandas as pd

    _need_training()
    loaded = [m if isinstance(m, _native.Model) else load(m) for m in models]
    frame = _frame_csv(data, options)
    report = json.loads(_native._evaluate(loaded, _flags("evaluate", options), frame))
    rows = []
    for m in report["models"]:
        scores = (m.get("scores") or {}).get("overall") or {}
        diff = m.get("mse_diff_vs_reference") or {}
        rows.append(
            {
                "model": m["name"],
                "parameters": m["parameters"],
                "windows": m["windows"],
                "mse": m["overall"]["mse"],
                "rmse": m["overall"]["rmse"],
                "mae": m["overall"]["mae"],
                "mase": scores.get("mase"),
                "smape": scores.get("smape"),
                "delta_mse": diff.get("mean"),
                "delta_mse_low": diff.get("low"),
                "delta_mse_high": diff.get("high"),
                "gate_pass_rate": m.get("gate_pass_rate"),
                "coverage": m.get("coverage"),
                "nominal_coverage": m.get("nominal_coverage"),
                "mean_width": m.get("mean_width"),
            }
        )
    table = pd.DataFrame(rows).set_index("model")
    table.attrs["reference"] = report["reference"]
    table.attrs["report"] = report
    return table

"""Scoring a pandas DataFrame with a model: the engine's row scorer (the code behind
``tns predict MODEL --data FILE``) over the frame's columns."""

from __future__ import annotations

import numpy as np

from ._times import column_seconds

#: The columns of ``predict_frame``'s result, as in ``tns predict --data``'s forecasts file.
COLUMNS = ["series", "origin_time", "step", "target", "prediction", "lower", "upper"]


def _feature_matrix(df, features, categorical):
    columns = []
    for name in features:
        column, _, value = name.partition("=")
        if value and column in categorical:
            if column not in df.columns:
                raise KeyError(f"the frame has no column {column!r} (the model reads {features})")
            columns.append((df[column].astype(str) == value).to_numpy(dtype=np.float64))
            continue
        if name not in df.columns:
            raise KeyError(f"the frame has no column {name!r} (the model reads {features})")
        try:
            columns.append(df[name].to_numpy(dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"column {name!r} is not numeric: {e}") from None
    return np.column_stack(columns) if columns else np.empty((len(df), 0))


def predict_frame(model, df, origin_every=1):
    import pandas as pd

    data = model.metadata.get("data") or {}
    time_column = data.get("time_column")
    series_column = data.get("series_column")
    wanted = data.get("series")
    categorical = data.get("categorical") or []
    if time_column is not None and time_column not in df.columns and df.index.name == time_column:
        df = df.reset_index()
    if time_column is not None:
        if time_column not in df.columns:
            raise KeyError(f"the frame has no time column {time_column!r}")
        times, dates = column_seconds(df[time_column])
    else:
        # Without a time column, a row's time is its position (from 1), as in the CLI.
        times, dates = np.arange(1, len(df) + 1, dtype=np.float64), False
    if series_column is not None:
        if series_column not in df.columns:
            raise KeyError(f"the frame has no series column {series_column!r}")
        ids = df[series_column].astype(str).to_numpy()
    else:
        ids = np.full(len(df), "main", dtype=object)
    keep = np.ones(len(df), dtype=bool) if wanted is None else ids == wanted
    values = _feature_matrix(df, model.features, categorical)[keep]
    codes, names = pd.factorize(ids[keep], sort=False)
    times = times[keep]
    # Rows in time order within each series (a stable sort keeps equal times in the frame's
    # order, so that the engine reports them).
    order = np.lexsort((times, codes))
    scored = model._score_rows(
        codes[order].astype(np.int64),
        [str(n) for n in names],
        np.ascontiguousarray(times[order]),
        np.ascontiguousarray(values[order]),
        int(origin_every),
    )
    horizon, targets = model.horizon, model.targets
    per = horizon * len(targets)
    n = len(scored["series"])
    origin = np.repeat(scored["origin"], per)
    out = pd.DataFrame(
        {
            "series": np.repeat(np.asarray(names, dtype=object)[scored["series"]], per),
            "origin_time": pd.to_datetime(origin, unit="s", utc=True).astype("datetime64[ns, UTC]") if dates else origin,
            "step": np.tile(np.repeat(np.arange(1, horizon + 1), len(targets)), n),
            "target": np.tile(np.asarray(targets, dtype=object), horizon * n),
            "prediction": scored["prediction"].reshape(-1),
            "lower": scored["lower"].reshape(-1) if scored["lower"] is not None else np.nan,
            "upper": scored["upper"].reshape(-1) if scored["upper"] is not None else np.nan,
        },
        columns=COLUMNS,
    )
    return out

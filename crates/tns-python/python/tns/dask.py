"""Batch scoring on Dask: a ``dask.dataframe`` partitioned by series, scored partition by
partition on the workers with :meth:`tns.Model.predict_frame`.

The model travels inside the task graph as its file's bytes (a few kilobytes to megabytes)
and each worker process compiles it once. The same code runs on a ``LocalCluster`` or on a
multi-machine cluster (``Client("tcp://scheduler:8786")``): workers need ``tns`` installed, not
the model file.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._frame import COLUMNS
from ._times import column_seconds

_compiled = {}


def _model(file_bytes):
    """The model compiled from its bytes, once per worker process."""
    from . import Model

    key = hashlib.sha256(file_bytes).hexdigest()
    model = _compiled.get(key)
    if model is None:
        model = _compiled[key] = Model(file_bytes)
    return model


def _score_partition(part, file_bytes, origin_every):
    return _model(file_bytes).predict_frame(part, origin_every)


def score(ddf, model, origin_every=1):
    """Forecasts at every complete window of each series of ``ddf``, as a dask DataFrame with
    the columns of :meth:`tns.Model.predict_frame`.

    Every series must lie within one partition (``ddf.shuffle(on=series_column)`` puts it
    there; a window never reaches across partitions). Results equal ``predict_frame`` on the
    whole frame, up to row order."""
    import pandas as pd

    time_column = (model.metadata.get("data") or {}).get("time_column")
    dates = False
    if time_column is not None:
        head = ddf.head(1, npartitions=-1)
        if len(head):
            dates = column_seconds(head[time_column])[1]
    meta = pd.DataFrame(
        {
            "series": pd.Series([], dtype=object),
            "origin_time": pd.Series([], dtype="datetime64[ns, UTC]" if dates else np.float64),
            "step": pd.Series([], dtype=np.int64),
            "target": pd.Series([], dtype=object),
            "prediction": pd.Series([], dtype=np.float64),
            "lower": pd.Series([], dtype=np.float64),
            "upper": pd.Series([], dtype=np.float64),
        },
        columns=COLUMNS,
    )
    return ddf.map_partitions(_score_partition, model.to_bytes(), int(origin_every), meta=meta)

"""Times as TNS reads them: seconds since 1970-01-01 UTC.

Numbers stay as they are; strings are parsed by the engine's own parser (ISO-8601, no offset
meaning UTC), exactly as the CLI reads a time column; ``datetime``, pandas ``Timestamp`` and
numpy ``datetime64`` values are converted, naive ones read as UTC.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np


def to_seconds(value):
    """Seconds since 1970 (UTC) of one time."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        from . import _native

        return float(_native.parse_times([value])[0])
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[ns]").astype(np.int64) / 1e9
    raise TypeError(f"cannot read {value!r} as a time: give seconds since 1970, an ISO-8601 string or a datetime")


def column_seconds(column):
    """Seconds since 1970 (UTC) of a pandas column, and whether it held date-times.

    Returns ``(seconds, dates)``: ``dates`` is true for date-time columns, so that origins can be
    given back as ``Timestamp``s."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        if getattr(column.dt, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        ns = column.astype("datetime64[ns]").astype(np.int64).to_numpy()
        return ns / 1e9, True
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64), False
    from . import _native

    seconds = _native.parse_times([str(v) for v in column])
    # Numbers written as text stay numbers; dates are after 1973 (the engine's own rule).
    return seconds, bool(len(seconds)) and bool(np.all(seconds > 1e8))

"""Baselines of the real-data benchmark on the same split and forecast origins as TNS.

    python baselines.py DATA.csv TASK.json TNS_PREDICTIONS.csv OUT.json [EXTRA.csv ...]

TASK.json: {"name", "series": [ids], "horizon", "lookback", "season", "split": [4 shares],
"covariates": [columns known over the horizon]}. TNS_PREDICTIONS.csv is what `tns eval
--predictions` wrote for the task: its (series, origin_time) pairs are the test origins every
model here is scored on, and its rows give the TNS models' errors on them.

Models, each fitted on the rows of the training split only (per series, the same rounding of
the 60/15/10/15 shares as TNS):
- seasonal naive: the value `season` rows before each target row;
- ridge on lags: one least-squares map (ridge λ chosen on the validation split) from the last
  `lookback` values of the target, per horizon step;
- LightGBM: one model over (origin, step) pairs that predicts the change from the value at the
  origin, from lags 1–24, 48, 72, 96, 120, 144, 168 and 336 (as differences from that value),
  that value, the step, the target time's hour and day of week, the series, and the
  known-future covariates at the target time; early stopping on the validation split.

EXTRA.csv files hold forecasts of models run by other scripts on the same origins
(`model,series,origin_time,step,prediction`: nhits.py's N-HiTS); they are scored alike.

Writes per-model MAE/RMSE on the test origins, and a paired block bootstrap (blocks = one
origin's steps) of each model's MAE minus the best TNS model's.
"""

import json
import math
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd

LAGS = list(range(1, 25)) + [48, 72, 96, 120, 144, 168, 336]


def bounds(rows, shares):
    """Row boundaries [0, val, cal, test, rows], rounding as TNS does (half away from zero)."""
    total = sum(shares)
    out, acc = [0], 0.0
    for s in shares:
        acc += s
        out.append(int(math.floor(acc / total * rows + 0.5)))
    out[-1] = rows
    return out


def load(path, series_ids):
    data = pd.read_csv(path, parse_dates=["ds"])
    data = data[data["unique_id"].isin(series_ids)]
    return {sid: g.sort_values("ds").reset_index(drop=True) for sid, g in data.groupby("unique_id")}


def pairs(frames, task, split_index, origins=None):
    """(series, origin row, step) samples whose targets lie in split `split_index`, or the
    given test origins."""
    h, out = task["horizon"], []
    for sid, g in frames.items():
        b = bounds(len(g), task["split"])
        if origins is not None:
            times = {t: i for i, t in enumerate(g["ds"])}
            rows = [times[t] for (s, t) in origins if s == sid]
        else:
            lo, hi = b[split_index], b[split_index + 1]
            # Training and validation use every hourly origin, as TNS does (--stride 1).
            rows = [r for r in range(max(LAGS), len(g) - h) if r + 1 >= lo and r + h < hi]
        out.extend((sid, r, step) for r in rows for step in range(1, h + 1))
    return out


def lgb_features(frames, samples, covariates):
    ids = {sid: i for i, sid in enumerate(sorted(frames))}
    rows = []
    for sid, r, step in samples:
        g = frames[sid]
        y = g["y"].to_numpy()
        target = r + step
        t = g["ds"].iloc[target]
        # Lags relative to the value at the origin, and that value: trees cannot extrapolate
        # a level they never saw (FR prices in autumn 2016), differences they can.
        feats = [y[r + 1 - lag] - y[r] if r + 1 - lag >= 0 else np.nan for lag in LAGS]
        feats += [y[r], step, t.hour, t.dayofweek, ids[sid]]
        feats += [g[c].iloc[target] for c in covariates]
        rows.append(feats)
    return np.asarray(rows, dtype=np.float64)


def targets(frames, samples):
    return np.asarray([frames[s]["y"].iloc[r + step] for s, r, step in samples])


def origin_values(frames, samples):
    return np.asarray([frames[s]["y"].iloc[r] for s, r, _ in samples])


def ridge_fit(x, y, lam):
    x1 = np.hstack([x, np.ones((len(x), 1))])
    reg = lam * np.eye(x1.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x1.T @ x1 + reg, x1.T @ y)


def ridge_predict(w, x):
    return np.hstack([x, np.ones((len(x), 1))]) @ w


def lag_matrix(frames, samples, lookback):
    return np.asarray(
        [frames[s]["y"].to_numpy()[r + 1 - lookback : r + 1] for s, r, _ in samples]
    )


def block_bootstrap(diff_by_origin, resamples=2000, seed=1):
    rng = np.random.default_rng(seed)
    d = np.asarray(diff_by_origin)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(resamples)]
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main():
    data_path, task_path, tns_path, out_path = sys.argv[1:5]
    task = json.loads(open(task_path).read())
    frames = load(data_path, task["series"])
    tns = pd.read_csv(tns_path, parse_dates=["origin_time"])
    origins = sorted(set(zip(tns["series"], tns["origin_time"])))
    test = pairs(frames, task, 3, origins)
    y_test = targets(frames, test)
    predictions = {}

    # Seasonal naive: the value one season before each target row.
    season = task["season"]
    predictions["seasonal naive (python)"] = np.asarray(
        [frames[s]["y"].iloc[r + step - season * math.ceil(step / season)] for s, r, step in test]
    )

    # Ridge on the last `lookback` target values, one map per step, λ picked on validation.
    train, val = pairs(frames, task, 0), pairs(frames, task, 1)
    lookback = task["lookback"]
    ridge = np.zeros(len(test))
    for step in range(1, task["horizon"] + 1):
        tr = [p for p in train if p[2] == step and p[1] + 1 >= lookback]
        va = [p for p in val if p[2] == step]
        te_idx = [i for i, p in enumerate(test) if p[2] == step]
        xtr, ytr = lag_matrix(frames, tr, lookback), targets(frames, tr)
        xva, yva = lag_matrix(frames, va, lookback), targets(frames, va)
        best = min(
            (np.abs(ridge_predict(ridge_fit(xtr, ytr, lam), xva) - yva).mean(), lam)
            for lam in [0.1, 1.0, 10.0, 100.0, 1000.0]
        )[1]
        w = ridge_fit(np.vstack([xtr]), ytr, best)
        ridge[te_idx] = ridge_predict(w, lag_matrix(frames, [test[i] for i in te_idx], lookback))
    predictions["ridge on lags"] = ridge

    # LightGBM with lags, calendar and the known-future covariates.
    covariates = task["covariates"]
    params = {
        "objective": "l1", "learning_rate": 0.03, "num_leaves": 63, "min_data_in_leaf": 20,
        "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
        "num_threads": 2, "seed": 0, "verbose": -1,
    }
    # The model learns the change from the origin's value.
    train_set = lgb.Dataset(
        lgb_features(frames, train, covariates),
        targets(frames, train) - origin_values(frames, train),
    )
    val_set = lgb.Dataset(
        lgb_features(frames, val, covariates),
        targets(frames, val) - origin_values(frames, val),
        reference=train_set,
    )
    booster = lgb.train(
        params, train_set, num_boost_round=2000, valid_sets=[val_set],
        callbacks=[lgb.early_stopping(100, verbose=False)],
    )
    predictions["LightGBM (lags + calendar + covariates)"] = origin_values(frames, test) + booster.predict(
        lgb_features(frames, test, covariates), num_iteration=booster.best_iteration
    )

    # The TNS models, and models run by other scripts, on the same (series, origin, step).
    index = {(s, t, step): i for i, (s, t, step) in enumerate(
        (s, frames[s]["ds"].iloc[r], step) for s, r, step in test)}

    def merge(frame, prefix):
        for name, g in frame.groupby("model"):
            values = np.full(len(test), np.nan)
            for s, t, step, p in zip(g["series"], g["origin_time"], g["step"], g["prediction"]):
                values[index[(s, t, step)]] = p
            predictions[f"{prefix}{name}"] = values

    for path in sys.argv[5:]:
        merge(pd.read_csv(path, parse_dates=["origin_time"]), "")
    # A `*-norm`, `*-hour` or `*-norm-hour` model is another model recalibrated: the same
    # forecasts, only its interval differs, so it has no row of its own here.
    merge(tns[~tns["model"].str.contains(r"-(?:norm|hour)$")], "tns ")

    # Origins numbered in test order (not by hash(), which Python salts per process and
    # would reorder the bootstrap's blocks from run to run).
    numbering = {}
    origin_of = np.asarray([numbering.setdefault((s, r), len(numbering)) for s, r, _ in test])
    report = {"task": task, "test_origins": len(origins), "test_values": len(test), "models": {}}
    for name, p in predictions.items():
        err = np.abs(p - y_test)
        report["models"][name] = {
            "mae": float(err.mean()),
            "rmse": float(np.sqrt(((p - y_test) ** 2).mean())),
            "scored": int(np.isfinite(err).sum()),
        }
    tns_names = [n for n in predictions if n.startswith("tns ")]
    best = min(tns_names, key=lambda n: report["models"][n]["mae"])
    report["best_tns"] = best
    best_err = np.abs(predictions[best] - y_test)
    for name, p in predictions.items():
        if name == best:
            continue
        diff = np.abs(p - y_test) - best_err
        per_origin = [diff[origin_of == o].mean() for o in np.unique(origin_of)]
        mean, lo, hi = block_bootstrap(per_origin)
        report["models"][name]["mae_minus_best_tns"] = {"mean": mean, "low": lo, "high": hi}
    open(out_path, "w").write(json.dumps(report, indent=2))
    print(json.dumps({k: v["mae"] for k, v in report["models"].items()}, indent=2))


if __name__ == "__main__":
    main()

"""NeuralForecast's N-HiTS on the real-data benchmark's split and forecast origins.

    python nhits.py DATA.csv TASK.json TNS_PREDICTIONS.csv OUT_PREDICTIONS.csv [SEED]

Pinned in nhits-requirements.txt (it needs torch, so it is not in CI; run.sh runs it when
TNS_NHITS=1). One N-HiTS per task (pooled over the task's series), input 168 hours, with the
task's known-future covariates and the predicted hours' hour of day and day of week as
future exogenous inputs; trained on each series' first 60% of rows, early-stopped on the
next 25% (validation and calibration: TNS uses them for early stopping and its conformal
radii), then rolled over the test rows without refitting. Writes its forecasts at the TNS
test origins as `model,series,origin_time,step,prediction`, which baselines.py scores with
the others. Prints the seconds the fit and the rolling forecast took (the `cross_validation`
call) as `fit+predict seconds: S`. SEED (default 1) is NeuralForecast's `random_seed`.
"""

import json
import math
import sys
import time

import pandas as pd
from neuralforecast import NeuralForecast
from neuralforecast.models import NHITS

NAME = "N-HiTS (input 168 + calendar + covariates)"


def main():
    data_path, task_path, tns_path, out_path = sys.argv[1:5]
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    task = json.loads(open(task_path).read())
    data = pd.read_csv(data_path, parse_dates=["ds"])
    data = data[data["unique_id"].isin(task["series"])].sort_values(["unique_id", "ds"])
    data["hour"] = data["ds"].dt.hour
    data["dow"] = data["ds"].dt.dayofweek
    exog = task["covariates"] + ["hour", "dow"]
    frame = data[["unique_id", "ds", "y"] + exog].reset_index(drop=True)
    rows = frame.groupby("unique_id").size().min()
    shares = task["split"]
    total = sum(shares)
    test_size = rows - int(math.floor((shares[0] + shares[1] + shares[2]) / total * rows + 0.5))
    val_size = rows - test_size - int(math.floor(shares[0] / total * rows + 0.5))
    horizon = task["horizon"]
    model = NHITS(
        h=horizon,
        input_size=168,
        futr_exog_list=exog,
        scaler_type="robust",
        max_steps=1000,
        val_check_steps=50,
        early_stop_patience_steps=5,
        random_seed=seed,
        enable_progress_bar=False,
        logger=False,
        enable_model_summary=False,
    )
    nf = NeuralForecast(models=[model], freq="h")
    start = time.perf_counter()
    cv = nf.cross_validation(
        df=frame,
        val_size=val_size,
        test_size=test_size,
        n_windows=None,
        step_size=1,
        refit=False,
    )
    print(f"fit+predict seconds: {time.perf_counter() - start:.1f}")
    tns = pd.read_csv(tns_path, parse_dates=["origin_time"])
    origins = set(zip(tns["series"], tns["origin_time"]))
    cv = cv.sort_values(["unique_id", "cutoff", "ds"])
    cv["step"] = cv.groupby(["unique_id", "cutoff"]).cumcount() + 1
    keep = [(s, c) in origins for s, c in zip(cv["unique_id"], cv["cutoff"])]
    cv = cv[keep]
    out = pd.DataFrame(
        {
            "model": NAME,
            "series": cv["unique_id"],
            "origin_time": cv["cutoff"],
            "step": cv["step"],
            "prediction": cv["NHITS"],
        }
    )
    found = len(set(zip(out["series"], out["origin_time"])))
    if found != len(origins):
        raise SystemExit(f"N-HiTS forecast {found} of the {len(origins)} TNS test origins")
    out.to_csv(out_path, index=False)
    print(f"{NAME}: {found} origins written to {out_path}")


if __name__ == "__main__":
    main()

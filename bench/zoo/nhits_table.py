"""Scores bench/zoo/nhits.sh's forecasts: TNS's N-HiTS (tns.csv, written by `tns eval
--predictions`, with the actual values) and NeuralForecast's (nf-seed*.csv) on the same test
origins; MAE per seed, with each command's wall-clock time (times.csv).

    python3 nhits_table.py WORK_DIR OUT_STEM   # → OUT_STEM.json, OUT_STEM.md
"""

import csv
import glob
import json
import os
import statistics
import sys


def main():
    work, stem = sys.argv[1:3]
    actual, runs = {}, {}
    with open(os.path.join(work, "tns.csv")) as f:
        for row in csv.DictReader(f):
            key = (row["series"], row["origin_time"], int(row["step"]))
            actual[key] = float(row["actual"])
            runs.setdefault(row["model"], {})[key] = float(row["prediction"])
    for path in sorted(glob.glob(os.path.join(work, "nf-seed*.csv"))):
        seed = path.rsplit("seed", 1)[1].split(".")[0]
        with open(path) as f:
            runs[f"nf-nhits-seed{seed}"] = {
                (r["series"], r["origin_time"], int(r["step"])): float(r["prediction"])
                for r in csv.DictReader(f)
            }
    with open(os.path.join(work, "times.csv")) as f:
        times = {name: float(t) for name, t in csv.reader(f)}
    rows = []
    for name, predictions in sorted(runs.items()):
        missing = set(actual) - set(predictions)
        if missing:
            raise SystemExit(f"{name} lacks {len(missing)} of the {len(actual)} test forecasts")
        mae = statistics.fmean(abs(predictions[k] - actual[k]) for k in actual)
        rows.append({"run": name, "mae": mae, "seconds": times.get(name)})
    summary = {}
    for family, label in [("tns-nhits", "TNS nhits:3,1,512,2"), ("nf-nhits", "NeuralForecast N-HiTS")]:
        mine = [r for r in rows if r["run"].startswith(family)]
        summary[family] = {
            "label": label,
            "mae": [r["mae"] for r in mine],
            "seconds": [r["seconds"] for r in mine],
        }
    with open(stem + ".json", "w") as f:
        json.dump({"forecasts": len(actual), "runs": rows, "summary": summary}, f, indent=1)
    lines = [
        "Produced by `bash bench/zoo/nhits.sh`: EPF FR, h=24, the real-data benchmark's split and "
        f"test origins ({len(actual) // 24} origins × 24 hours), 168-hour input with the two "
        "day-ahead forecasts and hour/day-of-week as future inputs; 3 seeds each, one after the "
        "other on this machine's cores. Time: each command's wall clock.",
        "",
        "| model | MAE per seed | mean MAE | seconds per seed | mean seconds |",
        "|---|---|---|---|---|",
    ]
    for s in summary.values():
        lines.append(
            f"| {s['label']} | {' / '.join(f'{m:.2f}' for m in s['mae'])} | "
            f"{statistics.fmean(s['mae']):.2f} | "
            f"{' / '.join(f'{t:.0f}' for t in s['seconds'])} | {statistics.fmean(s['seconds']):.0f} |"
        )
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

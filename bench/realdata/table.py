"""Collects results/realdata/<task>.json (written by baselines.py) into one markdown table of
test MAE, with each model's MAE minus the best TNS model's (paired block bootstrap, 95%)."""

import json
import pathlib
import sys

TASKS = [("both-h1", "both series, h=1"), ("fr-h24", "FR, h=24"), ("be-h24", "BE, h=24")]


def main():
    folder = pathlib.Path(sys.argv[1])
    reports = {t: json.loads((folder / f"{t}.json").read_text()) for t, _ in TASKS}
    names = list(next(iter(reports.values()))["models"])
    header = "| model | " + " | ".join(label for _, label in TASKS) + " |"
    lines = [
        "Test MAE (EUR/MWh) on the same origins for every model; in brackets the MAE minus the best TNS model's, 95% paired block-bootstrap CI.",
        "",
        header,
        "|---|" + "---|" * len(TASKS),
    ]
    for name in names:
        cells = []
        for task, _ in TASKS:
            m = reports[task]["models"][name]
            cell = f"{m['mae']:.2f}"
            d = m.get("mae_minus_best_tns")
            if d is None:
                cell += " (best TNS)"
            else:
                cell += f" [{d['low']:+.2f}, {d['high']:+.2f}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(
        f"{label}: {reports[t]['test_origins']} origins" for t, label in TASKS
    )
    lines += ["", f"Test origins: {counts}."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()

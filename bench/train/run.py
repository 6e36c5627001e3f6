"""Training speed and memory, TNS against PyTorch (issue 14's benchmark; not in CI).

The same generated trajectory (`tns data synth trajectory`), the same chronological split
(60/15/10/15), the same networks (System A: a GRU(4 → 32) and a linear head correcting the last
value, next step; TNS's `mlp` kind: the window flattened, two ReLU layers of 64, a linear head),
the same optimizer (AdamW, lr 3e-3, weight decay 1e-4), batch size 128 and
number of epochs, on the same number of threads (1 and 2 by default: TNS through
RAYON_NUM_THREADS, PyTorch through torch.set_num_threads). Per model, thread count and lookback: training seconds per epoch (TNS: the model file's training record; PyTorch: the same
loop of training and validation passes), training windows per second (the two splits hold
slightly different counts: TNS keeps windows inside gap-free segments) and the process's peak
RSS. PyTorch's validation pass is in its time; its schedule is constant (TNS warms up and
decays the rate, which costs nothing measurable).

    target/nhits-venv/bin/python bench/train/run.py   # a Python with torch and numpy

Writes results/train/speed.{json,md}.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time


TNS_KIND = {"gru": "system-a", "mlp": "mlp"}


def tns_run(tns, csv, lookback, epochs, out, threads, net):
    """Trains with `tns train`; returns (seconds per epoch, train windows, peak RSS MiB)."""
    model = out / f"tns-{net}-{lookback}-{threads}.tns"
    cmd = [
        "/usr/bin/env", f"RAYON_NUM_THREADS={threads}", tns, "train", "--data", str(csv),
        "--time-column", "t", "--model", TNS_KIND[net], "--lookback", str(lookback),
        "--epochs", str(epochs), "--patience", str(epochs), "--batch-size", "128",
        "-o", str(model),
    ]
    # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would mix in earlier ones).
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"tns train failed: {' '.join(cmd)}")
    rss = usage.ru_maxrss
    info = json.loads(subprocess.run([tns, "inspect", str(model), "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    training = info["manifest"]["training"]
    return training["seconds"] / training["epochs_run"], training["train_windows"], rss / 1024


TORCH_CHILD = r'''
import json, sys, time, resource
import numpy as np, torch
csv, lookback, epochs, threads, net = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(0)
data = np.loadtxt(csv, delimiter=",", skiprows=1)[:, 1:5]
n = len(data)
bounds = [0, int(0.6 * n), int(0.75 * n)]
mean, std = data[:bounds[1]].mean(0), data[:bounds[1]].std(0) + 1e-8
def windows(lo, hi):
    idx = np.arange(max(lo - 1, lookback - 1), hi - 1)
    idx = idx[idx + 1 >= lo]
    x = np.stack([data[i - lookback + 1:i + 1] for i in idx])
    y = data[idx + 1]
    return x, y
def tensors(x, y):
    last = x[:, -1:, :]
    xn = (x - last) / std
    yn = (y - x[:, -1, :]) / std
    return torch.tensor(xn, dtype=torch.float32), torch.tensor(yn, dtype=torch.float32)
xt, yt = tensors(*windows(bounds[0], bounds[1]))
xv, yv = tensors(*windows(bounds[1], bounds[2]))
class Gru(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(4, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 4)
    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])
# TNS's `mlp` kind: the window flattened, two hidden layers of 64 with ReLU, a linear head.
mlp = torch.nn.Sequential(
    torch.nn.Flatten(), torch.nn.Linear(4 * lookback, 64), torch.nn.ReLU(),
    torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
net = Gru() if net == "gru" else mlp
opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
start = time.perf_counter()
for epoch in range(epochs):
    perm = torch.randperm(len(xt))
    net.train()
    for i in range(0, len(xt), 128):
        b = perm[i:i + 128]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt[b]), yt[b])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    net.eval()
    with torch.no_grad():
        for i in range(0, len(xv), 1024):
            torch.nn.functional.mse_loss(net(xv[i:i + 1024]), yv[i:i + 1024])
seconds = (time.perf_counter() - start) / epochs
print(json.dumps({"seconds_per_epoch": seconds, "train_windows": len(xt),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def torch_run(python, csv, lookback, epochs, threads, net):
    out = subprocess.run([python, "-c", TORCH_CHILD, str(csv), str(lookback), str(epochs),
                          str(threads), net],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["seconds_per_epoch"], r["train_windows"], r["peak_rss_mib"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tns", default="target/release/tns")
    ap.add_argument("--rows", type=int, default=12_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lookbacks", default="10,48,336")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="gru,mlp")
    ap.add_argument("--out", default="results/train")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        csv = tmp / "trajectory.csv"
        subprocess.run([args.tns, "data", "synth", "trajectory", "--regime", "mixed", "--rows",
                        str(args.rows), "-o", str(csv)], check=True, capture_output=True)
        runs = [(net, t, lb) for net in args.models.split(",")
                for t in map(int, args.threads.split(","))
                for lb in map(int, args.lookbacks.split(","))]
        for net, threads, lookback in runs:
            t_sec, t_windows, t_rss = tns_run(args.tns, csv, lookback, args.epochs, tmp, threads,
                                              net)
            p_sec, p_windows, p_rss = torch_run(sys.executable, csv, lookback, args.epochs,
                                                threads, net)
            rows.append({
                "model": net,
                "threads": threads,
                "lookback": lookback,
                "tns": {"seconds_per_epoch": t_sec, "train_windows": t_windows, "peak_rss_mib": t_rss},
                "pytorch": {"seconds_per_epoch": p_sec, "train_windows": p_windows, "peak_rss_mib": p_rss},
            })
            print(rows[-1], flush=True)
    import torch  # noqa: E402  (only for the version in the record)
    result = {"command": " ".join(sys.argv), "rows": args.rows, "epochs": args.epochs,
              "torch": torch.__version__, "runs": rows}
    (out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"Produced by `bench/train/run.py` (`gru`: System A, a GRU(4 → 32) + linear head; `mlp`: the window flattened, 64-64 ReLU, linear head; batch 128, AdamW, {args.epochs} epochs, the same thread count each, {args.rows} generated rows; PyTorch {torch.__version__}).",
        "",
        "| model | threads | lookback | train windows (TNS / PyTorch) | TNS s/epoch | PyTorch s/epoch | TNS windows/s | PyTorch windows/s | TNS time per window ÷ PyTorch's | TNS peak RSS MiB | PyTorch peak RSS MiB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, p = r["tns"], r["pytorch"]
        # The splits hold slightly different window counts (TNS keeps windows inside gap-free
        # segments), so speed is compared per window.
        tw = t["train_windows"] / t["seconds_per_epoch"]
        pw = p["train_windows"] / p["seconds_per_epoch"]
        md.append(
            f"| {r['model']} | {r['threads']} | {r['lookback']} | {t['train_windows']} / {p['train_windows']} | {t['seconds_per_epoch']:.3f} | {p['seconds_per_epoch']:.3f} | {tw:.0f} | {pw:.0f} | {pw / tw:.2f} | {t['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} |"
        )
    md += [
        "",
        "Window counts differ where the generated trajectory's gap-free stretches are short: TNS keeps windows inside them (fewer at long lookbacks); the PyTorch loop's windows may cross a gap (for timing only).",
    ]
    (out / "speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

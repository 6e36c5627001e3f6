"""Peer comparison for `tns bench` (PRODUCT.md §8): the same GRU with the same weights in
ONNX Runtime (1 thread), PyTorch eager and TorchScript, timed with the same protocol.

Reads `<results>/bench.json` and the `peers-<shape>.safetensors` files `tns bench` wrote
(System A's weights, normalized input windows and the engine's network outputs), checks
that every peer reproduces the engine's outputs, times single-sample calls, and writes
`<results>/peers.json`. Run through `bench/peers/run.sh`, which installs the packages.
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import onnxruntime as ort
import torch
from safetensors.numpy import load_file


def percentiles(lat_ns, rng):
    lat = np.asarray(lat_ns, dtype=np.float64)
    s = np.sort(lat)

    def q(arr, p):
        return float(arr[min(len(arr), max(1, int(np.ceil(p * len(arr))))) - 1])

    k = min(len(lat), max(1, int(np.ceil(0.999 * len(lat))))) - 1
    boot = np.sort(
        [np.partition(lat[rng.integers(0, len(lat), len(lat))], k)[k] for _ in range(1000)]
    )
    return {
        "p50": q(s, 0.5),
        "p90": q(s, 0.9),
        "p99": q(s, 0.99),
        "p999": q(s, 0.999),
        "max": float(s[-1]),
        "mean": float(lat.mean()),
        "p999_ci": [q(boot, 0.025), q(boot, 0.975)],
    }


def timer_overhead():
    d = []
    for _ in range(100_000):
        t0 = time.perf_counter_ns()
        d.append(time.perf_counter_ns() - t0)
    return float(np.median(d))


def time_calls(call, samples, warmup, calls):
    n = len(samples)
    for i in range(warmup):
        call(samples[i % n])
    lat = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        x = samples[i % n]
        t0 = time.perf_counter_ns()
        call(x)
        lat[i] = time.perf_counter_ns() - t0
    return lat


class Gru(torch.nn.Module):
    def __init__(self, features, hidden, outputs):
        super().__init__()
        self.gru = torch.nn.GRU(features, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, outputs)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(h[0])


def build(tensors):
    w_ih = tensors["gru.weight_ih_l0"]
    hidden, features = w_ih.shape[0] // 3, w_ih.shape[1]
    outputs = tensors["head.weight"].shape[0]
    model = Gru(features, hidden, outputs)
    with torch.no_grad():
        model.gru.weight_ih_l0.copy_(torch.from_numpy(w_ih))
        model.gru.weight_hh_l0.copy_(torch.from_numpy(tensors["gru.weight_hh_l0"]))
        model.gru.bias_ih_l0.copy_(torch.from_numpy(tensors["gru.bias_ih_l0"]))
        model.gru.bias_hh_l0.copy_(torch.from_numpy(tensors["gru.bias_hh_l0"]))
        model.head.weight.copy_(torch.from_numpy(tensors["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(tensors["head.bias"]))
    return model.eval()


def check(name, got, want):
    err = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
    worst = float(err.max())
    if worst > 1e-5:
        raise SystemExit(f"{name} disagrees with the TNS engine: worst relative error {worst:.2e}")
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results/bench")
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=10_000)
    ap.add_argument(
        "--eager-calls",
        type=int,
        default=None,
        help="timed calls for PyTorch eager and TorchScript (default: --calls)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    rng = np.random.default_rng(1)
    bench = json.load(open(os.path.join(args.results, "bench.json")))
    out = {
        "environment": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpu": bench["environment"]["cpu"],
            "threads": 1,
            "timer": "time.perf_counter_ns",
            "timer_overhead_ns": timer_overhead(),
        },
        "protocol": {"calls": args.calls, "warmup": args.warmup},
        "shapes": [],
    }
    for shape in bench["shapes"]:
        tensors = load_file(shape["peer_inputs"])
        inputs, want = tensors.pop("bench.inputs"), tensors.pop("bench.outputs")
        model = build(tensors)
        samples_np = [inputs[i : i + 1].copy() for i in range(len(inputs))]
        samples_t = [torch.from_numpy(x) for x in samples_np]
        with torch.no_grad():
            eager_out = model(torch.from_numpy(inputs)).numpy()
        onnx_path = os.path.join(args.results, f"peer-{shape['shape']}-system-a.onnx")
        torch.onnx.export(
            model,
            (samples_t[0],),
            onnx_path,
            input_names=["window"],
            output_names=["residual"],
            dynamic_axes={"window": {0: "batch"}, "residual": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        ort_out = session.run(None, {"window": inputs})[0]
        scripted = torch.jit.trace(model, (samples_t[0],))
        with torch.no_grad():
            script_out = scripted(torch.from_numpy(inputs)).numpy()
        agreement = {
            "torch_eager": check("PyTorch eager", eager_out, want),
            "onnxruntime": check("ONNX Runtime", ort_out, want),
            "torchscript": check("TorchScript", script_out, want),
        }
        eager_calls = args.eager_calls or args.calls
        results = {}
        print(f"{shape['shape']}: outputs agree with the engine (worst {max(agreement.values()):.1e})")
        results["onnxruntime"] = percentiles(
            time_calls(lambda x: session.run(None, {"window": x}), samples_np, args.warmup, args.calls),
            rng,
        )
        print(f"  onnxruntime P50 {results['onnxruntime']['p50'] / 1e3:.1f} µs")
        with torch.inference_mode():
            results["torch_eager"] = percentiles(
                time_calls(model, samples_t, min(args.warmup, eager_calls), eager_calls), rng
            )
            print(f"  torch eager P50 {results['torch_eager']['p50'] / 1e3:.1f} µs")
            results["torchscript"] = percentiles(
                time_calls(scripted, samples_t, min(args.warmup, eager_calls), eager_calls), rng
            )
            print(f"  torchscript P50 {results['torchscript']['p50'] / 1e3:.1f} µs")
        out["shapes"].append(
            {
                "shape": shape["shape"],
                "windows_checked": int(len(inputs)),
                "agreement_worst_relative": agreement,
                "calls": {"onnxruntime": args.calls, "torch_eager": eager_calls, "torchscript": eager_calls},
                "latency_ns": results,
            }
        )
    path = os.path.join(args.results, "peers.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

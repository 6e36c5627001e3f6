"""Load test of `tns serve` with oha: open-loop rates, a reload every second under load,
and the server's peak RSS. Writes OUT/load.json and OUT/load.md.

Run through bench/serve/run.sh, which builds tns, installs oha and trains the model.
"""

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import threading
import time
import urllib.request

TOKEN = "loadtest-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tns serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("tns serve did not become ready in 30 s")


# `taskset -c CPUS` before the load generator's command when it is pinned (--client-cpus).
CLIENT_PIN: list = []


def run_oha(oha: str, url: str, body: pathlib.Path, rate: int, seconds: int, connections: int) -> dict:
    """One open-loop run: requests are scheduled at `rate` per second whatever the answers
    take, and latency is measured from the scheduled time (--latency-correction), so queueing
    delay counts (no coordinated omission)."""
    cmd = [
        *CLIENT_PIN, oha, url, "--no-tui", "--output-format", "json",
        "-z", f"{seconds}s", "-q", str(rate), "-c", str(connections), "--latency-correction",
        "-m", "POST", "-H", "content-type: application/json", "-D", str(body),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    summary = report["summary"]
    percentiles = report["latencyPercentiles"]
    statuses = {str(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    # Requests still open when the run's duration ends are cut by oha itself ("aborted due
    # to deadline"): neither answered nor failed by the server, so they are counted apart.
    errors = dict(report.get("errorDistribution", {}))
    cut = errors.pop("aborted due to deadline", 0)
    total = sum(statuses.values()) + sum(errors.values())
    ok = statuses.get("200", 0)
    return {
        "target_rate": rate,
        "seconds": seconds,
        "connections": connections,
        "requests": total,
        "achieved_rate": summary.get("requestsPerSec"),
        "ok": ok,
        "failed": total - ok,
        "status_codes": statuses,
        "errors": errors,
        "cut_at_end_of_run": cut,
        "p50_ms": 1e3 * percentiles["p50"],
        "p90_ms": 1e3 * percentiles["p90"],
        "p99_ms": 1e3 * percentiles["p99"],
        "p999_ms": 1e3 * percentiles["p99.9"],
        "max_ms": 1e3 * summary["slowest"],
    }


def run_oha_get(oha: str, url: str, rate: int, seconds: int, connections: int) -> dict:
    """`run_oha` for a GET route without a body."""
    cmd = [*CLIENT_PIN, oha, url, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(rate),
           "-c", str(connections), "--latency-correction"]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    p = report["latencyPercentiles"]
    return {"target_rate": rate, "achieved_rate": report["summary"]["requestsPerSec"],
            "p50_ms": 1e3 * p["p50"], "p99_ms": 1e3 * p["p99"], "p999_ms": 1e3 * p["p99.9"]}


def peak_rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def reload_loop(base: str, stop: threading.Event, outcomes: list) -> None:
    request = urllib.request.Request(
        base + "/v1/models/b/reload", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                outcomes.append(json.loads(r.read())["version"])
        except OSError as e:
            outcomes.append(f"error: {e}")


def markdown(result: dict) -> str:
    lines = [
        f"Environment: {result['environment']['cpu']} · {result['environment']['logical_cpus']} logical CPUs · {result['environment']['pinning']} · oha {result['environment']['oha']} · {result['request']}",
        "",
        "| target req/s | achieved req/s | requests | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rates"]:
        lines.append(
            f"| {r['target_rate']} | {r['achieved_rate']:.0f} | {r['requests']} | {r['failed']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['max_ms']:.1f} |"
        )
    s, s2 = result["max_sustained"], result.get("max_sustained_2ms")
    lines += [
        "",
        f"Highest rate meeting p99 ≤ 1 ms with zero failed requests and ≥ 95% of the target achieved: **{s['rate'] if s else 'none'} req/s**"
        f" (p99 ≤ 2 ms: **{s2['rate'] if s2 else 'none'} req/s**).",
        "",
    ]
    f = result["floor_live_route_5000"]
    lines += [
        f"Floor of this machine and generator, same schedule on `GET /v2/health/live` (no work) at {f['target_rate']} req/s: p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms, p99.9 {f['p999_ms']:.3f} ms.",
        "",
    ]
    r = result["reload_under_load"]
    lines += [
        f"Reload every second under load ({r['run']['target_rate']} req/s for {r['run']['seconds']} s): {r['reloads_ok']} reloads succeeded (versions {r['first_version']} → {r['last_version']}), {r['reload_errors']} failed; requests: {r['run']['requests']}, failed {r['run']['failed']}, p99 {r['run']['p99_ms']:.3f} ms, p99.9 {r['run']['p999_ms']:.3f} ms.",
        "",
        f"Server peak RSS (VmHWM) after all runs: {result['server_peak_rss_kib'] / 1024:.1f} MiB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tns", required=True)
    p.add_argument("--oha", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rates", default="500,1000,2000,3000,5000,8000,10000")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--server-cpus", help="pin the server to these CPUs (taskset -c)")
    p.add_argument("--client-cpus", help="pin the load generator to these CPUs (taskset -c)")
    p.add_argument("--micro-batch-us", type=int, help="serve with --micro-batch-us")
    p.add_argument("--name", default="load", help="results file name (NAME.json, NAME.md)")
    args = p.parse_args()
    if args.client_cpus:
        CLIENT_PIN[:] = ["taskset", "-c", args.client_cpus]
    server_pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
    batching = ["--micro-batch-us", str(args.micro_batch_us)] if args.micro_batch_us else []
    pinning = (
        f"server on CPU {args.server_cpus}, load generator on CPU {args.client_cpus} (taskset)"
        if args.server_cpus and args.client_cpus
        else "server and load generator share the CPUs"
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    token_file = out / "admin-token"
    token_file.write_text(TOKEN)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            *server_pin, args.tns, "serve", f"b={args.model}", "--addr", f"127.0.0.1:{port}",
            "--admin-token-file", str(token_file), "--watch-seconds", "0",
            "--max-concurrent", "4096", "--workers", str(args.workers), *batching,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(out / "server.log", "w"),
        env={**os.environ, "RUST_LOG": "warn,tns_serve=info"},
    )
    try:
        wait_ready(base, server)
        with urllib.request.urlopen(base + "/v2/models/b") as r:
            meta = json.loads(r.read())
        lookback, features = meta["inputs"][0]["shape"][1:]
        # A fixed plausible window: constant-velocity motion.
        window = [[1.0 + 0.1 * i, -0.5 + 0.05 * i, 2.0, 1.0][:features] for i in range(lookback)]
        body = out / "request.json"
        body.write_text(json.dumps({"window": window}))
        url = base + "/v1/models/b/predict"
        # Warm-up, not recorded.
        run_oha(args.oha, url, body, 1000, 2, args.connections)
        rates = [run_oha(args.oha, url, body, int(r), args.seconds, args.connections) for r in args.rates.split(",")]
        def sustained_at(p99_ms: float) -> list:
            return [
                r for r in rates
                if r["failed"] == 0 and r["p99_ms"] <= p99_ms and r["achieved_rate"] >= 0.95 * r["target_rate"]
            ]
        sustained, sustained_2ms = sustained_at(1.0), sustained_at(2.0)
        # The floor of this machine and generator: the same schedule on a route that does no
        # work (GET /v2/health/live), so that the predict rows can be read against it.
        floor = run_oha_get(args.oha, base + "/v2/health/live", 5000, args.seconds, args.connections)
        stop, outcomes = threading.Event(), []
        reloader = threading.Thread(target=reload_loop, args=(base, stop, outcomes))
        reloader.start()
        reload_run = run_oha(args.oha, url, body, 5000, 20, args.connections)
        stop.set()
        reloader.join()
        versions = [v for v in outcomes if isinstance(v, int)]
        oha_version = subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip()
        cpu = next(
            (l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")),
            platform.processor(),
        )
        result = {
            "environment": {"cpu": cpu, "logical_cpus": os.cpu_count(), "oha": oha_version, "server_workers": args.workers,
                            "pinning": pinning, "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
                            "micro_batch_us": args.micro_batch_us},
            "request": f"POST /v1/models/b/predict, one [{lookback}, {features}] window, System B with certificate, keep-alive, {args.connections} connections, server with {args.workers} async worker(s), micro-batching {f'up to {args.micro_batch_us} µs' if args.micro_batch_us else 'off'}",
            "rates": rates,
            "floor_live_route_5000": floor,
            "max_sustained": {"rate": max(r["target_rate"] for r in sustained)} if sustained else None,
            "max_sustained_2ms": {"rate": max(r["target_rate"] for r in sustained_2ms)} if sustained_2ms else None,
            "reload_under_load": {
                "run": reload_run,
                "reloads_ok": len(versions),
                "reload_errors": len(outcomes) - len(versions),
                "first_version": min(versions) if versions else None,
                "last_version": max(versions) if versions else None,
            },
            "server_peak_rss_kib": peak_rss_kib(server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["server_exit_code_after_sigterm"] = server.returncode
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

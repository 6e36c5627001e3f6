"""Slow-body attack on `tns serve` (issue 13): legitimate predict requests at a moderate,
fixed rate, first alone, then while attacker sockets send a request head and then one body
byte every few seconds (reconnecting whenever the server closes them). Records the legitimate
requests' status codes and latency in both phases, and what the attackers got.

    python3 bench/serve/slow_body.py --tns target/release/tns --model tests/fixtures/golden-system-b-v1.tns

Writes results/serve/slow_body.{json,md}. Standard library only.
"""

import argparse
import asyncio
import json
import pathlib
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body():
    window = [[1.0 + 0.1 * i, -0.5 + 0.05 * i, 2.0, 1.0] for i in range(10)]
    return json.dumps({"window": window}).encode()


async def legit_request(port, payload):
    """One predict on a fresh connection: (status, seconds)."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/models/b/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        await reader.read()
        writer.close()
        status = int(status_line.split()[1]) if status_line else 0
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        status = 0
    return status, time.perf_counter() - start


async def legit_phase(port, rate, seconds):
    payload = body()
    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        # Open loop: each request starts on schedule, whatever the previous ones do.
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(legit_request(port, payload)))
    return await asyncio.gather(*tasks)


async def attacker(port, interval, stop, tally):
    """Keeps one slow body going: a head announcing 10,000 bytes, then a byte per interval;
    reconnects whenever the server answers or closes."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tally["connections"] += 1
            writer.write(
                b"POST /v1/models/b/predict HTTP/1.1\r\nHost: attacker\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
            )
            await writer.drain()
            while not stop.is_set():
                writer.write(b" ")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), interval)
                except asyncio.TimeoutError:
                    continue
                if line:
                    code = line.split()[1].decode() if len(line.split()) > 1 else "?"
                    tally["answers"][code] = tally["answers"].get(code, 0) + 1
                else:
                    tally["closed"] += 1
                break
            writer.close()
        except OSError:
            tally["refused"] += 1
            await asyncio.sleep(0.1)


def summary(results):
    ok = [s for s, _ in results if s == 200]
    latencies = sorted(t for s, t in results if s == 200)

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else None

    codes = {}
    for s, _ in results:
        codes[str(s)] = codes.get(str(s), 0) + 1
    return {
        "requests": len(results),
        "ok_share": len(ok) / max(1, len(results)),
        "status_codes": codes,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1e3 if latencies else None,
    }


async def run(args, port):
    baseline = await legit_phase(port, args.rate, args.seconds)
    stop = asyncio.Event()
    tally = {"connections": 0, "answers": {}, "closed": 0, "refused": 0}
    attackers = [
        asyncio.create_task(attacker(port, args.interval, stop, tally))
        for _ in range(args.sockets)
    ]
    # Let every attacker socket open before the measured phase.
    await asyncio.sleep(2)
    attacked = await legit_phase(port, args.rate, args.seconds)
    stop.set()
    await asyncio.gather(*attackers, return_exceptions=True)
    return summary(baseline), summary(attacked), tally


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tns", default="target/release/tns")
    ap.add_argument("--model", default="tests/fixtures/golden-system-b-v1.tns")
    ap.add_argument("--out", default="results/serve")
    ap.add_argument("--sockets", type=int, default=300)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between body bytes")
    ap.add_argument("--rate", type=float, default=20.0, help="legitimate requests per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [args.tns, "serve", f"b={args.model}", "--addr", f"127.0.0.1:{port}", "--watch-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.stdout.readline()  # "tns serve listening on …" once it accepts connections
        baseline, attacked, tally = asyncio.run(run(args, port))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "command": " ".join(sys.argv),
        "attack": {
            "sockets": args.sockets,
            "body_byte_every_s": args.interval,
            "attacker_connections": tally["connections"],
            "attacker_answers": tally["answers"],
            "attacker_closed": tally["closed"],
            "attacker_refused": tally["refused"],
        },
        "legit_rate_per_s": args.rate,
        "phase_seconds": args.seconds,
        "baseline": baseline,
        "under_attack": attacked,
        "server_limits": "defaults: body timeout 10 s, header timeout 10 s, 256 concurrent, 1024 connections",
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "slow_body.json").write_text(json.dumps(result, indent=2) + "\n")

    def fmt(v):
        return "—" if v is None else f"{v:.2f}"

    md = [
        f"Produced by `python3 bench/serve/slow_body.py` ({args.sockets} attacker sockets, one body byte every {args.interval:g} s, reconnecting; legitimate predicts at {args.rate:g}/s for {args.seconds:g} s per phase, each on a new connection).",
        "",
        "| phase | requests | 200 | p50 ms | p99 ms | other statuses |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, s in (("alone", baseline), ("under attack", attacked)):
        other = ", ".join(f"{k}: {v}" for k, v in s["status_codes"].items() if k != "200") or "none"
        md.append(
            f"| {name} | {s['requests']} | {100 * s['ok_share']:.1f}% | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {other} |"
        )
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(tally["answers"].items())) or "none"
    md += [
        "",
        f"Attackers opened {tally['connections']} connections; the server answered {answers}, closed {tally['closed']} without an answer, and {tally['refused']} connects failed.",
    ]
    (out / "slow_body.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

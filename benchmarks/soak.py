"""Soak run: steady moderate load for a long while; does latency drift or memory grow?

    python benchmarks/soak.py [--model demo-minilm-rm] [--duration-s 600] [--window-s 60]
                              [--rate 8] [--max-pairs 4] [--max-inflight 64] [--json OUT]

One `rmserve serve` on 127.0.0.1 gets an open-loop load: requests arrive at `--rate` per second
(Poisson), each with 1 to `--max-pairs` (prompt, response) pairs from the hh-rlhf mix (synthetic
text of the same length spread without ../shared/data). Open loop, so a slowing server shows as
growing latency instead of a slowing client. Bounded: at most `--max-inflight` requests in flight
(arrivals beyond are counted as shed, not sent) and `--duration-s` in all.

Per window: requests, errors, p50/p99 latency, the server's resident memory (VmRSS) at its end.
Summary: p99 drift (the last two windows against the two after the first, which warms up) and
resident-memory growth from the end of the first window to the end, also per hour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import torch
from load import (
    HH_DATA,
    build_workload,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    percentile,
    server_process,
)
from transformers import AutoTokenizer

from model_store.store import DEFAULT_STORE, ModelStore
from service.loading import locate_model


@dataclass(frozen=True)
class Window:
    index: int
    requests: int
    errors: int
    shed: int
    p50_ms: float
    p99_ms: float
    rss_mib: float
    server_cpu_pct: float
    other_cpu_pct: float  # everything but this client and the server: near 0 for a fair run


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def soak(url: str, bodies: list[bytes], pid: int, args: argparse.Namespace) -> list[Window]:
    rng = random.Random(0)
    windows: list[Window] = []
    results: list[tuple[float, bool]] = []  # (latency s, ok) finished in the current window
    shed = 0
    inflight: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.max_inflight)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(body: bytes) -> None:
            sent, ok = time.perf_counter(), False
            try:
                async with session.post(f"{url}/v1/score", data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            results.append((time.perf_counter() - sent, ok))

        def cpu() -> tuple[float, float, float]:
            return time.process_time(), cpu_seconds(pid), machine_busy_seconds()

        started, cpu_before = time.perf_counter(), cpu()
        next_arrival, window_end = started, started + args.window_s
        while len(windows) < round(args.duration_s / args.window_s):
            if (now := time.perf_counter()) >= window_end:
                latencies = sorted(1000 * s for s, ok in results if ok)
                now_cpu = cpu()
                client, server, machine = (a - b for a, b in zip(now_cpu, cpu_before, strict=True))
                cpu_before = now_cpu
                window = Window(len(windows), len(latencies), sum(not ok for _, ok in results), shed,
                                percentile(latencies, 50), percentile(latencies, 99), resident_mib(pid),
                                100 * server / args.window_s,
                                100 * (machine - client - server) / args.window_s)
                windows.append(window)
                print(f"  window {window.index:2}: {window.requests:5} ok  {window.errors} errors  "
                      f"{window.shed} shed  p50 {window.p50_ms:6.1f} ms  p99 {window.p99_ms:6.1f} ms  "
                      f"rss {window.rss_mib:7.1f} MiB  server cpu {window.server_cpu_pct:3.0f}%  "
                      f"other cpu {window.other_cpu_pct:3.0f}%", flush=True)
                results, shed, window_end = [], 0, window_end + args.window_s
            if now >= next_arrival:
                if len(inflight) < args.max_inflight:
                    task = asyncio.create_task(one(rng.choice(bodies)))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                else:
                    shed += 1
                next_arrival += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, min(next_arrival, window_end) - time.perf_counter()))
        await asyncio.gather(*inflight)
    return windows


def summarise(windows: list[Window], window_s: float) -> dict[str, float]:
    if len(windows) < 5:
        raise SystemExit("a soak needs at least 5 windows: raise --duration-s or lower --window-s")
    early, late = windows[1:3], windows[-2:]
    p99_early = sum(w.p99_ms for w in early) / 2
    p99_late = sum(w.p99_ms for w in late) / 2
    growth = windows[-1].rss_mib - windows[0].rss_mib
    hours = (len(windows) - 1) * window_s / 3600
    return {
        "p99_early_ms": p99_early, "p99_late_ms": p99_late, "p99_drift": p99_late / p99_early,
        "rss_start_mib": windows[0].rss_mib, "rss_end_mib": windows[-1].rss_mib,
        "rss_max_mib": max(w.rss_mib for w in windows), "rss_growth_mib": growth,
        "rss_growth_mib_per_hour": growth / hours,
        "requests": sum(w.requests for w in windows), "errors": sum(w.errors for w in windows),
        "shed": sum(w.shed for w in windows),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo-minilm-rm")
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("RMSERVE_STORE", DEFAULT_STORE)))
    parser.add_argument("--data", type=Path, default=HH_DATA)
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--window-s", type=float, default=60)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second (Poisson)")
    parser.add_argument("--max-pairs", type=int, default=4, help="pairs per request: 1 to this")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind so the server is stopped
    source = locate_model(args.model, ModelStore(args.store))
    workload = build_workload("mixed", AutoTokenizer.from_pretrained(source.path), args.data, 2000,
                              source.max_length)
    rng = random.Random(1)
    bodies = []
    for start in range(0, 1800, 4):
        chunk = workload.pairs[start : start + rng.randint(1, args.max_pairs)]
        bodies.append(json.dumps({"inputs": [{"prompt": p, "response": r} for p, r in chunk]}).encode())
    print(f"model {args.model}, workload {workload.source}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {args.rate}/s for {args.duration_s:.0f} s, "
          f"1-{args.max_pairs} pairs per request", flush=True)
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--model", args.model, "--store",
               str(args.store), "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0",
               *args.server_args.split()]
    with tempfile.TemporaryDirectory(prefix="rmserve-soak-") as tmp, \
            server_process(command, port, Path(tmp) / "server.log") as pid:
        windows = asyncio.run(soak(f"http://127.0.0.1:{port}", bodies, pid, args))
    summary = summarise(windows, args.window_s)
    print(f"p99 drift {summary['p99_drift']:.2f}x ({summary['p99_early_ms']:.1f} -> "
          f"{summary['p99_late_ms']:.1f} ms); resident memory {summary['rss_start_mib']:.0f} -> "
          f"{summary['rss_end_mib']:.0f} MiB ({summary['rss_growth_mib']:+.1f} MiB, "
          f"{summary['rss_growth_mib_per_hour']:+.1f} MiB/h); {summary['requests']} ok, "
          f"{summary['errors']} errors, {summary['shed']} shed")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "windows": [asdict(w) for w in windows], "summary": summary,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

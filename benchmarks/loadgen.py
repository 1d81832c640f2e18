"""Closed-loop HTTP load against a running server, and the CPU and metrics sampled around it."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import LOOPBACK, metric_sums, server_process
from workload import Workload, request_bodies

REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadResult:
    """One server at one concurrency, over the measurement window only."""

    concurrency: int
    requests: int
    errors: int
    window_s: float
    throughput_rps: float
    pairs_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_pairs: float | None
    padding_fraction: float | None
    client_cpu_pct: float
    server_cpu_pct: float
    other_cpu_pct: float  # everything else on the machine: should be near 0 for a fair run


@dataclass(frozen=True)
class Mark:
    """The clocks at one edge of a measurement window (seconds), and the requests done by then."""

    wall_s: float
    requests: int
    client_cpu_s: float
    server_cpu_s: float
    machine_busy_s: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all processes spent busy, over all cores (Linux)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(pct / 100 * len(sorted_values)))]


class ClosedLoop:
    """Clients that each send one request after another until told to stop; it records every
    answer and says when the open window holds `max_requests` of them."""

    def __init__(self, session: aiohttp.ClientSession, url: str, bodies: list[bytes],
                 max_requests: int) -> None:
        self.done: list[tuple[float, float, bool]] = []  # (sent, finished, ok)
        self.stop, self.full = asyncio.Event(), asyncio.Event()
        self._session, self._url, self._bodies, self._max_requests = session, url, bodies, max_requests
        self._window_from: int | None = None  # len(done) when the window opened
        self._next_body = itertools.count()  # shared, so the clients walk the bodies in turn

    def open_window(self, requests_done: int) -> None:
        self._window_from = requests_done

    async def client(self) -> None:
        while not self.stop.is_set():
            body = self._bodies[next(self._next_body) % len(self._bodies)]
            sent, ok = time.perf_counter(), False
            try:
                async with self._session.post(self._url, data=body,
                                              headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass  # counted as an error
            self.done.append((sent, time.perf_counter(), ok))
            if self._window_from is not None and len(self.done) - self._window_from >= self._max_requests:
                self.full.set()


async def run_load(
    base_url: str, bodies: list[bytes], concurrency: int, *, pid: int, warmup_s: float,
    duration_s: float, max_requests: int, has_metrics: bool, pairs_per_request: int,
) -> LoadResult:
    """Closed loop: `concurrency` clients each send one request after another.

    Only requests that finish inside the window (after the warm-up) count, so the queue is in
    steady state; in-flight requests then drain before the next measurement.
    """
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = ClosedLoop(session, f"{base_url}/v1/score", bodies, max_requests)
        clients = [asyncio.create_task(loop.client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        before = await scrape(base_url, has_metrics)
        start = mark(pid, len(loop.done))
        loop.open_window(start.requests)
        with suppress(TimeoutError):
            await asyncio.wait_for(loop.full.wait(), duration_s)
        end = mark(pid, len(loop.done))
        after = await scrape(base_url, has_metrics)
        loop.stop.set()
        await asyncio.gather(*clients)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return load_result(concurrency, pairs_per_request, loop.done, start, end, delta)


def mark(pid: int, requests_done: int) -> Mark:
    return Mark(time.perf_counter(), requests_done, time.process_time(), cpu_seconds(pid),
                machine_busy_seconds())


async def scrape(base_url: str, has_metrics: bool) -> dict[str, float]:
    # In a thread, on a connection of its own: a scrape must neither stall the clients' event loop
    # nor queue behind their requests.
    if not has_metrics:
        return {}
    return await asyncio.to_thread(metric_sums, base_url, REQUEST_TIMEOUT_S)


def load_result(
    concurrency: int, pairs_per_request: int, done: list[tuple[float, float, bool]], start: Mark,
    end: Mark, delta: dict[str, float],
) -> LoadResult:
    """The window's figures from the answers finished inside it and the metrics' growth over it."""
    inside = [(s, f, ok) for s, f, ok in done if start.wall_s <= f <= end.wall_s]
    latencies_ms = sorted((f - s) * 1000 for s, f, ok in inside if ok)
    span_s = end.wall_s - start.wall_s
    batches = delta.get("rmserve_batch_size_count", 0.0)
    padded = delta.get("rmserve_batch_tokens_sum", 0.0)
    client_s, server_s = end.client_cpu_s - start.client_cpu_s, end.server_cpu_s - start.server_cpu_s
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies_ms),
        errors=len(inside) - len(latencies_ms),
        window_s=span_s,
        throughput_rps=len(latencies_ms) / span_s,
        pairs_per_s=len(latencies_ms) * pairs_per_request / span_s,
        p50_ms=percentile(latencies_ms, 50),
        p95_ms=percentile(latencies_ms, 95),
        p99_ms=percentile(latencies_ms, 99),
        mean_batch_pairs=delta["rmserve_batch_size_sum"] / batches if batches else None,
        padding_fraction=1 - delta["rmserve_tokens_total"] / padded if padded else None,
        client_cpu_pct=100 * client_s / span_s,
        server_cpu_pct=100 * server_s / span_s,
        other_cpu_pct=100 * (end.machine_busy_s - start.machine_busy_s - client_s - server_s) / span_s,
    )


def bench_server(
    name: str, command: list[str], port: int, workloads: list[Workload], args: argparse.Namespace,
    log_dir: Path,
) -> dict[str, list[LoadResult]]:
    """Start one server, run every workload at every concurrency of `args` against it, stop it.
    Only servers named rmserve* are scraped for batch metrics (the naive one has none)."""
    results: dict[str, list[LoadResult]] = {}
    print(f"\n[{name}] {shlex.join(command)}", flush=True)
    with server_process(command, port, log_dir / f"{name}.log") as pid:
        for workload in workloads:
            bodies = request_bodies(workload, args.pairs_per_request)
            results[workload.name] = []
            for concurrency in args.concurrency:
                result = asyncio.run(run_load(
                    f"http://{LOOPBACK}:{port}", bodies, concurrency, pid=pid,
                    warmup_s=args.warmup_s, duration_s=args.duration_s,
                    max_requests=args.max_requests, has_metrics=name.startswith("rmserve"),
                    pairs_per_request=args.pairs_per_request,
                ))
                print(f"  {workload.name:5} c={concurrency:<3} {result.throughput_rps:7.1f} req/s "
                      f"{result.pairs_per_s:7.1f} pairs/s "
                      f"p50 {result.p50_ms:7.0f} ms  errors {result.errors}  "
                      f"other cpu {result.other_cpu_pct:.0f}%", flush=True)
                results[workload.name].append(result)
    return results

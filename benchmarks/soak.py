"""Soak run: steady, varied load for a long while; does latency drift or memory grow?

    python benchmarks/soak.py [--model demo-minilm-rm] [--duration-s 900] [--sample-s 30]
                              [--warmup-s 120] [--rate 5] [--max-pairs 4] [--texts distinct|replay]
                              [--max-inflight 64] [--server-args "..."] [--server-env K=V ...]
                              [--json OUT]

One `rmserve serve` on 127.0.0.1 gets an open-loop load: requests arrive at `--rate` per second
(Poisson), each with 1 to `--max-pairs` (prompt, response) pairs from the hh-rlhf mix (synthetic
text of the same length spread without ../shared/data). Open loop, so a slowing server shows as
growing latency instead of a slowing client. Bounded: at most `--max-inflight` requests in flight
(arrivals beyond are counted as shed, not sent), `--max-requests` sent and `--duration-s` in all.

--texts distinct (the default) is what a server meets in production: every pair is an hh-rlhf pair
with a few of its words swapped for other words of the file, so lengths follow hh-rlhf while no
request's body is ever sent twice (checked; repeats would be counted). --texts replay sends the
same 450 bodies again and again, which hides any state kept per distinct input.

Every `--sample-s` (a window): requests, errors, p50/p99 latency and the server's resident memory
(VmRSS from /proc) at its end. Summary: resident-memory growth after `--warmup-s` (the sample at
the end of the warm-up against the last), its maximum, whether it meets `--target-growth-mib`, and
the p99 drift (the last two windows against the first two after the warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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
    WORDS,
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

REPLAY_BODIES = 450
WORDS_SWAPPED = 3  # per text: enough that no two texts are equal, too few to move its length much


@dataclass(frozen=True)
class Window:
    index: int
    end_s: float  # since the load started
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


class DistinctBodies:
    """Request bodies built on demand from the pairs, never the same body twice."""

    def __init__(self, pairs: list[tuple[str, str]], max_pairs: int, seed: int = 1) -> None:
        self._pairs = pairs
        self._max_pairs = max_pairs
        self._rng = random.Random(seed)
        vocabulary = {w for p, r in pairs for w in (p + " " + r).split() if w.isalpha()}
        self._vocabulary = sorted(vocabulary) if len(vocabulary) > 100 else WORDS
        self._seen: set[bytes] = set()
        self.repeats = 0  # bodies drawn again and redrawn: expected 0

    def _varied(self, text: str) -> str:
        words = text.split(" ")
        for _ in range(WORDS_SWAPPED):
            words[self._rng.randrange(len(words))] = self._rng.choice(self._vocabulary)
        return " ".join(words)

    def next(self) -> bytes:
        while True:
            chosen = self._rng.sample(self._pairs, self._rng.randint(1, self._max_pairs))
            body = json.dumps({"inputs": [{"prompt": self._varied(p), "response": self._varied(r)}
                                          for p, r in chosen]}).encode()
            digest = hashlib.blake2b(body, digest_size=16).digest()
            if digest not in self._seen:
                self._seen.add(digest)
                return body
            self.repeats += 1


class ReplayBodies:
    """The same few hundred bodies, in a random order: the old soak's load."""

    def __init__(self, pairs: list[tuple[str, str]], max_pairs: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self._bodies = []
        for start in range(0, REPLAY_BODIES * 4, 4):
            chunk = pairs[start : start + rng.randint(1, max_pairs)]
            self._bodies.append(json.dumps({"inputs": [{"prompt": p, "response": r}
                                                       for p, r in chunk]}).encode())
        self._rng = random.Random(0)
        self.repeats = 0

    def next(self) -> bytes:
        return self._rng.choice(self._bodies)


async def soak(url: str, bodies: DistinctBodies | ReplayBodies, pid: int,
               args: argparse.Namespace) -> list[Window]:
    rng = random.Random(0)
    windows: list[Window] = []
    results: list[tuple[float, bool]] = []  # (latency s, ok) finished in the current window
    shed = sent = 0
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
        next_arrival, window_end = started, started + args.sample_s
        while len(windows) < round(args.duration_s / args.sample_s):
            if (now := time.perf_counter()) >= window_end:
                now_cpu = cpu()
                used = [a - b for a, b in zip(now_cpu, cpu_before, strict=True)]
                cpu_before = now_cpu
                windows.append(close_window(len(windows), now - started, results, shed, used, pid, args))
                results, shed, window_end = [], 0, window_end + args.sample_s
            if now >= next_arrival:
                if len(inflight) < args.max_inflight and sent < args.max_requests:
                    task = asyncio.create_task(one(bodies.next()))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    sent += 1
                else:
                    shed += 1
                next_arrival += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, min(next_arrival, window_end) - time.perf_counter()))
        await asyncio.gather(*inflight)
    return windows


def close_window(index: int, end_s: float, results: list[tuple[float, bool]], shed: int,
                 used_cpu_s: list[float], pid: int, args: argparse.Namespace) -> Window:
    """One sampling window's figures (`used_cpu_s`: client, server and machine CPU seconds in it),
    printed as they come."""
    latencies = sorted(1000 * s for s, ok in results if ok)
    client, server, machine = used_cpu_s
    window = Window(index, round(end_s, 1), len(latencies), sum(not ok for _, ok in results), shed,
                    percentile(latencies, 50), percentile(latencies, 99), resident_mib(pid),
                    100 * server / args.sample_s, 100 * (machine - client - server) / args.sample_s)
    print(f"  {window.end_s:6.0f} s: {window.requests:5} ok  {window.errors} errors  "
          f"{window.shed} shed  p50 {window.p50_ms:6.1f} ms  p99 {window.p99_ms:6.1f} ms  "
          f"rss {window.rss_mib:7.1f} MiB  server cpu {window.server_cpu_pct:3.0f}%  "
          f"other cpu {window.other_cpu_pct:3.0f}%", flush=True)
    return window


def summarise(windows: list[Window], args: argparse.Namespace) -> dict[str, float | bool]:
    warm = round(args.warmup_s / args.sample_s)  # windows[warm - 1] ends the warm-up
    if warm < 1 or len(windows) < warm + 4:
        raise SystemExit("a soak needs a warm-up of at least one window and 4 windows after it")
    at_warm, last = windows[warm - 1], windows[-1]
    early, late = windows[warm : warm + 2], windows[-2:]
    p99_early = sum(w.p99_ms for w in early) / 2
    p99_late = sum(w.p99_ms for w in late) / 2
    growth = last.rss_mib - at_warm.rss_mib
    hours = (last.end_s - at_warm.end_s) / 3600
    return {
        "p99_early_ms": p99_early, "p99_late_ms": p99_late, "p99_drift": p99_late / p99_early,
        "rss_first_mib": windows[0].rss_mib, "rss_at_warmup_mib": at_warm.rss_mib,
        "rss_end_mib": last.rss_mib, "rss_max_mib": max(w.rss_mib for w in windows),
        "rss_growth_after_warmup_mib": growth, "rss_growth_mib_per_hour": growth / hours,
        "target_growth_mib": args.target_growth_mib, "meets_target": growth <= args.target_growth_mib,
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
    parser.add_argument("--duration-s", type=float, default=900)
    parser.add_argument("--sample-s", type=float, default=30, help="window: latency and RSS sampled")
    parser.add_argument("--warmup-s", type=float, default=120, help="growth is counted after this")
    parser.add_argument("--target-growth-mib", type=float, default=50)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (Poisson)")
    parser.add_argument("--max-pairs", type=int, default=4, help="pairs per request: 1 to this")
    parser.add_argument("--texts", choices=("distinct", "replay"), default="distinct")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=50_000, help="sent in all, at most")
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags")
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V",
                        help="environment variable for the server (repeatable), e.g. to compare allocators")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind so the server is stopped
    source = locate_model(args.model, ModelStore(args.store))
    workload = build_workload("mixed", AutoTokenizer.from_pretrained(source.path), args.data, 2000,
                              source.max_length)
    bodies = (DistinctBodies if args.texts == "distinct" else ReplayBodies)(workload.pairs, args.max_pairs)
    print(f"model {args.model}, workload {workload.source}, {args.texts} texts, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {args.rate}/s for {args.duration_s:.0f} s, "
          f"1-{args.max_pairs} pairs per request, RSS every {args.sample_s:.0f} s", flush=True)
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--model", args.model, "--store",
               str(args.store), "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0",
               *args.server_args.split()]
    env = dict(os.environ, **dict(pair.split("=", 1) for pair in args.server_env))
    with tempfile.TemporaryDirectory(prefix="rmserve-soak-") as tmp, \
            server_process(command, port, Path(tmp) / "server.log", env=env) as pid:
        windows = asyncio.run(soak(f"http://127.0.0.1:{port}", bodies, pid, args))
    summary = summarise(windows, args)
    summary["body_repeats"] = bodies.repeats
    print(f"resident memory {summary['rss_first_mib']:.0f} MiB after {args.sample_s:.0f} s, "
          f"{summary['rss_at_warmup_mib']:.0f} MiB after the {args.warmup_s:.0f} s warm-up, "
          f"{summary['rss_end_mib']:.0f} MiB at the end: {summary['rss_growth_after_warmup_mib']:+.1f} MiB "
          f"({summary['rss_growth_mib_per_hour']:+.1f} MiB/h; target <= {args.target_growth_mib:.0f} MiB: "
          f"{'met' if summary['meets_target'] else 'MISSED'}); p99 drift {summary['p99_drift']:.2f}x "
          f"({summary['p99_early_ms']:.1f} -> {summary['p99_late_ms']:.1f} ms); {summary['requests']} ok, "
          f"{summary['errors']} errors, {summary['shed']} shed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "workload": workload.source,
            "windows": [asdict(w) for w in windows], "summary": summary,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

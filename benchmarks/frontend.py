"""Front-end cost benchmark: server CPU per request when the model's forward costs next to nothing.

    python benchmarks/frontend.py [--parts rmserve-1,rmserve-2,naive] [--concurrency 32,64]
                                  [--duration-s 10] [--warmup-s 2] [--workloads pair40,pair230,batch64x40]
                                  [--server-args "..."] [--model-dir DIR] [--py-spy SECONDS] [--out OUT]

The model is a random one-layer BERT (hidden 32) with all-MiniLM-L6-v2's real WordPiece tokenizer,
so what a request costs is HTTP parsing, validation, tokenisation, batching and metrics. Each part
is one server on 127.0.0.1, run after the other: `rmserve serve --api-workers N` and
benchmarks/naive_server.py on the same folder. Each workload is a closed loop of POST /v1/score
(aiohttp, one keep-alive connection per client); the server's CPU time over the window is read
from /proc for the server and every live descendant (API workers, engine), so a multi-process
server is charged in full.
  pair40      single pairs of ~40 tokens
  pair230     single pairs of ~230 tokens
  batch64x40  64 pairs of ~40 tokens per request (reported per item too)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import torch
from frontend_report import FrontendResult, report
from frontend_workload import SHAPES, build_tiny_model, build_workload
from harness import LOOPBACK, free_port, serve_command, server_process
from loadgen import REQUEST_TIMEOUT_S, ClosedLoop, machine_busy_seconds, percentile, scrape
from process_cpu import CLK_TCK, profile, self_samples, tree_ticks
from transformers import AutoTokenizer
from workload import Workload, request_bodies

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILED_WORKLOAD = "pair230"
TOP_FUNCTIONS = 25
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Mark:
    """Clocks at one edge of the window."""

    wall_s: float
    client_cpu_s: float
    machine_busy_s: float
    server_ticks: dict[tuple[int, int], int]


def mark(pid: int) -> Mark:
    return Mark(time.perf_counter(), time.process_time(), machine_busy_seconds(), tree_ticks(pid))


async def run_load(
    base_url: str, bodies: list[bytes], concurrency: int, pid: int, *, warmup_s: float, duration_s: float,
    items_per_request: int, has_metrics: bool,
) -> FrontendResult:
    """`concurrency` clients, each on its own keep-alive connection, send one request after another;
    only answers finished inside the window count."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = ClosedLoop(session, f"{base_url}/v1/score", bodies, max_requests=sys.maxsize)
        clients = [asyncio.create_task(loop.client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        before = await scrape(base_url, has_metrics)  # outside the window: a scrape costs server CPU
        start = mark(pid)
        await asyncio.sleep(duration_s)
        end = mark(pid)
        after = await scrape(base_url, has_metrics)
        loop.stop.set()
        await asyncio.gather(*clients)
    batches = after.get("rmserve_batch_size_count", 0.0) - before.get("rmserve_batch_size_count", 0.0)
    pairs = after.get("rmserve_batch_size_sum", 0.0) - before.get("rmserve_batch_size_sum", 0.0)
    return result(concurrency, items_per_request, loop.done, start, end, pairs / batches if batches else None)


def result(
    concurrency: int, items_per_request: int, done: list[tuple[float, float, bool]], start: Mark, end: Mark,
    mean_batch_pairs: float | None,
) -> FrontendResult:
    inside = [(s, f, ok) for s, f, ok in done if start.wall_s <= f <= end.wall_s]
    latencies_ms = sorted((f - s) * 1000 for s, f, ok in inside if ok)
    span_s = end.wall_s - start.wall_s
    both = start.server_ticks.keys() & end.server_ticks.keys()
    server_s = sum(end.server_ticks[k] - start.server_ticks[k] for k in both) / CLK_TCK
    client_s = end.client_cpu_s - start.client_cpu_s
    requests = len(latencies_ms)
    items = requests * items_per_request
    return FrontendResult(
        concurrency=concurrency, requests=requests, items=items, errors=len(inside) - requests,
        window_s=span_s, requests_per_s=requests / span_s, items_per_s=items / span_s,
        p50_ms=percentile(latencies_ms, 50), p99_ms=percentile(latencies_ms, 99),
        server_cpu_ms_per_request=1000 * server_s / requests if requests else float("nan"),
        server_cpu_ms_per_item=1000 * server_s / items if items else float("nan"),
        server_cpu_pct=100 * server_s / span_s, client_cpu_pct=100 * client_s / span_s,
        other_cpu_pct=100 * (end.machine_busy_s - start.machine_busy_s - server_s - client_s) / span_s,
        server_processes=len(both),
        processes_changed=len(start.server_ticks.keys() ^ end.server_ticks.keys()),
        mean_batch_pairs=mean_batch_pairs,
    )


def part_command(
    part: str, port: int, model: Path, args: argparse.Namespace, tmp: Path, workers_flag: bool = True
) -> list[str]:
    if part == "naive":
        return [sys.executable, str(REPO_ROOT / "benchmarks" / "naive_server.py"), "--model", str(model),
                "--port", str(port), "--device", args.device, *shlex.split(args.naive_args)]
    count = part.removeprefix("rmserve-")
    workers = ["--api-workers", count] if workers_flag and part.startswith("rmserve-") else []
    return serve_command("--model", f"tiny={model}", "--device", args.device, *workers,
                         *shlex.split(args.server_args), port=port, store=tmp / "store")


def bench_part(
    part: str, model: Path, workloads: list[Workload], args: argparse.Namespace, tmp: Path,
    workers_flag: bool = True,
) -> tuple[dict[str, list[FrontendResult]], dict[str, Any]]:
    """Start one server, run every workload at every concurrency against it, stop it."""
    port = free_port()
    command = part_command(part, port, model, args, tmp, workers_flag)
    print(f"\n[{part}] {shlex.join(command)}", flush=True)
    results: dict[str, list[FrontendResult]] = {}
    extra: dict[str, Any] = {"command": command}
    with server_process(command, port, tmp / f"{part}.log", timeout_s=STARTUP_TIMEOUT_S) as pid:
        for workload in workloads:
            shape = SHAPES[workload.name]
            bodies = request_bodies(workload, shape.items_per_request)
            results[workload.name] = []
            for concurrency in args.concurrency:
                r = asyncio.run(run_load(
                    f"http://{LOOPBACK}:{port}", bodies, concurrency, pid, warmup_s=args.warmup_s,
                    duration_s=args.duration_s, items_per_request=shape.items_per_request,
                    has_metrics=part != "naive"))
                print(f"  {workload.name:10} c={concurrency:<3} {r.requests_per_s:7.1f} req/s "
                      f"{r.server_cpu_ms_per_request:6.2f} cpu ms/req  p50 {r.p50_ms:6.1f} ms  "
                      f"errors {r.errors}  procs {r.server_processes}", flush=True)
                results[workload.name].append(r)
            if args.py_spy and workload.name == PROFILED_WORKLOAD and part != "naive":
                extra["py_spy"] = profiled_run(part, pid, port, bodies, args)
    return results, extra


def run_part(
    part: str, model: Path, workloads: list[Workload], args: argparse.Namespace, tmp: Path,
) -> tuple[dict[str, list[FrontendResult]], dict[str, Any]]:
    """bench_part; a server without --api-workers still measures rmserve-1, as plain `rmserve serve`."""
    try:
        return bench_part(part, model, workloads, args, tmp)
    except RuntimeError as error:
        if part != "rmserve-1" or "api-workers" not in str(error):
            raise
        print(f"[{part}] this rmserve has no --api-workers; measuring it without the flag", flush=True)
        results, extra = bench_part(part, model, workloads, args, tmp, workers_flag=False)
        return results, {**extra, "note": "--api-workers rejected; run without it"}


def profiled_run(part: str, pid: int, port: int, bodies: list[bytes], args: argparse.Namespace) -> dict:
    """An extra, unreported window under py-spy (its sampling costs the server CPU), at the first
    concurrency; its collapsed stacks are saved next to --out."""
    out_dir = args.out.parent if args.out else Path.cwd()
    collapsed = out_dir / f"{args.out.stem if args.out else 'frontend'}-{part}-{PROFILED_WORKLOAD}.collapsed"
    spy = profile(pid, args.py_spy, collapsed)
    if spy is None:
        return {"error": "py-spy could not attach"}
    asyncio.run(run_load(f"http://{LOOPBACK}:{port}", bodies, args.concurrency[0], pid, warmup_s=0,
                         duration_s=args.py_spy + 1, items_per_request=1, has_metrics=False))
    spy.wait(timeout=args.py_spy + 60)
    if spy.returncode != 0 or not collapsed.is_file():
        print(f"  py-spy exited {spy.returncode} without a profile", flush=True)
        return {"error": f"py-spy exited {spy.returncode}"}
    functions, processes, idle = self_samples(collapsed)
    busy = sum(functions.values())
    print(f"  top {TOP_FUNCTIONS} functions by busy self samples ({busy} busy, {idle} idle, {collapsed}):")
    for name, n in functions.most_common(TOP_FUNCTIONS):
        print(f"    {n:7d} {100 * n / busy:5.1f}%  {name}")
    print("  busy samples by process: " + "  ".join(f"{p} {n}" for p, n in processes.most_common()))
    return {"file": str(collapsed), "busy_samples": busy, "idle_samples": idle,
            "top": functions.most_common(TOP_FUNCTIONS), "by_process": dict(processes)}


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {"cpu_model": models[0] if models else platform.processor(), "cpuinfo_processors": len(models),
            "os_cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": args.device}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="rmserve-1,rmserve-2,naive", type=lambda s: s.split(","),
                        help="servers, one after another: rmserve-N (N API workers), rmserve, naive")
    parser.add_argument("--workloads", default=",".join(SHAPES), type=lambda s: s.split(","))
    parser.add_argument("--concurrency", default="32", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="load before each window")
    parser.add_argument("--device", default="cpu", help="of both servers; the front end is what's measured")
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags, e.g. '--threads 1'")
    parser.add_argument("--naive-args", default="", help="extra naive_server.py flags")
    parser.add_argument("--model-dir", type=Path, help="build the tiny model here (default: a temp dir)")
    parser.add_argument("--py-spy", type=float, metavar="SECONDS",
                        help="profile each rmserve part this long under the pair230 workload")
    parser.add_argument("--out", "--json", type=Path, help="write every number here (JSON)")
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts
               if p not in ("rmserve", "naive") and not p.removeprefix("rmserve-").isdigit()]
    unknown += [w for w in args.workloads if w not in SHAPES]
    if unknown:
        parser.error(f"unknown parts or workloads: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SystemExit unwinds through the `finally` that stops the server; plain SIGTERM would not.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    host = machine(args)
    print(f"{host['cpu_model']}, {host['cpuinfo_processors']} processors in /proc/cpuinfo, "
          f"os.cpu_count {host['os_cpu_count']}, torch {host['torch']}, {args.device}")
    with tempfile.TemporaryDirectory(prefix="rmserve-frontend-") as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_model(args.model_dir or tmp / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(model)
        workloads = [build_workload(SHAPES[name], tokenizer) for name in args.workloads]
        for w in workloads:
            print(f"workload {w.name}: {SHAPES[w.name].items_per_request} item(s) per request, "
                  f"mean {w.mean_tokens:.1f} tokens per item")
        parts: dict[str, dict[str, list[FrontendResult]]] = {}
        extras: dict[str, Any] = {}
        for part in args.parts:
            try:
                parts[part], extras[part] = run_part(part, model, workloads, args, tmp)
            except (RuntimeError, TimeoutError) as error:  # a server that would not start
                print(f"[{part}] FAILED: {str(error)[-1500:]}", flush=True)
                extras[part] = {"error": str(error)[-3000:]}
    summary = {w.name: report(w, parts) for w in workloads}
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({
            "command": [sys.executable, *sys.argv],
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": host,
            "workloads": {w.name: {**asdict(SHAPES[w.name]), "mean_tokens": w.mean_tokens,
                                   "median_tokens": statistics.median(w.tokens), "ratios": summary[w.name],
                                   "parts": {p: [asdict(r) for r in per.get(w.name, [])]
                                             for p, per in parts.items()}}
                          for w in workloads},
            "parts": extras,
        }, indent=2))
    return 0 if len(parts) == len(args.parts) else 1


if __name__ == "__main__":
    sys.exit(main())

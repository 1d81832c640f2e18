"""Load benchmark: rmserve vs a naive per-request server vs the raw offline forward, one machine.

    python benchmarks/load.py [--model REF] [--concurrency 1,8,32,64] [--duration-s 10]
                              [--workload mixed,short] [--device cpu|cuda] [--dtype D]
                              [--server-args "..."] [--json OUT]

For each workload it measures (1) the model's forward pass run offline with transformers
(length-sorted batches of 1/8/32/64 and unsorted batches of 64; the best is the ceiling a server
on this machine could reach), (2) `rmserve serve` and (3) benchmarks/naive_server.py under a
closed-loop HTTP load at each concurrency, one pair per request (`--pairs-per-request` for more:
a trainer's batch of rollouts). Servers are started here on 127.0.0.1 and stopped at the end.
Workloads:
  mixed  hh-rlhf harmless-base test transcripts (../shared/data, relative to the repo root), split
         into prompt = up to and including the last "\\n\\nAssistant:", response = the reply after
         it; synthetic text of a similar length spread when the file is absent.
  short  synthetic ~40-token pairs, where per-request overheads dominate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import torch
from hh_rlhf import ASSISTANT, HH_DATA, preference_rows, split_transcript
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model_store.store import DEFAULT_STORE, ModelStore
from service.loading import locate_model

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_SHAPES = (("sorted", 1), ("sorted", 8), ("sorted", 32), ("sorted", 64), ("unsorted", 64))
# The team's targets at the highest concurrency (2-core CPU, MiniLM): (workload, versus, ratio).
TARGETS = (("mixed", "offline", 0.85), ("mixed", "naive", 1.3), ("short", "naive", 1.5))
WORDS = (
    "the a to of and in is it you that for on with as can be this are your have or not will from "
    "what how do if about more when they one would which there their make like time just know "
    "people good some could them see other than then now look only come its over think also back "
    "after use two work first well way even new want because any these give day most us water "
    "should plant dog house money friend question answer help cook learn travel doctor music "
    "garden recipe weather history science computer language family school reason problem idea"
).split()


@dataclass(frozen=True)
class Workload:
    """Pairs to score, in the random order requests send them, with their token counts."""

    name: str
    source: str
    pairs: list[tuple[str, str]]
    tokens: list[int]

    @property
    def mean_tokens(self) -> float:
        return statistics.fmean(self.tokens)


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


# ---- workloads -------------------------------------------------------------------------------


def hh_pairs(path: Path) -> list[tuple[str, str]]:
    return [split_transcript(row[key]) for row in preference_rows(path) for key in ("chosen", "rejected")]


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, count)))


def synthetic_mixed_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    # Log-normal word counts near hh-rlhf harmless-base (tokens: mean 160, p10 40, p90 340);
    # these give mean 150, p10 60, p90 280 with MiniLM's tokenizer.
    return [
        (f"Human: {words(rng, int(rng.lognormvariate(4.35, 0.85)))}{ASSISTANT}",
         words(rng, int(rng.lognormvariate(3.45, 0.8))))
        for _ in range(n)
    ]


def short_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(words(rng, rng.randint(15, 21)), words(rng, rng.randint(13, 19))) for _ in range(n)]


def build_workload(name: str, tokenizer: Any, data: Path, n: int, max_length: int) -> Workload:
    rng = random.Random(f"rmserve-load/{name}")
    if name == "short":
        pairs, source = short_pairs(rng, n), "synthetic"
    elif data.is_file():
        pairs, source = rng.sample(hh_pairs(data), n), f"hh-rlhf ({data.name})"
    else:
        pairs, source = synthetic_mixed_pairs(rng, n), "synthetic (hh-rlhf file absent)"
    encoded = tokenizer([p for p, _ in pairs], [r for _, r in pairs], truncation=False, verbose=False)
    tokens = [min(len(ids), max_length) for ids in encoded["input_ids"]]
    return Workload(name, source, pairs, tokens)


# ---- offline forward -------------------------------------------------------------------------


def offline_throughput(
    model: torch.nn.Module, rows: list[dict[str, list[int]]], batch_size: int, *, sort: bool,
    cap_s: float,
) -> float:
    """Pairs/s of padded forward passes over `rows`; tokenisation is not timed."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"])) if sort else list(
        range(len(rows)))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # A random batch order makes the time cap cut a fair sample instead of the longest batches.
    random.Random(batch_size).shuffle(batches)
    # An untimed pass first: the first run of each shape pays for kernel selection (on GPU, a lot).
    warm_until = time.perf_counter() + cap_s
    for batch in batches:
        forward(model, [rows[i] for i in batch])
        if time.perf_counter() > warm_until:
            break
    started, done = time.perf_counter(), 0
    for batch in batches:
        forward(model, [rows[i] for i in batch])
        done += len(batch)
        if time.perf_counter() - started > cap_s:
            break
    return done / (time.perf_counter() - started)


def forward(model: torch.nn.Module, rows: list[dict[str, list[int]]]) -> torch.Tensor:
    width = max(len(r["input_ids"]) for r in rows)
    pad_id = model.config.pad_token_id or 0
    tensors = {key: torch.full((len(rows), width), pad_id if key == "input_ids" else 0,
                               dtype=torch.long) for key in rows[0]}
    for i, row in enumerate(rows):
        for key, values in row.items():
            tensors[key][i, : len(values)] = torch.tensor(values)
    with torch.inference_mode():
        logits = model(**{k: v.to(model.device) for k, v in tensors.items()}).logits[:, 0]
        return logits.float().cpu()  # waits for the GPU, so the timing is honest


def run_offline(
    folder: Path, workload: Workload, n: int, max_length: int, cap_s: float, device: str, dtype: str
) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.backends.cuda.enable_cudnn_sdp(False)  # as rmserve does: see TorchBackend.load
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=getattr(torch, dtype), device_map=device
    ).eval()
    pairs = workload.pairs[:n]
    encoded = tokenizer([p for p, _ in pairs], [r for _, r in pairs], truncation=True,
                        max_length=max_length, verbose=False)
    rows = [dict(zip(encoded.keys(), values, strict=True)) for values in zip(*encoded.values(),
                                                                              strict=True)]
    return {
        f"{order}_{size}": offline_throughput(model, rows, size, sort=order == "sorted", cap_s=cap_s)
        for order, size in OFFLINE_SHAPES
    }


# ---- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(command: list[str], port: int, log: Path, timeout_s: float = 300):
    """Start a server, wait for GET /readyz, yield its pid; always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz", proc, timeout_s, log))
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s; log: {log}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all processes spent busy, over all cores (Linux)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Sum each sample name over its label sets."""
    async with session.get(url) as resp:
        text = await resp.text()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


# ---- load ------------------------------------------------------------------------------------


async def run_load(
    base_url: str, bodies: list[bytes], concurrency: int, *, pid: int, warmup_s: float,
    duration_s: float, max_requests: int, has_metrics: bool, pairs_per_request: int,
) -> LoadResult:
    """Closed loop: `concurrency` clients each send one request after another.

    Only requests that finish inside the window (after the warm-up) count, so the queue is in
    steady state; in-flight requests then drain before the next measurement.
    """
    done: list[tuple[float, float, bool]] = []  # (sent, finished, ok)
    stop, full = asyncio.Event(), asyncio.Event()
    window: list[float] = []
    next_body = iter(range(10**9))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    # Scrapes get their own connection: they must not queue behind the load's requests.
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
            aiohttp.ClientSession(timeout=timeout) as scraper:

        async def client() -> None:
            while not stop.is_set():
                body = bodies[next(next_body) % len(bodies)]
                sent, ok = time.perf_counter(), False
                try:
                    async with session.post(f"{base_url}/v1/score", data=body,
                                            headers={"content-type": "application/json"}) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    pass  # counted as an error below
                done.append((sent, time.perf_counter(), ok))
                if window and len(done) - window[1] >= max_requests:
                    full.set()

        clients = [asyncio.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        before = await scrape(scraper, f"{base_url}/metrics") if has_metrics else {}
        window[:] = [time.perf_counter(), len(done), time.process_time(), cpu_seconds(pid),
                     machine_busy_seconds()]
        with suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), duration_s)
        ended, cpu_client, cpu_server = time.perf_counter(), time.process_time(), cpu_seconds(pid)
        cpu_machine = machine_busy_seconds()
        after = await scrape(scraper, f"{base_url}/metrics") if has_metrics else {}
        stop.set()
        await asyncio.gather(*clients)
    started = window[0]
    inside = [(s, f, ok) for s, f, ok in done if started <= f <= ended]
    latencies_ms = sorted((f - s) * 1000 for s, f, ok in inside if ok)
    span_s = ended - started
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = delta.get("rmserve_batch_size_count", 0.0)
    padded = delta.get("rmserve_batch_tokens_sum", 0.0)
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
        client_cpu_pct=100 * (cpu_client - window[2]) / span_s,
        server_cpu_pct=100 * (cpu_server - window[3]) / span_s,
        other_cpu_pct=100 * (cpu_machine - window[4] - (cpu_client - window[2])
                             - (cpu_server - window[3])) / span_s,
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(pct / 100 * len(sorted_values)))]


def bench_server(
    name: str, command: list[str], port: int, workloads: list[Workload], args: argparse.Namespace,
    log_dir: Path,
) -> dict[str, list[LoadResult]]:
    results: dict[str, list[LoadResult]] = {}
    print(f"\n[{name}] {shlex.join(command)}", flush=True)
    with server_process(command, port, log_dir / f"{name}.log") as pid:
        for workload in workloads:
            size = args.pairs_per_request
            chunks = [workload.pairs[i : i + size] for i in range(0, len(workload.pairs), size)]
            bodies = [json.dumps({"inputs": [{"prompt": p, "response": r} for p, r in chunk]}).encode()
                      for chunk in chunks if len(chunk) == size]
            results[workload.name] = []
            for concurrency in args.concurrency:
                result = asyncio.run(run_load(
                    f"http://127.0.0.1:{port}", bodies, concurrency, pid=pid,
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


# ---- report ----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(workload: Workload, offline: dict[str, float], servers: dict[str, list[LoadResult]]) -> dict:
    best = max(offline.values()) if offline else None
    naive = {r.concurrency: r for r in servers.get("naive", [])}
    print(f"\n== {workload.name}: {len(workload.pairs)} pairs, {workload.source}, "
          f"mean {workload.mean_tokens:.1f} tokens (median {statistics.median(workload.tokens):.0f}, "
          f"max {max(workload.tokens)})")
    if offline:
        print("offline forward, pairs/s: " + "  ".join(f"{k} {v:.1f}" for k, v in offline.items())
              + f"  | best {best:.1f}")
    print(f"{'server':8} {'conc':>4} {'req/s':>7} {'pairs/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'batch':>6} {'pad %':>6} {'cpu% srv/cli/other':>18} {'/offline':>8} {'/naive':>7}")
    ratios: dict[str, dict[int, float | None]] = {"offline": {}, "naive": {}}
    for name, results in servers.items():
        for r in results:
            vs_offline = r.pairs_per_s / best if best else None
            vs_naive = r.pairs_per_s / naive[r.concurrency].pairs_per_s if (
                name == "rmserve" and r.concurrency in naive) else None
            if name == "rmserve":
                ratios["offline"][r.concurrency], ratios["naive"][r.concurrency] = vs_offline, vs_naive
            padding = None if r.padding_fraction is None else 100 * r.padding_fraction
            cpu = f"{r.server_cpu_pct:.0f}/{r.client_cpu_pct:.0f}/{r.other_cpu_pct:.0f}"
            print(f"{name:8} {r.concurrency:>4} {r.throughput_rps:>7.1f} {r.pairs_per_s:>7.1f} "
                  f"{r.p50_ms:>7.0f} "
                  f"{r.p95_ms:>7.0f} {r.p99_ms:>7.0f} {fmt(r.mean_batch_pairs, '6.1f'):>6} "
                  f"{fmt(padding, '6.1f'):>6} {cpu:>18} "
                  f"{fmt(vs_offline, '7.2f'):>8} {fmt(vs_naive, '6.2f'):>7}")
    return {"ratios": ratios, "offline_best": best}


def check_targets(summary: dict[str, dict], concurrency: int) -> list[dict]:
    checks = []
    for workload, versus, target in TARGETS:
        ratio = summary.get(workload, {}).get("ratios", {}).get(versus, {}).get(concurrency)
        if ratio is None:
            continue
        verdict = "met" if ratio >= target else "MISSED"
        print(f"target {workload} c={concurrency} rmserve/{versus} >= {target}: {ratio:.2f} {verdict}")
        checks.append({"workload": workload, "versus": versus, "target": target, "ratio": ratio,
                       "met": ratio >= target})
    return checks


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-minilm-rm", help="store NAME[:VERSION] or HF folder")
    parser.add_argument("--store", type=Path,
                        default=Path(os.environ.get("RMSERVE_STORE", DEFAULT_STORE)).expanduser())
    parser.add_argument("--concurrency", default="1,8,32,64",
                        type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="load before each window")
    parser.add_argument("--max-requests", type=int, default=5000, help="per window")
    parser.add_argument("--workload", default="mixed,short", type=lambda s: s.split(","))
    parser.add_argument("--parts", default="offline,rmserve,naive", type=lambda s: s.split(","),
                        help="what to measure")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of all three: offline, rmserve, naive")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="weights dtype of all three; default float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags")
    parser.add_argument("--naive-args", default="", help="extra naive_server.py flags")
    parser.add_argument("--pairs-per-request", type=int, default=1,
                        help="pairs in each request (a trainer sends hundreds; best-of-n a few)")
    parser.add_argument("--pairs", type=int, default=2000, help="distinct pairs per workload")
    parser.add_argument("--offline-pairs", type=int, default=256, help="pairs per offline shape")
    parser.add_argument("--offline-cap-s", type=float, default=10.0, help="time cap per shape")
    parser.add_argument("--data", type=Path, default=HH_DATA, help="hh-rlhf .jsonl.gz")
    parser.add_argument("--json", type=Path, help="write all results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    # SystemExit unwinds through the `finally` that stops the servers; plain SIGTERM would not.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    source = locate_model(args.model, ModelStore(args.store))
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    workloads = [build_workload(w, tokenizer, args.data, args.pairs, source.max_length)
                 for w in args.workload]
    print(f"model {args.model} ({source.path}), max_length {source.max_length}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.device} {args.dtype}" + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu"
                                           else ""))
    offline: dict[str, dict[str, float]] = {}
    if "offline" in args.parts:
        for workload in workloads:
            wall_s, own_s, busy_s = time.perf_counter(), time.process_time(), machine_busy_seconds()
            offline[workload.name] = run_offline(
                source.path, workload, args.offline_pairs, source.max_length, args.offline_cap_s,
                args.device, args.dtype,
            )
            wall_s, own_s = time.perf_counter() - wall_s, time.process_time() - own_s
            other_pct = 100 * (machine_busy_seconds() - busy_s - own_s) / wall_s
            print(f"[offline] {workload.name}: " + ", ".join(
                f"{k} {v:.1f}/s" for k, v in offline[workload.name].items())
                + f"  (other cpu {other_pct:.0f}%)", flush=True)
    servers: dict[str, dict[str, list[LoadResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="rmserve-load-") as tmp:
        if "rmserve" in args.parts:
            port = free_port()
            command = [sys.executable, "-m", "service.cli", "serve", "--model", args.model,
                       "--store", str(args.store), "--host", "127.0.0.1", "--port", str(port),
                       "--grpc-port", "0", "--device", args.device, "--dtype", args.dtype,
                       *shlex.split(args.server_args)]
            servers["rmserve"] = bench_server("rmserve", command, port, workloads, args, Path(tmp))
        if "naive" in args.parts:
            port = free_port()
            command = [sys.executable, str(REPO_ROOT / "benchmarks" / "naive_server.py"),
                       "--model", str(source.path), "--port", str(port),
                       "--device", args.device, "--dtype", args.dtype, *shlex.split(args.naive_args)]
            servers["naive"] = bench_server("naive", command, port, workloads, args, Path(tmp))
    summary = {
        w.name: report(w, offline.get(w.name, {}),
                       {name: per[w.name] for name, per in servers.items()})
        for w in workloads
    }
    print()
    checks = check_targets(summary, max(args.concurrency))
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "device": args.device,
                        "dtype": args.dtype,
                        "gpu": torch.cuda.get_device_name() if args.device != "cpu" else None},
            "workloads": {w.name: {
                "source": w.source, "pairs": len(w.pairs), "mean_tokens": w.mean_tokens,
                "offline_pairs_per_s": offline.get(w.name, {}), **summary[w.name],
                "servers": {n: [asdict(r) for r in per[w.name]] for n, per in servers.items()},
            } for w in workloads},
            "targets": checks,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

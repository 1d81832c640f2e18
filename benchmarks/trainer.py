"""Trainer-scale scoring (issue 18): a whole rollout batch in one request, beside the offline best.

    python benchmarks/trainer.py [--sizes 1024,8192,32768] [--workloads mixed,long] [--model REF]
                                 [--device cpu|cuda] [--dtype D] [--threads T] [--json OUT]

For each workload and size N, in one process: (1) the raw offline forward at its best (all N items
tokenised once, length-sorted, at the batch size a time-capped sweep found fastest, all N timed at
it), then (2) a fresh `rmserve serve` on 127.0.0.1 answering one POST /v1/score of all N items
(body serialised before the clock starts). Reported: items/s and their ratio, padding (served from
/metrics, offline from its batches), the server's CPU s per 1,000 items (its process tree), its
peak RSS, and how far its rewards are from the offline ones (items neither side truncates).
  mixed  (prompt, response) pairs from hh-rlhf harmless-base test (../shared/data; synthetic when
         absent), drawn with replacement once N exceeds the file's 4,624 pairs.
  long   1-2k-token items: hh transcripts in front of a final prompt. The demo model (MiniLM) reads
         512 tokens, so the server truncates them all; use a 2k-context decoder for these
         (benchmarks/make_decoder_rm.py, then --model OUT).
Every item is distinct (a pair drawn again has its response's words shuffled): the server computes
identical rows once, which the offline forward does not, so repeats would flatter it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
import trainer_report as report
from harness import LOOPBACK, free_port, metric_sums, serve_command, server_process
from hh_rlhf import HH_DATA
from loadgen import machine_busy_seconds
from offline import forward
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from workload import Workload, hh_pairs, synthetic_mixed_pairs

from model_store.demo.build import DEMO_MODEL, build_demo
from model_store.store import DEFAULT_STORE, ModelStore
from service.loading import locate_model

LONG_TOKENS = (1024, 2048)
LONG_MARGIN = 64  # aim inside the range: a concatenation's count is only estimated from its parts
MAX_PIECES = 64  # transcripts tried per long item
MAX_RESHUFFLES = 8
# From 1 row on CPU: items of 1-2k tokens already fill its 2,048-token budget alone.
BATCH_SIZES = {"cpu": (1, 2, 4, 8, 16, 32, 64, 128), "gpu": (16, 32, 64, 128, 256, 512)}
# The limits a whole rollout batch needs (the new defaults of issue 18), passed explicitly.
SERVER_LIMITS = ("--max-inputs-per-request", "65536", "--max-body-bytes", "268435456")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=ints, default=[1024, 8192, 32768], help="items per request")
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["mixed", "long"])
    parser.add_argument("--model", help=f"store NAME[:VERSION] or HF folder; default {DEMO_MODEL}")
    parser.add_argument("--store", type=Path,
                        default=Path(os.environ.get("RMSERVE_STORE", DEFAULT_STORE)).expanduser())
    parser.add_argument("--device", default="cpu", help="of both the offline forward and the server")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="of both; default float32 on CPU, bfloat16 otherwise")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of both; 0 = all cores")
    parser.add_argument("--data", type=Path, default=HH_DATA, help="hh-rlhf .jsonl.gz")
    parser.add_argument("--offline-cap-s", type=float, default=5.0,
                        help="time cap per batch size in the sweep (warm-up and timing each)")
    parser.add_argument("--offline-batch-sizes", type=ints, help="the sweep's batch sizes")
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags (last: they win)")
    parser.add_argument("--port", type=int, default=0, help="the server's port; 0 = a free one")
    parser.add_argument("--request-timeout-s", type=float, default=3600.0)
    parser.add_argument("--startup-timeout-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write all figures here")
    return parser.parse_args(argv)


def distinct(pairs: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """The pairs, each one seen before given a reshuffled response (a suffix if that cannot help)."""
    seen: set[tuple[str, str]] = set()
    for index, (prompt, response) in enumerate(pairs):
        item, words = (prompt, response), response.split()
        for _ in range(MAX_RESHUFFLES):
            if item not in seen:
                break
            rng.shuffle(words)
            item = (prompt, " ".join(words))
        if item in seen:
            item = (prompt, f"{response} [{index}]")
        seen.add(item)
        pairs[index] = item
    return pairs


def long_pairs(pool: list[tuple[str, str]], counts: list[int], specials: int, n: int,
               rng: random.Random) -> list[tuple[str, str]]:
    """Items of 1-2k tokens: random transcripts in front of a final (prompt, response), added while
    the estimated count (the parts' counts, less their special tokens) stays in range."""
    low, high = LONG_TOKENS[0] + LONG_MARGIN, LONG_TOKENS[1] - LONG_MARGIN
    items = []
    for _ in range(n):
        target, last = rng.randint(low, high), rng.randrange(len(pool))
        pieces, total = [], counts[last]
        for _ in range(MAX_PIECES):
            if total >= target:
                break
            j = rng.randrange(len(pool))
            if total + counts[j] - specials <= high:
                pieces.append(j)
                total += counts[j] - specials
        history = "".join(f"{pool[j][0]} {pool[j][1]}" for j in pieces)
        items.append((history + pool[last][0], pool[last][1]))
    return items


def build_items(name: str, tokenizer: Any, data: Path, n: int) -> Workload:
    """`n` distinct items of a workload, with their token counts before any truncation."""
    rng = random.Random(f"rmserve-trainer/{name}")
    pool, source = (hh_pairs(data), f"hh-rlhf ({data.name})") if data.is_file() else (
        synthetic_mixed_pairs(rng, 4624), "synthetic (hh-rlhf file absent)")
    if name == "long":
        counts = token_counts(tokenizer, pool)
        pairs = long_pairs(pool, counts, tokenizer.num_special_tokens_to_add(pair=True), n, rng)
    elif name == "mixed":
        pairs = rng.sample(pool, n) if n <= len(pool) else rng.choices(pool, k=n)
    else:
        raise SystemExit(f"unknown workload {name!r}: mixed or long")
    pairs = distinct(pairs, rng)
    return Workload(name, source, pairs, token_counts(tokenizer, pairs))


def token_counts(tokenizer: Any, pairs: list[tuple[str, str]], chunk: int = 1024) -> list[int]:
    """Untruncated counts, a chunk at a time: 32,768 long items' ids at once would take GiBs."""
    counts: list[int] = []
    for k in range(0, len(pairs), chunk):
        part = pairs[k : k + chunk]
        encoded = tokenizer([p for p, _ in part], [r for _, r in part], truncation=False, verbose=False)
        counts.extend(len(ids) for ids in encoded["input_ids"])
    return counts


def encode_rows(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> list[dict[str, list[int]]]:
    """Tokenised once, as the server does for text pairs (truncated to the model's length)."""
    encoded = tokenizer([p for p, _ in pairs], [r for _, r in pairs], truncation=True,
                        max_length=max_length, verbose=False)
    return [dict(zip(encoded.keys(), values, strict=True)) for values in zip(*encoded.values(), strict=True)]


def load_model(folder: Path, device: str, dtype: str) -> torch.nn.Module:
    torch.backends.cuda.enable_cudnn_sdp(False)  # as rmserve does: see TorchBackend.load
    return AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=getattr(torch, dtype), device_map=device).eval()


Rows = list[dict[str, list[int]]]


def sorted_batches(rows: Rows, size: int) -> list[list[int]]:
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    return [order[k : k + size] for k in range(0, len(order), size)]


def padded_tokens(rows: Rows, batch: list[int]) -> int:
    return len(batch) * max(len(rows[i]["input_ids"]) for i in batch)


def estimate_s(model: torch.nn.Module, rows: Rows, batches: list[list[int]], cap_s: float) -> float:
    """Seconds all `batches` would take, from a random sample of them run within `cap_s` (after
    as long an untimed pass, for first-shape costs), scaled by padded tokens: a sample of a few
    batches is not representative in items, since long batches take most of the time."""
    shuffled = random.Random(len(batches[0])).sample(batches, len(batches))
    run_for(model, rows, shuffled, cap_s)
    elapsed_s, done = run_for(model, rows, shuffled, cap_s)
    return elapsed_s * sum(padded_tokens(rows, b) for b in batches) / done


def run_for(model: torch.nn.Module, rows: Rows, batches: list[list[int]], cap_s: float) -> tuple[float, int]:
    """Forward passes over `batches` in order until `cap_s` is spent: seconds, padded tokens done."""
    started, done = time.perf_counter(), 0
    for batch in batches:
        forward(model, [rows[i] for i in batch])
        done += padded_tokens(rows, batch)
        if time.perf_counter() - started > cap_s:
            break
    return time.perf_counter() - started, done


def offline_best(model: torch.nn.Module, rows: Rows, batch_sizes: list[int], cap_s: float) -> dict[str, Any]:
    """The sweep over batch sizes (each estimated within `cap_s`), then all rows timed at the best,
    with how busy the rest of the machine was meanwhile."""
    sweep: dict[int, float | None] = {}
    for size in batch_sizes:
        try:
            sweep[size] = len(rows) / estimate_s(model, rows, sorted_batches(rows, size), cap_s)
        except torch.cuda.OutOfMemoryError:
            sweep[size] = None
            torch.cuda.empty_cache()
    best = max((s for s in sweep if sweep[s] is not None), key=lambda s: sweep[s] or 0.0)
    batches, rewards = sorted_batches(rows, best), [0.0] * len(rows)
    busy_s, own_s, started = machine_busy_seconds(), time.process_time(), time.perf_counter()
    for batch in batches:
        for i, reward in zip(batch, forward(model, [rows[i] for i in batch]).tolist(), strict=True):
            rewards[i] = reward
    wall_s = time.perf_counter() - started
    other_s = machine_busy_seconds() - busy_s - (time.process_time() - own_s)
    padded = sum(padded_tokens(rows, b) for b in batches)
    return {"items_per_s": len(rows) / wall_s, "wall_s": wall_s, "batch_size": best,
            "padding_fraction": 1 - sum(len(r["input_ids"]) for r in rows) / padded,
            "other_cpu_pct": 100 * other_s / wall_s, "sweep_items_per_s": sweep, "rewards": rewards}


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    model = ["--model", args.model] if args.model else []
    threads = ["--threads", str(args.threads)] if args.threads else []
    return serve_command(*model, "--backend", "torch", "--device", args.device, "--dtype", args.dtype,
                         *threads, *SERVER_LIMITS, *shlex.split(args.server_args), port=port,
                         store=args.store)


def serve_once(args: argparse.Namespace, pairs: list[tuple[str, str]], log: Path) -> dict[str, Any]:
    """A fresh server, one request of all `pairs`, and what it cost the server."""
    body = json.dumps({"inputs": [{"prompt": p, "response": r} for p, r in pairs]}).encode()
    port = args.port or free_port()
    url = f"http://{LOOPBACK}:{port}"
    with server_process(server_command(args, port), port, log, timeout_s=args.startup_timeout_s) as pid:
        idle_rss, before = report.status_mib(pid, "VmRSS"), metric_sums(url)
        cpu_s, busy_s, own_s = report.tree_cpu_s(pid), machine_busy_seconds(), time.process_time()
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/score", content=body, timeout=args.request_timeout_s,
                              headers={"content-type": "application/json"})
        wall_s = time.perf_counter() - started
        cpu_s, own_s = report.tree_cpu_s(pid) - cpu_s, time.process_time() - own_s
        busy_s = machine_busy_seconds() - busy_s
        peak_rss, after = report.status_mib(pid, "VmHWM"), metric_sums(url)
    if response.status_code != 200:
        raise RuntimeError(f"{len(pairs)} items: HTTP {response.status_code}: {response.text[:600]}")
    if len(rewards := response.json()["rewards"]) != len(pairs):
        raise RuntimeError(f"{len(pairs)} items sent, {len(rewards)} rewards back")
    return {"items_per_s": len(pairs) / wall_s, "wall_s": wall_s, "body_mib": len(body) / 2**20,
            "rewards": rewards,
            "cpu_s": cpu_s, "cpu_s_per_1k": cpu_s / (len(pairs) / 1000), "rss_idle_mib": idle_rss,
            "rss_peak_mib": peak_rss, "rss_growth_mib": peak_rss - idle_rss,
            "other_cpu_pct": 100 * (busy_s - cpu_s - own_s) / wall_s,
            "padding": report.served_padding(before, after)}


def measure(args: argparse.Namespace, source: Any, tokenizer: Any, tmp: Path) -> tuple[list, dict]:
    """Every workload at every size: the offline best, then the server, side by side."""
    model = load_model(source.path, args.device, args.dtype)
    sizes = args.offline_batch_sizes or BATCH_SIZES["cpu" if args.device == "cpu" else "gpu"]
    rows, described = [], {}
    for name in args.workloads:
        items = build_items(name, tokenizer, args.data, max(args.sizes))
        described[name] = report.describe(items, source.max_length)
        encoded = encode_rows(tokenizer, items.pairs, source.max_length)
        for n in args.sizes:
            offline = offline_best(model, encoded[:n], sizes, args.offline_cap_s)
            served = serve_once(args, items.pairs[:n], tmp / f"server-{name}-{n}.log")
            whole = [i for i in range(n) if items.tokens[i] <= source.max_length]  # cut alike
            offline_rewards, served_rewards = offline.pop("rewards"), served.pop("rewards")
            rows.append({"workload": name, "items": n, "offline": offline, "served": served,
                         "ratio": served["items_per_s"] / offline["items_per_s"],
                         "max_reward_diff": max((abs(served_rewards[i] - offline_rewards[i])
                                                 for i in whole), default=None)})
            report.print_row(rows[-1])
    return rows, described


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    # SystemExit unwinds through the `finally` that stops the server; plain SIGTERM would not.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.threads:
        torch.set_num_threads(args.threads)
    store = ModelStore(args.store)
    if not args.model:
        build_demo(store)  # what `rmserve serve` does without --model: a no-op once it is built
    source = locate_model(args.model or DEMO_MODEL, store)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    host, command = report.machine(args.device, args.dtype), shlex.join([sys.executable, *sys.argv])
    report.print_header(command, host, args.model or DEMO_MODEL, source)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rmserve-trainer-") as tmp:
        rows, described = measure(args, source, tokenizer, Path(tmp))
    report.print_table(rows)
    checks = report.check_targets(rows, args.device)
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        report.write_json(args, command, host, source, described, rows, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())

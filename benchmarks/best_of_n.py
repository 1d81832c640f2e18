"""Best-of-n ranking with and without shared-prompt reuse, the same decoder model, in one run.

    python benchmarks/make_decoder_rm.py /tmp/llama-small --tokenizer smollm2 --size small
    python benchmarks/best_of_n.py --model /tmp/llama-small [--prompt-tokens 1024] [--n 16]
                                   [--response-tokens 64,256] [--requests 8] [--concurrency 4]
                                   [--device cpu|cuda] [--dtype D] [--json OUT]

Each `/v1/rank` request carries one prompt of `--prompt-tokens` tokens and `--n` responses of a
random length within `--response-tokens` (random words, so every request's prompt differs). The
same requests go to `rmserve serve` with prefix sharing (the default) and with
`--no-prefix-sharing`, one server after the other on 127.0.0.1: first one at a time (ranking
latency), then `--concurrency` at once (throughput in candidates per second). Both servers'
rewards are compared, to show the reuse is exact. Bounded by `--requests` per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import torch
from harness import free_port, server_process
from loadgen import cpu_seconds, machine_busy_seconds, percentile
from transformers import AutoTokenizer
from workload import WORDS


def text_of(tokenizer: object, rng: random.Random, tokens: int) -> str:
    """Random words cut to exactly `tokens` tokens (as the tokenizer counts them alone)."""
    words = " ".join(rng.choice(WORDS) for _ in range(tokens))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def rank_bodies(tokenizer: object, args: argparse.Namespace) -> list[bytes]:
    rng = random.Random(0)
    low, high = args.response_tokens
    return [json.dumps({
        "prompt": text_of(tokenizer, rng, args.prompt_tokens),
        "responses": [text_of(tokenizer, rng, rng.randint(low, high)) for _ in range(args.n)],
    }).encode() for _ in range(args.requests)]


async def phase(url: str, bodies: list[bytes], concurrency: int, pid: int) -> dict:
    """Send every body, `concurrency` at once; latency per request, candidates/s overall."""
    latencies: list[float] = []
    rewards: list[list[float]] = []
    queue = list(enumerate(bodies))
    results: dict[int, list[float]] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                index, body = queue.pop(0)
                sent = time.perf_counter()
                async with session.post(f"{url}/v1/rank", data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    reply = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"rank failed ({resp.status}): {reply}")
                latencies.append(time.perf_counter() - sent)
                results[index] = reply["rewards"]

        started, server_cpu, busy = time.perf_counter(), cpu_seconds(pid), machine_busy_seconds()
        own = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        other = machine_busy_seconds() - busy - (cpu_seconds(pid) - server_cpu) - (time.process_time() - own)
    rewards = [results[i] for i in range(len(bodies))]
    candidates = sum(len(r) for r in rewards)
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(bodies), "wall_s": wall,
            "candidates_per_s": candidates / wall, "p50_ms": 1000 * percentile(ordered, 50),
            "mean_ms": 1000 * statistics.fmean(ordered), "max_ms": 1000 * ordered[-1],
            "other_cpu_pct": 100 * other / wall, "rewards": rewards}


def bench(name: str, extra: list[str], bodies: list[bytes], args: argparse.Namespace, log: Path) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--model", f"rm={args.model}",
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0", "--device", args.device,
               "--dtype", args.dtype, "--store", str(log.parent / "store"), *extra]
    with server_process(command, port, log) as pid:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(phase(url, bodies[:1], 1, pid))  # warm-up: first shapes, allocator
        runs = {"latency": asyncio.run(phase(url, bodies, 1, pid)),
                "throughput": asyncio.run(phase(url, bodies, args.concurrency, pid))}
    for kind, run in runs.items():
        print(f"  [{name}] {kind:10} c={run['concurrency']}: p50 {run['p50_ms']:8.0f} ms  "
              f"mean {run['mean_ms']:8.0f} ms  {run['candidates_per_s']:7.1f} candidates/s  "
              f"(other cpu {run['other_cpu_pct']:.0f}%)", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a decoder reward model folder")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--response-tokens", type=lambda s: tuple(map(int, s.split(","))), default=(64, 256))
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    bodies = rank_bodies(tokenizer, args)
    print(f"model {args.model}, {args.device} {args.dtype}, {os.cpu_count()} CPUs, torch {torch.__version__}"
          + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu" else "")
          + f"; {args.requests} ranks of 1 prompt ({args.prompt_tokens} tokens) x {args.n} responses "
          f"({args.response_tokens[0]}-{args.response_tokens[1]} tokens)", flush=True)
    with tempfile.TemporaryDirectory(prefix="rmserve-bon-") as tmp:
        shared = bench("reuse", [], bodies, args, Path(tmp) / "reuse.log")
        full = bench("full", ["--no-prefix-sharing"], bodies, args, Path(tmp) / "full.log")
    worst = max(abs(a - b) for run in ("latency", "throughput")
                for x, y in zip(shared[run]["rewards"], full[run]["rewards"], strict=True)
                for a, b in zip(x, y, strict=True))
    throughput = (shared["throughput"]["candidates_per_s"], full["throughput"]["candidates_per_s"])
    summary = {
        "latency_speedup_p50": full["latency"]["p50_ms"] / shared["latency"]["p50_ms"],
        "throughput_speedup": throughput[0] / throughput[1],
        "max_abs_reward_diff": worst,
    }
    print(f"reuse vs full: ranking latency p50 {summary['latency_speedup_p50']:.2f}x faster, throughput "
          f"{summary['throughput_speedup']:.2f}x; max |reward reuse - full| {worst:.1e}")
    if args.json:
        for runs in (shared, full):
            for run in runs.values():
                run.pop("rewards")
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                        "gpu": torch.cuda.get_device_name() if args.device != "cpu" else None},
            "reuse": shared, "full": full, "summary": summary,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

This file composes the parts: workload.py (what is sent), harness.py (servers on loopback, shared
with the integration tests), loadgen.py (the closed loop and its sampling), offline.py (the
ceiling) and report.py (tables, ratios, targets, the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import free_port, serve_command, server_process
from hh_rlhf import HH_DATA
from loadgen import LoadResult, bench_server, cpu_seconds, machine_busy_seconds, percentile
from offline import measure_offline
from report import check_targets, report, results_json
from transformers import AutoTokenizer
from workload import WORDS, Workload, build_workload

from model_store.store import DEFAULT_STORE, ModelStore
from service.loading import locate_model

# Names other benchmarks import from here (benchmarks/soak.py among them), kept importable from
# load.py although they now live in the modules above.
__all__ = [
    "HH_DATA", "WORDS", "LoadResult", "Workload", "bench_server", "build_workload", "cpu_seconds",
    "free_port", "machine_busy_seconds", "main", "percentile", "server_process",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def machine(args: argparse.Namespace) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": args.device, "dtype": args.dtype,
            "gpu": torch.cuda.get_device_name() if args.device != "cpu" else None}


def run_servers(
    args: argparse.Namespace, model_folder: Path, workloads: list[Workload]
) -> dict[str, dict[str, list[LoadResult]]]:
    """rmserve and the naive server, one after the other, each under every workload's load."""
    servers: dict[str, dict[str, list[LoadResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="rmserve-load-") as tmp:
        if "rmserve" in args.parts:
            port = free_port()
            command = serve_command("--model", args.model, "--device", args.device, "--dtype", args.dtype,
                                    *shlex.split(args.server_args), port=port, store=args.store)
            servers["rmserve"] = bench_server("rmserve", command, port, workloads, args, Path(tmp))
        if "naive" in args.parts:
            port = free_port()
            command = [sys.executable, str(REPO_ROOT / "benchmarks" / "naive_server.py"),
                       "--model", str(model_folder), "--port", str(port),
                       "--device", args.device, "--dtype", args.dtype, *shlex.split(args.naive_args)]
            servers["naive"] = bench_server("naive", command, port, workloads, args, Path(tmp))
    return servers


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
    host = machine(args)
    print(f"model {args.model} ({source.path}), max_length {source.max_length}, "
          f"{host['cpus']} CPUs, torch {host['torch']}, {host['torch_threads']} threads, "
          f"{args.device} {args.dtype}" + (f" ({host['gpu']})" if host["gpu"] else ""))
    offline = measure_offline(source.path, workloads, args.offline_pairs, source.max_length,
                              args.offline_cap_s, args.device, args.dtype) if "offline" in args.parts else {}
    servers = run_servers(args, source.path, workloads)
    summary = {
        w.name: report(w, offline.get(w.name, {}), {name: per[w.name] for name, per in servers.items()})
        for w in workloads
    }
    print()
    checks = check_targets(summary, max(args.concurrency))
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        results = results_json(args, host, workloads, offline, summary, servers, checks)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

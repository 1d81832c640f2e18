"""HTTP/JSON against gRPC for trainer-sized calls, against one running rmserve, in one run.

    python benchmarks/transports.py [--model demo-minilm-rm] [--items-per-call 1024] [--calls 6]
                                    [--concurrency 1,4] [--workload short] [--json OUT]

One `rmserve serve` with both transports; each caller sends `--calls` requests of
`--items-per-call` (prompt, response) pairs, back to back, through a plain httpx client (JSON) or
the generated gRPC stub (protobuf), `--concurrency` callers at once; transports alternate per
concurrency level. Reported: items/s, p50 time per call, the client's CPU time per call (encoding
and decoding), and request size. With a model whose forward pass is cheap (e.g. the tiny Llama
from `make_decoder_rm.py --size tiny`) the transport's own cost shows; with a real model the
forward pass hides it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
from harness import free_port, server_process
from hh_rlhf import HH_DATA
from workload import build_workload

from model_store.store import DEFAULT_STORE, ModelStore
from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from service.loading import load_tokenizer, locate_model

TIMEOUT_S = 600


def http_caller(url: str) -> Any:
    client = httpx.Client(base_url=url, timeout=TIMEOUT_S)

    def call(pairs: list[tuple[str, str]]) -> int:
        body = {"inputs": [{"prompt": p, "response": r} for p, r in pairs]}
        response = client.post("/v1/score", json=body)
        response.raise_for_status()
        assert len(response.json()["rewards"]) == len(pairs)
        return len(response.request.content)

    return call


def grpc_caller(target: str) -> Any:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = rmserve_pb2_grpc.RewardServiceStub(channel)

    def call(pairs: list[tuple[str, str]]) -> int:
        items = [pb.Item(pair=pb.PromptResponse(prompt=p, response=r)) for p, r in pairs]
        request = pb.ScoreRequest(inputs=items)
        reply = stub.Score(request, timeout=TIMEOUT_S)
        assert len(reply.rewards) == len(pairs)
        return request.ByteSize()

    return call


def measure(
    make_caller: Any, pairs: list[tuple[str, str]], args: argparse.Namespace, concurrency: int
) -> dict[str, float]:
    """`concurrency` callers, each with its own connection, `args.calls` calls each."""
    size = args.items_per_call
    callers = [make_caller() for _ in range(concurrency)]
    chunks = [pairs[(i * size) % len(pairs):][:size] for i in range(args.calls * concurrency + concurrency)]
    for caller, chunk in zip(callers, chunks[:concurrency], strict=True):  # warm-up, one call each
        caller(chunk)

    def run(index: int) -> list[tuple[float, float, int]]:
        timings = []
        for chunk in chunks[concurrency + index :: concurrency]:
            wall, cpu = time.perf_counter(), time.thread_time()
            sent = callers[index](chunk)
            timings.append((time.perf_counter() - wall, time.thread_time() - cpu, sent))
        return timings

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [t for per_caller in pool.map(run, range(concurrency)) for t in per_caller]
    elapsed = time.perf_counter() - started
    return {
        "calls": len(results), "items_per_s": len(results) * size / elapsed,
        "p50_call_ms": 1e3 * statistics.median(r[0] for r in results),
        "client_cpu_ms_per_call": 1e3 * statistics.mean(r[1] for r in results),
        "request_kib": statistics.mean(r[2] for r in results) / 1024,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-minilm-rm", help="store NAME[:VERSION] or a folder")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--items-per-call", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=6, help="per caller, after one warm-up call")
    parser.add_argument("--concurrency", default="1,4", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--workload", default="short", choices=("short", "mixed"))
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = locate_model(args.model, ModelStore(args.store))
    tokenizer = load_tokenizer(source.path)
    workload = build_workload(args.workload, tokenizer, HH_DATA, 4 * args.items_per_call, source.max_length)
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--model", args.model,
               "--store", str(args.store), "--port", str(port), "--grpc-port", str(grpc_port),
               "--log-level", "warning",
               "--max-inputs-per-request", str(args.items_per_call),
               "--max-queue-items", str(args.items_per_call * (max(args.concurrency) + 1)),
               *args.server_args.split()]
    print(f"model {args.model}, {args.workload} pairs (mean {workload.mean_tokens:.1f} tokens), "
          f"{args.items_per_call} per call")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, server_process(command, port, Path(tmp) / "server.log"):
        makers = {"http": lambda: http_caller(f"http://127.0.0.1:{port}"),
                  "grpc": lambda: grpc_caller(f"127.0.0.1:{grpc_port}")}
        for concurrency in args.concurrency:
            for name, make in makers.items():
                r = measure(make, workload.pairs, args, concurrency)
                results.setdefault(str(concurrency), {})[name] = r
                print(f"  c={concurrency} {name:4} {r['items_per_s']:8.1f} items/s  "
                      f"p50 {r['p50_call_ms']:8.1f} ms/call  "
                      f"client cpu {r['client_cpu_ms_per_call']:6.1f} ms/call  "
                      f"request {r['request_kib']:7.1f} KiB", flush=True)
            http, grpc_ = results[str(concurrency)]["http"], results[str(concurrency)]["grpc"]
            print(f"  c={concurrency} grpc/http: {grpc_['items_per_s'] / http['items_per_s']:.2f}x items/s, "
                  f"{http['client_cpu_ms_per_call'] / grpc_['client_cpu_ms_per_call']:.1f}x less client CPU, "
                  f"{http['request_kib'] / grpc_['request_kib']:.2f}x smaller request")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "mean_tokens": workload.mean_tokens, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ONNX Runtime against PyTorch, on one machine in one run: raw offline forward and through the server.

    python benchmarks/backends.py [--model demo-minilm-rm] [--device cpu|cuda] [--torch-dtype D]
                                  [--fp16] [--optimize] [--concurrency 1,64] [--json OUT]

(1) Offline: rmserve's two backends (TorchBackend, OnnxBackend) score the same tokenised rows in
length-sorted batches of 1, 8 and 32 pairs, with no server around them: blocks of one backend,
then the other, each shape warmed up first. (2) By length: batches of 8 same-length
rows, to show where the time goes: PyTorch with its fused SDPA attention and with eager
attention (the maths the ONNX graph holds), and ONNX Runtime. (3) Served: `rmserve serve
--backend torch` and `--backend onnx` under the same closed-loop HTTP load as benchmarks/load.py
(one pair per request).
The model needs an ONNX export matching --fp16/--optimize in the store; one is made if it lacks it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import free_port, serve_command
from hh_rlhf import HH_DATA
from loadgen import LoadResult, bench_server
from transformers import AutoModelForSequenceClassification
from workload import Workload, build_workload

from model_store.onnx_export import export_onnx, timed_progress
from model_store.store import DEFAULT_STORE, ModelStore
from service.backends.base import EncodedPair
from service.backends.onnx_backend import OnnxBackend
from service.backends.torch_backend import TorchBackend
from service.loading import ModelSource, load_tokenizer, locate_model
from service.scoring.formatting import InputFormatter
from service.scoring.items import PromptResponse

BATCH_SIZES = (1, 8, 32)
LENGTHS = (32, 128, 512)


def ensure_export(store: ModelStore, ref: str, *, fp16: bool, optimize: bool) -> None:
    manifest = store.get(ref).manifest
    wanted = "float16" if fp16 else "float32"
    if manifest.onnx and (manifest.onnx.dtype, manifest.onnx.optimized) == (wanted, optimize):
        return
    print(f"exporting {manifest.ref} to ONNX ({wanted}, optimize={optimize})", flush=True)
    export_onnx(store, ref, fp16=fp16, optimize=optimize, progress=timed_progress(print))


def offline_pairs_per_s(score: Any, batches: list[list[EncodedPair]], cap_s: float) -> float:
    """Pairs/s of back-to-back forwards over `batches` (after one untimed pass over them)."""
    warm_until = time.perf_counter() + cap_s
    for batch in batches:
        score(batch)
        if time.perf_counter() > warm_until:
            break
    started, done = time.perf_counter(), 0
    for batch in batches:
        score(batch)
        done += len(batch)
        if time.perf_counter() - started > cap_s:
            break
    return done / (time.perf_counter() - started)


def run_offline(
    backends: dict[str, Any], rows: list[EncodedPair], cap_s: float
) -> dict[str, dict[int, float]]:
    by_length = sorted(rows, key=len)
    results: dict[str, dict[int, float]] = {}
    for name, backend in backends.items():
        results[name] = {}
        for size in BATCH_SIZES:
            batches = [by_length[i : i + size] for i in range(0, len(by_length), size)]
            random.Random(size).shuffle(batches)  # the time cap then cuts a fair sample
            results[name][size] = offline_pairs_per_s(backend.score, batches, cap_s)
            print(f"[offline] {name:5} batch {size:>2}: {results[name][size]:7.1f} pairs/s", flush=True)
    return results


def median_forward_s(score: Any, batch: list[EncodedPair], repeats: int = 5) -> float:
    score(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        score(batch)
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2]


def run_by_length(backends: dict[str, Any], vocab_size: int, max_length: int) -> dict[int, dict[str, float]]:
    """Median ms per forward of 8 random rows of one length, for each backend."""
    rng = random.Random(0)
    results: dict[int, dict[str, float]] = {}
    print(f"\n{'8 rows, ms':12}" + "".join(f"{name:>13}" for name in backends) + f"{'onnx/torch':>12}")
    for length in (n for n in LENGTHS if n <= max_length):
        batch = [EncodedPair(tuple(rng.randrange(vocab_size) for _ in range(length))) for _ in range(8)]
        results[length] = {name: 1e3 * median_forward_s(b.score, batch) for name, b in backends.items()}
        row = results[length]
        print(f"{f'length {length}':12}" + "".join(f"{ms:>13.1f}" for ms in row.values())
              + f"{row['torch'] / row['onnx']:>11.2f}x", flush=True)
    return results


def report(
    workload: Workload, offline: dict[str, dict[int, float]], served: dict[str, list[LoadResult]]
) -> dict[str, float]:
    print(f"\n== {workload.name}: {workload.source}, mean {workload.mean_tokens:.1f} tokens")
    ratios: dict[str, float] = {}
    if offline:
        print(f"{'offline pairs/s':16}" + "".join(f"{f'batch {s}':>10}" for s in BATCH_SIZES))
        for name in offline:
            print(f"{name:16}" + "".join(f"{offline[name][s]:>10.1f}" for s in BATCH_SIZES))
        line = []
        for s in BATCH_SIZES:
            ratios[f"offline_batch_{s}"] = offline["onnx"][s] / offline["torch"][s]
            line.append(f"{ratios[f'offline_batch_{s}']:>9.2f}x")
        print(f"{'onnx / torch':16}" + "".join(line))
    if served:
        torch_results = {r.concurrency: r for r in served["rmserve-torch"]}
        print(f"{'served':16}{'conc':>5}{'pairs/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'batch':>7}{'srv cpu%':>9}")
        for name, results in served.items():
            for r in results:
                batch = "-" if r.mean_batch_pairs is None else f"{r.mean_batch_pairs:.1f}"
                print(f"{name:16}{r.concurrency:>5}{r.pairs_per_s:>9.1f}{r.p50_ms:>8.1f}{r.p99_ms:>8.1f}"
                      f"{batch:>7}{r.server_cpu_pct:>9.0f}")
        for r in served["rmserve-onnx"]:
            ratio = r.pairs_per_s / torch_results[r.concurrency].pairs_per_s
            ratios[f"served_c{r.concurrency}"] = ratio
            print(f"{'onnx / torch':16}{r.concurrency:>5}{ratio:>8.2f}x"
                  f"{torch_results[r.concurrency].p50_ms / r.p50_ms:>7.2f}x (p50 speed-up)")
    return ratios


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-minilm-rm", help="store NAME[:VERSION]")
    parser.add_argument("--store", type=Path,
                        default=Path(os.environ.get("RMSERVE_STORE", DEFAULT_STORE)).expanduser())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--torch-dtype", choices=("float32", "float16", "bfloat16"),
                        help="PyTorch weights; default float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--fp16", action="store_true", help="use (or make) a float16 ONNX export")
    parser.add_argument("--optimize", action="store_true", help="use (or make) an optimized export")
    parser.add_argument("--workload", default="mixed,short", type=lambda s: s.split(","))
    parser.add_argument("--parts", default="offline,lengths,served", type=lambda s: s.split(","))
    parser.add_argument("--concurrency", default="1,64", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="load before each window")
    parser.add_argument("--max-requests", type=int, default=5000, help="per window")
    parser.add_argument("--pairs", type=int, default=2000, help="distinct pairs per workload")
    parser.add_argument("--offline-pairs", type=int, default=256, help="pairs per offline shape")
    parser.add_argument("--offline-cap-s", type=float, default=8.0, help="time cap per shape")
    parser.add_argument("--server-args", default="", help="extra `rmserve serve` flags for both")
    parser.add_argument("--data", type=Path, default=HH_DATA, help="hh-rlhf .jsonl.gz")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args(argv)
    args.pairs_per_request = 1
    args.torch_dtype = args.torch_dtype or ("float32" if args.device == "cpu" else "bfloat16")
    return args


def offline_parts(
    args: argparse.Namespace, source: ModelSource, tokenizer: Any, workloads: list[Workload]
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[int, dict[str, float]]]:
    """Parts (1) and (2), in this process: offline pairs/s per workload, ms per forward by length."""
    offline: dict[str, dict[str, dict[int, float]]] = {}
    by_length: dict[int, dict[str, float]] = {}
    if not {"offline", "lengths"} & set(args.parts):
        return offline, by_length
    formatter = InputFormatter(tokenizer, source.max_length)
    pad = tokenizer.pad_token_id
    backends = {
        "torch": TorchBackend.load(
            source.path, pad_token_id=pad, device=args.device, dtype=args.torch_dtype
        ),
        "onnx": OnnxBackend.load(source.onnx_file, pad_token_id=pad, device=args.device),
    }
    print(f"offline devices: torch {backends['torch'].info.device}, onnx {backends['onnx'].info.device}")
    for workload in workloads if "offline" in args.parts else []:
        pairs = [PromptResponse(p, r) for p, r in workload.pairs[: args.offline_pairs]]
        rows = [item.pair for item in formatter.format(pairs)]
        offline[workload.name] = run_offline(backends, rows, args.offline_cap_s)
    if "lengths" in args.parts:
        eager = AutoModelForSequenceClassification.from_pretrained(
            source.path, attn_implementation="eager", dtype=getattr(torch, args.torch_dtype)
        )
        backends = {"torch": backends["torch"],
                    "torch-eager": TorchBackend(eager.to(args.device).eval(), pad_token_id=pad,
                                                device=torch.device(args.device)),
                    "onnx": backends["onnx"]}
        by_length = run_by_length(backends, len(tokenizer), source.max_length)
    return offline, by_length


def served_part(
    args: argparse.Namespace, workloads: list[Workload]
) -> dict[str, dict[str, list[LoadResult]]]:
    """Part (3): `rmserve serve --backend torch`, then `--backend onnx`, under the same load."""
    served: dict[str, dict[str, list[LoadResult]]] = {}
    if "served" not in args.parts:
        return served
    with tempfile.TemporaryDirectory(prefix="rmserve-backends-") as tmp:
        for backend in ("torch", "onnx"):
            port = free_port()
            dtype = ["--dtype", args.torch_dtype] if backend == "torch" else []
            command = serve_command("--model", args.model, "--device", args.device, "--backend", backend,
                                    *dtype, *shlex.split(args.server_args), port=port, store=args.store)
            per = bench_server(f"rmserve-{backend}", command, port, workloads, args, Path(tmp))
            for name, results in per.items():
                served.setdefault(name, {})[f"rmserve-{backend}"] = results
    return served


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    store = ModelStore(args.store)
    ensure_export(store, args.model, fp16=args.fp16, optimize=args.optimize)
    source = locate_model(args.model, store, "onnx")
    tokenizer = load_tokenizer(source.path)
    workloads = [build_workload(w, tokenizer, args.data, args.pairs, source.max_length)
                 for w in args.workload]
    export = store.get(args.model).manifest.onnx
    print(f"model {args.model}: torch {torch.__version__} {args.torch_dtype} vs ONNX export "
          f"{export.dtype} optimized={export.optimized} (opset {export.opset}); {os.cpu_count()} CPUs, "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu" else ""))
    # offline_parts' backends are freed when it returns, before the servers load their own copies.
    offline, by_length = offline_parts(args, source, tokenizer, workloads)
    served = served_part(args, workloads)
    summary = {w.name: report(w, offline.get(w.name, {}), served.get(w.name, {})) for w in workloads}
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "export": export.model_dump(mode="json"),
            "offline_pairs_per_s": offline,
            "ms_per_8_rows_by_length": by_length,
            "served": {w: {n: [vars(r) for r in rs] for n, rs in per.items()} for w, per in served.items()},
            "onnx_over_torch": summary,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

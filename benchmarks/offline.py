"""The ceiling: the model's forward pass run offline with transformers, no server around it."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from loadgen import machine_busy_seconds
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from workload import Workload

OFFLINE_SHAPES = (("sorted", 1), ("sorted", 8), ("sorted", 32), ("sorted", 64), ("unsorted", 64))


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
) -> dict[str, float]:
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


def measure_offline(
    folder: Path, workloads: list[Workload], n: int, max_length: int, cap_s: float, device: str,
    dtype: str,
) -> dict[str, dict[str, float]]:
    """`run_offline` for each workload, printing each one's figures and how busy the rest of the
    machine was meanwhile (a busy machine makes the ceiling too low)."""
    offline: dict[str, dict[str, float]] = {}
    for workload in workloads:
        wall_s, own_s, busy_s = time.perf_counter(), time.process_time(), machine_busy_seconds()
        offline[workload.name] = run_offline(folder, workload, n, max_length, cap_s, device, dtype)
        wall_s, own_s = time.perf_counter() - wall_s, time.process_time() - own_s
        other_pct = 100 * (machine_busy_seconds() - busy_s - own_s) / wall_s
        print(f"[offline] {workload.name}: " + ", ".join(
            f"{k} {v:.1f}/s" for k, v in offline[workload.name].items())
            + f"  (other cpu {other_pct:.0f}%)", flush=True)
    return offline

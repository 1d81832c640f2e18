"""benchmarks/frontend.py's results: one part under one workload, the table and the ratios."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frontend_workload import SHAPES
from report import fmt
from workload import Workload

BUSY_MACHINE_PCT = 20.0  # other processes' CPU in a window above this: its numbers are not clean


@dataclass(frozen=True)
class FrontendResult:
    """One server under one workload at one concurrency, over the measurement window only."""

    concurrency: int
    requests: int
    items: int
    errors: int
    window_s: float
    requests_per_s: float
    items_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    server_cpu_ms_per_item: float
    server_cpu_pct: float
    client_cpu_pct: float
    other_cpu_pct: float  # the rest of the machine: near 0 in a fair run
    server_processes: int  # the server and its descendants alive at both edges of the window
    processes_changed: int  # born or gone during the window: their CPU is not counted
    mean_batch_pairs: float | None


def ratios(parts: dict[str, dict[str, list[FrontendResult]]], workload: str) -> dict[str, dict[int, float]]:
    """req/s of each rmserve part over naive's, and rmserve-2's over rmserve-1's, per concurrency."""
    by = {p: {r.concurrency: r for r in per.get(workload, [])} for p, per in parts.items()}
    pairs = [(p, "naive") for p in by if p != "naive"] + [("rmserve-2", "rmserve-1")]
    return {f"{a}/{b}": {c: r.requests_per_s / by[b][c].requests_per_s for c, r in by[a].items()
                         if c in by[b] and by[b][c].requests_per_s}
            for a, b in pairs if a in by and b in by}


def report(workload: Workload, parts: dict[str, dict[str, list[FrontendResult]]]) -> dict[str, Any]:
    """Print one workload's table; return its ratios."""
    shape = SHAPES[workload.name]
    print(f"\n== {workload.name}: {shape.items_per_request} item(s) per request, "
          f"mean {workload.mean_tokens:.1f} tokens per item "
          f"(min {min(workload.tokens)}, max {max(workload.tokens)})")
    print(f"{'part':10} {'conc':>4} {'req/s':>7} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'cpu ms/req':>10} {'cpu ms/item':>11} {'cpu% srv/cli/other':>18} {'batch':>6} {'errors':>6} "
          f"{'cpu/naive':>9}")
    naive = {r.concurrency: r for r in parts.get("naive", {}).get(workload.name, [])}
    for part, per in parts.items():
        for r in per.get(workload.name, []):
            base = naive.get(r.concurrency)
            vs = None if part == "naive" or base is None else (
                r.server_cpu_ms_per_request / base.server_cpu_ms_per_request)
            cpu = f"{r.server_cpu_pct:.0f}/{r.client_cpu_pct:.0f}/{r.other_cpu_pct:.0f}"
            print(f"{part:10} {r.concurrency:>4} {r.requests_per_s:>7.1f} {r.items_per_s:>8.1f} "
                  f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.server_cpu_ms_per_request:>10.2f} "
                  f"{r.server_cpu_ms_per_item:>11.3f} {cpu:>18} {fmt(r.mean_batch_pairs, '.1f'):>6} "
                  f"{r.errors:>6} {fmt(vs, '.2f'):>9}")
    busy = [f"{p} c={r.concurrency}" for p, per in parts.items() for r in per.get(workload.name, [])
            if r.other_cpu_pct > BUSY_MACHINE_PCT]
    if busy:
        print(f"WARNING: other processes used over {BUSY_MACHINE_PCT:.0f}% CPU during {', '.join(busy)}: "
              "the machine was not quiet, so those rows are not clean")
    found = ratios(parts, workload.name)
    for name, per in found.items():
        print(f"req/s {name}: " + "  ".join(f"c={c} {v:.2f}" for c, v in per.items()))
    return found

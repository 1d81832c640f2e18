"""What benchmarks/load.py prints and writes: per-workload tables, ratios, targets, the JSON file.

The JSON's shape is read by benchmarks/plot_load.py and recorded in benchmarks/RESULTS.md: keep
its keys as they are.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadgen import LoadResult
from workload import Workload

# The team's targets at the highest concurrency (2-core CPU, MiniLM): (workload, versus, ratio).
TARGETS = (("mixed", "offline", 0.85), ("mixed", "naive", 1.3), ("short", "naive", 1.5))


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)  # None or NaN: no figure


def report(workload: Workload, offline: dict[str, float], servers: dict[str, list[LoadResult]]) -> dict:
    """Print one workload's table; return rmserve's ratios to the offline best and to naive."""
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
            print(row(name, r, vs_offline, vs_naive))
    return {"ratios": ratios, "offline_best": best}


def row(name: str, r: LoadResult, vs_offline: float | None, vs_naive: float | None) -> str:
    padding = None if r.padding_fraction is None else 100 * r.padding_fraction
    cpu = f"{r.server_cpu_pct:.0f}/{r.client_cpu_pct:.0f}/{r.other_cpu_pct:.0f}"
    return (f"{name:8} {r.concurrency:>4} {r.throughput_rps:>7.1f} {r.pairs_per_s:>7.1f} "
            f"{r.p50_ms:>7.0f} "
            f"{r.p95_ms:>7.0f} {r.p99_ms:>7.0f} {fmt(r.mean_batch_pairs, '6.1f'):>6} "
            f"{fmt(padding, '6.1f'):>6} {cpu:>18} "
            f"{fmt(vs_offline, '7.2f'):>8} {fmt(vs_naive, '6.2f'):>7}")


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


def results_json(
    args: argparse.Namespace, machine: dict[str, Any], workloads: list[Workload],
    offline: dict[str, dict[str, float]], summary: dict[str, dict],
    servers: dict[str, dict[str, list[LoadResult]]], checks: list[dict],
) -> dict[str, Any]:
    """Everything a run measured, as `--json` writes it."""
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "workloads": {w.name: {
            "source": w.source, "pairs": len(w.pairs), "mean_tokens": w.mean_tokens,
            "offline_pairs_per_s": offline.get(w.name, {}), **summary[w.name],
            "servers": {n: [asdict(r) for r in per[w.name]] for n, per in servers.items()},
        } for w in workloads},
        "targets": checks,
    }

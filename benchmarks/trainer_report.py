"""The figures of benchmarks/trainer.py: a server's CPU and memory read from /proc, its padding
from /metrics deltas, the machine, the table, the targets and the JSON.

The server's CPU is summed over its whole process tree (each live descendant's utime + stime, plus
the cutime + cstime of the ones already reaped), so work moved into helper processes is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
from process_cpu import process_tree, stat_fields
from workload import Workload

# Issue 18's targets: served/offline at 8,192 items (CPU, GPU) and CPU per item at the largest
# size over the smallest.
RATIO_TARGET = {"cpu": 0.95, "gpu": 0.9}
RATIO_SIZE = 8192
CPU_GROWTH_TARGET = 1.10
MIB = 1024 * 1024


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of `root`'s process tree, all threads, reaped children included."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = stat_fields(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def status_mib(pid: int, key: str) -> float:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / MIB
    raise KeyError(key)


def served_padding(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Padding over the run from /metrics deltas: 1 - scored tokens / padded tokens of all passes,
    the mean of the per-pass ratios, and the passes' count and mean rows."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    padded, real, passes = delta("rmserve_batch_tokens_sum"), delta("rmserve_tokens_total"), delta(
        "rmserve_batch_size_count")
    return {
        "padding_fraction": 1 - real / padded if padded else None,
        "mean_pass_padding": delta("rmserve_padding_ratio_sum") / passes if passes else None,
        "passes": passes,
        "mean_pass_rows": delta("rmserve_batch_size_sum") / passes if passes else None,
        "shared_prefix_tokens": delta("rmserve_shared_prefix_tokens_total"),
    }


def machine(device: str, dtype: str) -> dict[str, Any]:
    """What the figures depend on: the CPU (model, cores we may use), torch, the GPU if any."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": device,
            "dtype": dtype, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}


def describe(items: Workload, max_length: int) -> dict[str, Any]:
    over = sum(t > max_length for t in items.tokens)
    stats = {"source": items.source, "items": len(items.pairs), "mean_tokens": items.mean_tokens,
             "median_tokens": statistics.median(items.tokens), "min_tokens": min(items.tokens),
             "max_tokens": max(items.tokens), "over_max_length": over, "max_length": max_length}
    print(f"== {items.name}: {len(items.pairs)} items, {items.source}, tokens mean {items.mean_tokens:.0f} "
          f"(median {stats['median_tokens']:.0f}, {stats['min_tokens']}-{stats['max_tokens']}); "
          f"{over} ({100 * over / len(items.tokens):.0f}%) over the model's {max_length}: truncated",
          flush=True)
    return stats


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_row(row: dict[str, Any]) -> None:
    """One workload x size as soon as it is measured: a long run shows its progress."""
    offline, served = row["offline"], row["served"]
    print(f"[{row['workload']} {row['items']}] offline {offline['items_per_s']:.1f}/s (bs "
          f"{offline['batch_size']}, other cpu {offline['other_cpu_pct']:.0f}%), served "
          f"{served['items_per_s']:.1f}/s (other cpu {served['other_cpu_pct']:.0f}%): {row['ratio']:.3f}x; "
          f"server {served['cpu_s_per_1k']:.2f} cpu s/1k items, peak rss {served['rss_peak_mib']:.0f} MiB; "
          f"max |reward served - offline| {fmt(row['max_reward_diff'], '.2g')} (untruncated items)",
          flush=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per workload x size: served against the offline best, and the server's costs."""
    print(f"\n{'workload':8} {'items':>6} {'served/s':>9} {'offline/s':>9} {'bs':>4} {'ratio':>6} "
          f"{'pad srv':>7} {'pad off':>7} {'cpu s/1k':>8} {'rss idle':>8} {'rss peak':>8} {'other%':>6}")
    for r in rows:
        s, o = r["served"], r["offline"]
        pad = _pct(s["padding"]["padding_fraction"])
        print(f"{r['workload']:8} {r['items']:>6} {s['items_per_s']:>9.1f} {o['items_per_s']:>9.1f} "
              f"{o['batch_size']:>4} {fmt(r['ratio'], '.3f'):>6} "
              f"{fmt(pad, '.1f'):>6}% {100 * o['padding_fraction']:>6.1f}% "
              f"{s['cpu_s_per_1k']:>8.2f} {s['rss_idle_mib']:>8.0f} {s['rss_peak_mib']:>8.0f} "
              f"{s['other_cpu_pct']:>6.0f}")
    print("(rss in MiB: the server's VmRSS before the request, VmHWM after it; other%: CPU the rest of "
          "the machine used meanwhile, as % of one core: near 0 for a fair run)")


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def check_targets(rows: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """Issue 18's targets, for the sizes this run has: the ratio at 8,192 items on the mixed
    workload, and each workload's CPU per item at its largest size over its smallest."""
    kind = "cpu" if device == "cpu" else "gpu"
    checks: dict[str, Any] = {}
    for r in rows:
        if r["workload"] == "mixed" and r["items"] == RATIO_SIZE and r["ratio"] is not None:
            checks["mixed_ratio_8192"] = {"value": r["ratio"], "target": RATIO_TARGET[kind],
                                          "ok": r["ratio"] >= RATIO_TARGET[kind]}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        mine = sorted((r for r in rows if r["workload"] == workload), key=lambda r: r["items"])
        if len(mine) > 1:
            small, large = mine[0], mine[-1]
            growth = large["served"]["cpu_s_per_1k"] / small["served"]["cpu_s_per_1k"]
            checks[f"{workload}_cpu_per_item_{large['items']}_over_{small['items']}"] = {
                "value": growth, "target": CPU_GROWTH_TARGET, "ok": growth <= CPU_GROWTH_TARGET}
    for name, check in checks.items():
        print(f"{name}: {check['value']:.3f} (target {'>=' if 'ratio' in name else '<='} "
              f"{check['target']}) {'ok' if check['ok'] else 'MISSED'}")
    return checks


def print_header(command: str, host: dict[str, Any], model: str, source: Any) -> None:
    print(f"command: {command}\nmachine: {host['cpu']}, {host['usable_cores']}/{host['cores']} cores, "
          f"torch {host['torch']} ({host['torch_threads']} threads), {host['device']} {host['dtype']}"
          + (f" ({host['gpu']})" if host["gpu"] else "")
          + f"\nmodel: {model} ({source.path}), max length {source.max_length}", flush=True)


def write_json(args: argparse.Namespace, command: str, host: dict[str, Any], source: Any,
               workloads: dict[str, Any], rows: list[dict[str, Any]], checks: dict[str, Any]) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    model = {"ref": args.model or source.name, "path": str(source.path), "max_length": source.max_length}
    args.json.write_text(json.dumps({"command": command, "args": settings, "machine": host, "model": model,
                                     "workloads": workloads, "rows": rows, "checks": checks}, indent=2))

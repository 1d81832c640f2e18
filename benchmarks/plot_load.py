"""Latency against throughput, drawn from benchmarks/load.py's own --json output.

    python benchmarks/plot_load.py benchmarks/results/load-cpu.json [--out PNG] [--title T]

One panel per workload; for each server (rmserve, naive) a line through its concurrency levels:
throughput (requests/s) across, p50 and p99 latency up (log scale), each point labelled c=N.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

COLOURS = {"rmserve": "tab:blue", "naive": "tab:orange"}


def plot(results: dict, title: str, out: Path) -> None:
    workloads = results["workloads"]
    figure, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.8), squeeze=False)
    for ax, (name, workload) in zip(axes[0], workloads.items(), strict=True):
        for server, runs in workload["servers"].items():
            colour = COLOURS.get(server, "tab:gray")
            throughput = [r["throughput_rps"] for r in runs]
            ax.plot(throughput, [r["p50_ms"] for r in runs], "o-", color=colour, label=f"{server} p50")
            ax.plot(throughput, [r["p99_ms"] for r in runs], "s--", color=colour, alpha=0.6,
                    label=f"{server} p99")
            for r in runs:
                ax.annotate(f"c={r['concurrency']}", (r["throughput_rps"], r["p50_ms"]),
                            textcoords="offset points", xytext=(4, -11), fontsize=8, color=colour)
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        source = workload["source"].split(" (")[0]
        ax.set_title(f"{name}: {source}, mean {workload['mean_tokens']:.0f} tokens")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a JSON file written by load.py --json")
    parser.add_argument("--out", type=Path, help="PNG to write (default: beside the JSON)")
    parser.add_argument("--title", help="figure title (default: model and machine from the JSON)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    machine = results["machine"]
    hardware = machine["gpu"] or f"{machine['cpus']} CPU cores"
    title = args.title or f"{Path(results['args']['model']).name}, {machine['dtype']} on {hardware}"
    plot(results, title, args.out or args.results.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

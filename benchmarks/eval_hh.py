"""Pairwise accuracy of a reward model on Anthropic hh-rlhf (harmless-base, test split).

    python benchmarks/eval_hh.py [--model demo-minilm-rm] [--limit N] [--data FILE.jsonl.gz]

Each line of the file holds a `chosen` and a `rejected` transcript ("\\n\\nHuman: ..." /
"\\n\\nAssistant: ..." turns). The prompt is everything up to and including the last
"\\n\\nAssistant:", the response is the final assistant reply. Both go through rmserve's own
formatter and PyTorch backend, so they are shortened and scored exactly as the server would.
Prints one line of JSON. Needs the shared data folder, so no test depends on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hh_rlhf import HH_DATA, preference_rows, split_transcript

from model_store.store import DEFAULT_STORE, ModelStore
from service.backends.torch_backend import TorchBackend
from service.loading import load_tokenizer, locate_model
from service.scoring.formatting import InputFormatter
from service.scoring.items import PromptResponse

BATCH = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-minilm-rm", help="store NAME[:VERSION] or HF folder")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--data", type=Path, default=HH_DATA, help="hh-rlhf .jsonl.gz file")
    parser.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"no data file at {args.data}", file=sys.stderr)
        return 2
    rows = preference_rows(args.data, args.limit)

    started = time.perf_counter()
    source = locate_model(args.model, ModelStore(args.store.expanduser()))
    tokenizer = load_tokenizer(source.path)
    formatter = InputFormatter(tokenizer, source.max_length)
    backend = TorchBackend.load(source.path, pad_token_id=tokenizer.pad_token_id, device="cpu")
    transcripts = [r[key] for key in ("chosen", "rejected") for r in rows]
    items = formatter.format([PromptResponse(*split_transcript(t)) for t in transcripts])
    # Length-sorted batches, as the server's batcher forms them.
    order = sorted(range(len(items)), key=lambda i: len(items[i].pair))
    rewards = [0.0] * len(items)
    for start in range(0, len(order), BATCH):
        chunk = order[start : start + BATCH]
        for i, reward in zip(chunk, backend.score([items[i].pair for i in chunk]), strict=True):
            rewards[i] = reward
    margins = [c - r for c, r in zip(rewards[: len(rows)], rewards[len(rows) :], strict=True)]
    print(json.dumps({
        "model": f"{source.name}:{source.version}",
        "data": args.data.name,
        "pairs": len(rows),
        "pairwise_accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
        "mean_margin": round(sum(margins) / len(margins), 4),
        "ties": sum(m == 0 for m in margins),
        "inputs_truncated": sum(item.truncated for item in items),
        "max_length": source.max_length,
        "seconds": round(time.perf_counter() - started, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

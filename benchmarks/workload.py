"""What the load benchmarks send: (prompt, response) pairs, their token counts, request bodies.

  mixed  hh-rlhf harmless-base test transcripts, split into prompt = up to and including the last
         "\\n\\nAssistant:", response = the reply after it; synthetic text of a similar length
         spread when the file is absent.
  short  synthetic ~40-token pairs, where per-request overheads dominate.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hh_rlhf import ASSISTANT, preference_rows, split_transcript

WORDS = (
    "the a to of and in is it you that for on with as can be this are your have or not will from "
    "what how do if about more when they one would which there their make like time just know "
    "people good some could them see other than then now look only come its over think also back "
    "after use two work first well way even new want because any these give day most us water "
    "should plant dog house money friend question answer help cook learn travel doctor music "
    "garden recipe weather history science computer language family school reason problem idea"
).split()


@dataclass(frozen=True)
class Workload:
    """Pairs to score, in the random order requests send them, with their token counts."""

    name: str
    source: str
    pairs: list[tuple[str, str]]
    tokens: list[int]

    @property
    def mean_tokens(self) -> float:
        return statistics.fmean(self.tokens)


def hh_pairs(path: Path) -> list[tuple[str, str]]:
    return [split_transcript(row[key]) for row in preference_rows(path) for key in ("chosen", "rejected")]


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, count)))


def synthetic_mixed_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    # Log-normal word counts near hh-rlhf harmless-base (tokens: mean 160, p10 40, p90 340);
    # these give mean 150, p10 60, p90 280 with MiniLM's tokenizer.
    return [
        (f"Human: {words(rng, int(rng.lognormvariate(4.35, 0.85)))}{ASSISTANT}",
         words(rng, int(rng.lognormvariate(3.45, 0.8))))
        for _ in range(n)
    ]


def short_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(words(rng, rng.randint(15, 21)), words(rng, rng.randint(13, 19))) for _ in range(n)]


def build_workload(name: str, tokenizer: Any, data: Path, n: int, max_length: int) -> Workload:
    rng = random.Random(f"rmserve-load/{name}")
    if name == "short":
        pairs, source = short_pairs(rng, n), "synthetic"
    elif data.is_file():
        pairs, source = rng.sample(hh_pairs(data), n), f"hh-rlhf ({data.name})"
    else:
        pairs, source = synthetic_mixed_pairs(rng, n), "synthetic (hh-rlhf file absent)"
    encoded = tokenizer([p for p, _ in pairs], [r for _, r in pairs], truncation=False, verbose=False)
    tokens = [min(len(ids), max_length) for ids in encoded["input_ids"]]
    return Workload(name, source, pairs, tokens)


def request_bodies(workload: Workload, pairs_per_request: int) -> list[bytes]:
    """POST /v1/score bodies of `pairs_per_request` consecutive pairs each; a short tail is dropped,
    so every request is the same shape."""
    size = pairs_per_request
    chunks = [workload.pairs[i : i + size] for i in range(0, len(workload.pairs), size)]
    return [json.dumps({"inputs": [{"prompt": p, "response": r} for p, r in chunk]}).encode()
            for chunk in chunks if len(chunk) == size]

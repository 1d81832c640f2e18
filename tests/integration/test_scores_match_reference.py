"""Rewards from the running server equal an unbatched model(**inputs).logits reference."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import TINY_MODELS
from tests.integration.reference import mixed_items, reference_reward, score_concurrently
from tests.integration.server import running_server

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    args = [arg for name, path in tiny_model_dirs.items() for arg in ("--model", f"{name}={path}")]
    # A 20 ms window makes concurrent requests share mixed-length batches.
    with running_server([*args, "--max-wait-ms", "20"], store=tmp_path_factory.mktemp("store")) as url:
        yield url


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_concurrent_mixed_lengths_match_unbatched_reference(
    name: str, tiny_server: str, tiny_model_dirs: dict[str, Path]
) -> None:
    folder = tiny_model_dirs[name]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    items = mixed_items(seed=len(name))
    if tokenizer.chat_template:  # a raw text that already carries the template (and its BOS)
        items.append({"text": tokenizer.apply_chat_template(
            [{"role": "user", "content": "why"}, {"role": "assistant", "content": "because"}],
            tokenize=False,
        )})
    expected = [reference_reward(model, tokenizer, item) for item in items]

    served = asyncio.run(score_concurrently(tiny_server, name, items))

    assert len(served) == len(expected)
    worst = max(abs(a - b) for a, b in zip(served, expected, strict=True))
    assert worst <= TOLERANCE, f"{name}: max |served - reference| = {worst:.2e}"


def test_batches_really_mix_requests(tiny_server: str) -> None:
    """The comparison above is only meaningful if requests were batched together."""
    metrics = httpx.get(f"{tiny_server}/metrics").text
    sizes = [line for line in metrics.splitlines()
             if line.startswith("rmserve_batch_size_sum") or line.startswith("rmserve_batch_size_count")]
    totals: dict[str, float] = {}
    for line in sizes:
        key = line.split("{")[0]
        totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    assert totals["rmserve_batch_size_sum"] > totals["rmserve_batch_size_count"]

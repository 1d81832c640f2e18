"""Rewards from the running server equal an unbatched model(**inputs).logits reference."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import TINY_MODELS
from tests.integration.reference import mixed_items, reference_reward, score_concurrently
from tests.integration.server import metric, running_server

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


def batch_sizes(url: str, model: str) -> tuple[float, float, float]:
    """rmserve_batch_size for one model: (forward passes, rows in all, passes of one row)."""
    return (metric(url, "rmserve_batch_size_count", model=model),
            metric(url, "rmserve_batch_size_sum", model=model),
            metric(url, "rmserve_batch_size_bucket", model=model, le="1.0"))


def test_batches_really_mix_requests(tiny_server: str, tiny_model_dirs: dict[str, Path]) -> None:
    """Concurrent single-item requests share forward passes (so the comparison above is of
    batched rewards), and sharing leaves each request's reward as it is alone."""
    name, requests = "bert-right", 16
    items = [{"text": f"request {i} shares a batch"} for i in range(requests)]
    folder = tiny_model_dirs[name]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, item) for item in items]
    passes_before, rows_before, singles_before = batch_sizes(tiny_server, name)

    async def one_item_each() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny_server, timeout=60) as client:
            return await asyncio.gather(*(
                client.post("/v1/score", json={"model": name, "inputs": [item]}) for item in items
            ))

    responses = asyncio.run(one_item_each())

    assert [r.status_code for r in responses] == [200] * requests
    served = [r.json()["rewards"][0] for r in responses]
    passes, rows, singles = (after - before for after, before in zip(
        batch_sizes(tiny_server, name), (passes_before, rows_before, singles_before), strict=True))
    assert rows == requests, f"{rows:g} rows were computed for {requests} one-item requests"
    assert rows > passes, f"{requests} one-item requests took {passes:g} forward passes: none shared one"
    assert passes > singles, f"every one of the {passes:g} forward passes held a single item"
    worst = max(abs(a - b) for a, b in zip(served, expected, strict=True))
    assert worst <= TOLERANCE, f"{name}: max |served - reference| = {worst:.2e}"

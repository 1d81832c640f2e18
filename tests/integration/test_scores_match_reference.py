"""Rewards from the running server equal an unbatched model(**inputs).logits reference."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import TINY_MODELS
from tests.integration.server import running_server

TOLERANCE = 1e-5
WORDS = ("hello world question answer reward model prompt response good bad helpful rude python "
         "cook pasta travel paris explain why because code function sorry cannot help the a of to "
         "in and is it you that was for on are with as they be at this from or").split()


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def mixed_items(seed: int, count: int = 30) -> list[dict[str, Any]]:
    """Pairs, multi-turn conversations and raw text, 1 to ~60 tokens, all within max length."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            items.append({"prompt": _sentence(rng, 1, 20), "response": _sentence(rng, 1, 25)})
        elif kind == 1:
            items.append({"messages": [
                {"role": "user", "content": _sentence(rng, 1, 8)},
                {"role": "assistant", "content": _sentence(rng, 1, 8)},
                {"role": "user", "content": _sentence(rng, 1, 8)},
                {"role": "assistant", "content": _sentence(rng, 1, 10)},
            ]})
        else:
            items.append({"text": _sentence(rng, 1, 40)})
    return items


def reference_reward(model: Any, tokenizer: Any, item: dict[str, Any]) -> float:
    """The plain, unbatched reference: the tokenizer's own encoding, one forward each."""
    if "text" in item:
        adds = not (tokenizer.bos_token and item["text"].startswith(tokenizer.bos_token))
        inputs = tokenizer(item["text"], add_special_tokens=adds, return_tensors="pt")
    else:
        messages = item.get("messages") or [
            {"role": "user", "content": item["prompt"]},
            {"role": "assistant", "content": item["response"]},
        ]
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            prompt = "\n".join(m["content"] for m in messages[:-1])
            inputs = tokenizer(prompt, messages[-1]["content"], return_tensors="pt")
    assert inputs["input_ids"].shape[1] <= tokenizer.model_max_length
    with torch.inference_mode():
        return model(**inputs).logits[0, 0].item()


async def _score_concurrently(url: str, model: str, items: list[dict[str, Any]]) -> list[float]:
    """Send the items as many small requests at once, so they share batches."""
    rng = random.Random(7)
    chunks, start = [], 0
    while start < len(items):
        size = rng.randint(1, 4)
        chunks.append(items[start : start + size])
        start += size
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post("/v1/score", json={"model": model, "inputs": chunk}) for chunk in chunks
        ))
    rewards: list[float] = []
    for response in responses:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == model and not any(body["truncated"])
        rewards.extend(body["rewards"])
    return rewards


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

    served = asyncio.run(_score_concurrently(tiny_server, name, items))

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

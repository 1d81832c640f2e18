"""Reference rewards and concurrent scoring, shared by every correctness test.

The reference is always a plain, unbatched `model(**inputs).logits` with the tokenizer's own
encoding: what rmserve must reproduce however it batches, pads or runs the model.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import torch

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
            kwargs = item.get("chat_template_kwargs", {})
            text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
            inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            prompt = "\n".join(m["content"] for m in messages[:-1])
            inputs = tokenizer(prompt, messages[-1]["content"], return_tensors="pt")
    assert inputs["input_ids"].shape[1] <= tokenizer.model_max_length
    with torch.inference_mode():
        return model(**inputs).logits[0, 0].item()


async def score_concurrently(url: str, model: str, items: list[dict[str, Any]]) -> list[float]:
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

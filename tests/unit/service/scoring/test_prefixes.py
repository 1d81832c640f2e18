"""Shared-prompt reuse is exact: rewards equal the plain model(**inputs).logits of each full row."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from service.backends.torch_backend import TorchBackend
from service.loading import load_tokenizer
from service.scoring.formatting import InputFormatter
from service.scoring.items import Conversation, Message, PromptResponse, RawText
from service.scoring.prefixes import share_prefixes
from tests.integration.reference import WORDS, reference_reward

TOLERANCE = 1e-4


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _requests(rng: random.Random, n: int) -> list:
    """Three prompts (one a multi-turn chat) with n candidates each of mixed lengths, shuffled."""
    prompts = [_words(rng, 25, 30), _words(rng, 20, 25)]
    chat = (Message("user", _words(rng, 8, 10)), Message("assistant", _words(rng, 5, 8)),
            Message("user", _words(rng, 8, 10)))
    items: list = []
    for _ in range(n):
        items += [PromptResponse(prompt, _words(rng, 1, 12)) for prompt in prompts]
        items.append(Conversation((*chat, Message("assistant", _words(rng, 1, 12)))))
    rng.shuffle(items)
    return items


def _as_dict(item) -> dict:
    if isinstance(item, PromptResponse):
        return {"prompt": item.prompt, "response": item.response}
    if isinstance(item, RawText):
        return {"text": item.text}
    return {"messages": [{"role": m.role, "content": m.content} for m in item.messages]}


@pytest.mark.parametrize("name", ["gpt2-left", "llama-left"])
@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_rewards_with_shared_prompts_equal_full_sequences(
    name: str, n: int, tiny_model_dirs: dict[str, Path]
) -> None:
    folder = tiny_model_dirs[name]
    tokenizer = load_tokenizer(folder)
    formatter = InputFormatter(tokenizer, tokenizer.model_max_length)
    backend = TorchBackend.load(folder, pad_token_id=tokenizer.pad_token_id, device="cpu", dtype="float32")
    items = _requests(random.Random(n), n)
    formatted = formatter.format(items)
    assert not any(f.truncated for f in formatted)

    pairs, saved = share_prefixes(items, [f.pair for f in formatted], min_tokens=8)
    shared = backend.score(pairs)

    if n > 1:  # every prompt was shared, and each row kept at least its last token to itself
        assert saved > 0 and all(p.shared_prefix >= 8 for p in pairs)
        assert all(p.shared_prefix < len(p) for p in pairs)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    reference_tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, reference_tokenizer, _as_dict(item)) for item in items]
    worst = max(abs(a - b) for a, b in zip(shared, expected, strict=True))
    assert worst <= TOLERANCE, f"max |shared - full| = {worst:.2e}"


def test_only_identical_tokens_are_shared_and_text_items_group_by_their_first_tokens(
    tiny_model_dirs: dict[str, Path]
) -> None:
    tokenizer = load_tokenizer(tiny_model_dirs["llama-left"])
    formatter = InputFormatter(tokenizer, tokenizer.model_max_length)
    prompt = "explain why the water is hot and the code is good"
    items = [PromptResponse(prompt, "yes"), PromptResponse(prompt, "no because"),
             RawText(f"{prompt} one"), RawText(f"{prompt} two"), PromptResponse("other", "alone")]
    pairs = [f.pair for f in formatter.format(items)]
    marked, _ = share_prefixes(items, pairs, min_tokens=4)
    for group in ([0, 1], [2, 3]):
        a, b = (marked[i] for i in group)
        assert a.shared_prefix == b.shared_prefix > 4
        assert a.input_ids[: a.shared_prefix] == b.input_ids[: b.shared_prefix]
        assert a.input_ids[a.shared_prefix] != b.input_ids[b.shared_prefix]  # the longest, no more
    assert marked[4].shared_prefix == 0

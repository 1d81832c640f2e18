"""Property: a reward depends on its item alone, not on the batch it shared, its place in that
batch, or the tokenizer's padding side."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.backends.torch_backend import TorchBackend
from service.loading import load_tokenizer
from service.scoring.formatting import InputFormatter
from service.scoring.items import PromptResponse
from tests.integration.reference import WORDS

TOLERANCE = 1e-5


def _load(folder: Path) -> tuple[InputFormatter, TorchBackend]:
    tokenizer = load_tokenizer(folder)
    formatter = InputFormatter(tokenizer, tokenizer.model_max_length)
    backend = TorchBackend.load(folder, pad_token_id=tokenizer.pad_token_id, device="cpu", dtype="float32")
    return formatter, backend


@pytest.fixture(scope="module")
def loaded(tiny_model_dirs: dict[str, Path]) -> dict[str, tuple[InputFormatter, TorchBackend]]:
    return {name: _load(folder) for name, folder in tiny_model_dirs.items()}


words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join)
items = st.lists(st.builds(PromptResponse, words, words), min_size=1, max_size=12)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=items, data=st.data())
def test_reward_is_independent_of_batch_order_and_padding_side(
    family: str, loaded: dict[str, tuple[InputFormatter, TorchBackend]], items: list, data: st.DataObject
) -> None:
    (right_format, right), (left_format, left) = loaded[f"{family}-right"], loaded[f"{family}-left"]
    pairs = [f.pair for f in right_format.format(items)]
    assert [f.pair for f in left_format.format(items)] == pairs, "padding side changed the tokens"
    alone = [right.score([pair])[0] for pair in pairs]

    order = data.draw(st.permutations(range(len(pairs))), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(pairs) - 1), max_size=3), label="cuts")
                  if len(pairs) > 1 else set())
    for backend in (right, left):
        shuffled: list[float] = []
        for start, end in zip([0, *cuts], [*cuts, len(pairs)], strict=True):
            shuffled.extend(backend.score([pairs[i] for i in order[start:end]]))
        batched = [0.0] * len(pairs)
        for position, index in enumerate(order):
            batched[index] = shuffled[position]
        worst = max(abs(a - b) for a, b in zip(batched, alone, strict=True))
        assert worst <= TOLERANCE, f"max |batched - alone| = {worst:.2e}"

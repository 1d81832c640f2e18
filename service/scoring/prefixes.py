"""Which items of a request share a prompt, and how many of their tokens are really the same.

Best-of-n candidates and a PPO step's rollouts share a prompt; a decoder sees its tokens the
same way in every row, so they need computing once. Items are grouped by their prompt (for
`text` items, by their first tokens) and a group shares its longest common token prefix: never
more than the tokens that are identical in every row, however the chat template or the tokenizer
merged them at the prompt's end, so the result is exact by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

from service.backends.base import EncodedPair
from service.scoring.items import Conversation, PromptResponse, RawText, ScoreInput


def share_prefixes(
    items: Sequence[ScoreInput], pairs: Sequence[EncodedPair], min_tokens: int
) -> tuple[list[EncodedPair], int]:
    """The pairs, those in a group of two or more with at least `min_tokens` tokens in common
    marked with that shared prefix; and how many prefix tokens need no computing (per group,
    all rows but one)."""
    groups: dict[Hashable, list[int]] = {}
    for index, (item, pair) in enumerate(zip(items, pairs, strict=True)):
        if pair.token_type_ids is None:  # continuations carry no token types: such rows stay whole
            groups.setdefault(_prompt_key(item, pair, min_tokens), []).append(index)
    marked, saved = list(pairs), 0
    for rows in groups.values():
        if len(rows) < 2:
            continue
        # Each row keeps at least its last token: the reward is read there.
        shared = min(_common_prefix([pairs[i].input_ids for i in rows]),
                     min(len(pairs[i]) for i in rows) - 1)
        if shared >= min_tokens:
            for i in rows:
                marked[i] = dataclasses.replace(pairs[i], shared_prefix=shared)
            saved += shared * (len(rows) - 1)
    return marked, saved


def _prompt_key(item: ScoreInput, pair: EncodedPair, min_tokens: int) -> Hashable:
    if isinstance(item, PromptResponse):
        return ("prompt", item.prompt)
    if isinstance(item, Conversation):
        return ("conversation", item.messages[:-1], item.template_kwargs)
    assert isinstance(item, RawText)
    return ("text", pair.input_ids[:min_tokens])


def _common_prefix(rows: Sequence[tuple[int, ...]]) -> int:
    first, length = rows[0], min(len(row) for row in rows)
    for row in rows[1:]:
        length = next((i for i in range(length) if row[i] != first[i]), length)
    return length

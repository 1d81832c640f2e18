"""From a request's items to what the batcher queues: the cheap checks first (counts, sizes), then
formatting and tokenising (a chunk at a time: see pipeline.py), then the checks on tokens, then
prompt grouping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.backends.base import EncodedPair
from service.scoring.errors import InvalidInputError, TooLargeError, TooManyInputsError
from service.scoring.formatting import FormattedItem, InputFormatter
from service.scoring.items import Conversation, PromptResponse, ScoreInput
from service.scoring.prefixes import share_prefixes


@dataclass(frozen=True)
class ScoringLimits:
    max_inputs_per_request: int = 65536
    max_chars_per_field: int = 100_000
    reject_too_long: bool = False  # else truncate
    min_shared_prefix_tokens: int | None = 32  # None: never share prompts


def check_request(items: Sequence[ScoreInput], limits: ScoringLimits) -> None:
    """What costs nothing to check, before anything is tokenised."""
    if not items:
        raise InvalidInputError("inputs must hold at least one item")
    if len(items) > limits.max_inputs_per_request:
        raise TooManyInputsError(
            f"{len(items)} inputs in one request; the limit is {limits.max_inputs_per_request}: "
            "split the request"
        )
    _check_field_sizes(items, limits.max_chars_per_field)


def tokenize(
    items: Sequence[ScoreInput], formatter: InputFormatter, limits: ScoringLimits, offset: int = 0
) -> list[FormattedItem]:
    """Format and tokenise (slow for long inputs: call it off the event loop), then check tokens.
    `items` are a request's from inputs[offset], which errors name."""
    formatted = formatter.format(items)
    if empty := [i for i, f in enumerate(formatted) if not f.pair.input_ids]:
        # A zero-length row would fail the whole batch it joins, other callers' items included.
        raise InvalidInputError(
            f"inputs[{offset + empty[0]}] encodes to no tokens for this model: give it some text"
        )
    if limits.reject_too_long:
        _check_lengths(formatted, formatter.max_length, offset)
    return formatted


def group_prompts(
    items: Sequence[ScoreInput], pairs: Sequence[EncodedPair], limits: ScoringLimits, *, backend_shares: bool
) -> tuple[list[EncodedPair], int]:
    """The pairs to queue, rows sharing a prompt marked where the backend computes it once; and how
    many prompt tokens need no computing."""
    if not backend_shares or limits.min_shared_prefix_tokens is None:
        return list(pairs), 0
    return share_prefixes(items, pairs, limits.min_shared_prefix_tokens)


def _fields(item: ScoreInput) -> list[tuple[str, str]]:
    if isinstance(item, PromptResponse):
        return [("prompt", item.prompt), ("response", item.response)]
    if isinstance(item, Conversation):
        return [(f"messages[{i}].content", m.content) for i, m in enumerate(item.messages)]
    return [("text", item.text)]


def _check_field_sizes(items: Sequence[ScoreInput], limit: int) -> None:
    for index, item in enumerate(items):
        for name, text in _fields(item):
            if len(text) > limit:
                raise TooLargeError(
                    f"inputs[{index}].{name} has {len(text)} characters; the limit is {limit}"
                )


def _check_lengths(formatted: Sequence[FormattedItem], max_length: int, offset: int) -> None:
    too_long = [offset + i for i, f in enumerate(formatted) if f.truncated]
    if too_long:
        shown = ", ".join(f"inputs[{i}]" for i in too_long[:5]) + (" ..." if len(too_long) > 5 else "")
        raise TooLargeError(
            f"{shown}: longer than the model's {max_length} tokens; shorten them (this server rejects "
            "rather than truncates)"
        )

"""Preference files (PAIRS): JSON lines read into comparisons of two scoreable inputs.

Three layouts are understood, one per line, as TRL and Anthropic write them:

- plain:          {"prompt": str, "chosen": str, "rejected": str}
- conversational: {"prompt": [messages], "chosen": [messages], "rejected": [messages]}, or
                  {"chosen": [messages], "rejected": [messages]} with the prompt inside each
- hh-rlhf:        {"chosen": transcript, "rejected": transcript}, where a transcript is
                  "\\n\\nHuman: ..." / "\\n\\nAssistant: ..." turns (parsed into user/assistant messages)

A file may be gzipped (`.gz`). Other keys on a line are ignored.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput

Judged = PromptResponse | Conversation
_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


T = TypeVar("T")


class DataError(ValueError):
    """A PAIRS or reference file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """One preference: `chosen` was judged better than `rejected` (usually the same prompt)."""

    chosen: Judged
    rejected: Judged


def read_pairs(path: Path, *, limit: int = 0) -> list[Comparison]:
    """Every comparison in a PAIRS file, in file order (the first `limit` lines when > 0)."""
    return [parse_at(path, number, _comparison, row) for number, row in read_rows(path, limit)]


def read_reference_items(path: Path, *, limit: int = 0) -> list[ScoreInput]:
    """Inputs for calibration: both sides of each PAIRS line, or single items written as the
    HTTP API takes them ({"prompt", "response"}, {"messages"} or {"text"})."""
    items: list[ScoreInput] = []
    for number, row in read_rows(path, limit):
        if "chosen" in row:
            pair = parse_at(path, number, _comparison, row)
            items += [pair.chosen, pair.rejected]
        else:
            items.append(parse_at(path, number, parse_item, row))
    return items


def split_pairs(pairs: Sequence[T], held_out_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(training, held-out): a seeded shuffle, so a file sorted by topic or source splits evenly
    (pairs, or any other rows such as rated items)."""
    if not 0 < held_out_fraction < 1:
        raise DataError(f"the held-out fraction must be between 0 and 1, not {held_out_fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(len(pairs) * held_out_fraction))
    if cut >= len(pairs):
        raise DataError(f"{len(pairs)} pairs are too few to hold {held_out_fraction:.0%} out and train")
    return [pairs[i] for i in order[cut:]], [pairs[i] for i in order[:cut]]


def parse_transcript(transcript: str) -> tuple[Message, ...]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> (user: a, assistant: b). Text before the first turn
    marker is not part of the conversation and is dropped."""
    parts = _TURN.split(transcript)
    roles, contents = parts[1::2], parts[2::2]
    return tuple(Message(_ROLES[r], c.strip()) for r, c in zip(roles, contents, strict=True))


def read_rows(path: Path, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            produced = 0
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                if limit and produced == limit:
                    return
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object")
                produced += 1
                yield number, row
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_at(path: Path, number: int, parse: Any, row: dict[str, Any]) -> Any:
    try:
        return parse(row)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}:{number}: {exc}") from None


def _comparison(row: dict[str, Any]) -> Comparison:
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if chosen is None or rejected is None:
        raise ValueError("a pair needs 'chosen' and 'rejected'")
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        return Comparison(PromptResponse(prompt, chosen), PromptResponse(prompt, rejected))
    if isinstance(chosen, list) and isinstance(rejected, list):
        if prompt is not None and not isinstance(prompt, list):
            raise ValueError("with conversational 'chosen'/'rejected', 'prompt' must be messages too")
        context = _messages(prompt) if prompt else ()
        return Comparison(
            Conversation(context + _messages(chosen)), Conversation(context + _messages(rejected))
        )
    if prompt is None and isinstance(chosen, str) and isinstance(rejected, str):
        return Comparison(_transcript(chosen), _transcript(rejected))
    raise ValueError(
        "expected plain ('prompt', 'chosen', 'rejected' strings), conversational (message lists) "
        "or hh-rlhf ('chosen'/'rejected' transcripts) fields"
    )


def _transcript(text: str) -> Conversation:
    messages = parse_transcript(text)
    if not messages:
        raise ValueError("a 'chosen'/'rejected' string without 'prompt' must be an hh-rlhf transcript "
                         "('\\n\\nHuman: ...\\n\\nAssistant: ...')")
    return Conversation(messages)


def _messages(value: list[Any]) -> tuple[Message, ...]:
    messages = tuple(Message(str(m["role"]), m["content"]) for m in value)
    if not messages or not all(isinstance(m.content, str) for m in messages):
        raise ValueError("messages must be a non-empty list of {'role', 'content': str}")
    return messages


def parse_item(row: dict[str, Any]) -> ScoreInput:
    if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
        return PromptResponse(row["prompt"], row["response"])
    if isinstance(row.get("messages"), list):
        return Conversation(_messages(row["messages"]))
    if isinstance(row.get("text"), str):
        return RawText(row["text"])
    raise ValueError("expected a pair ('chosen', 'rejected') or an item ('prompt' and 'response', "
                     "'messages' or 'text')")

"""A tokenizer's control tokens, and how client text that spells one is kept text.

A chat template writes control tokens (`<|im_start|>`, `[SEP]`, `</s>`) around the messages. A
client's message that spells one must not become one: it could forge a turn, which a reward
model under RL would learn to exploit. So client strings are rendered with a placeholder in
place of each control-token string; the template's own control tokens are then the only ones in
the rendered text; and each stretch between two of them that held a placeholder is encoded on
its own, with the placeholders' strings back in place and read as text. Stretches between
control tokens are what the tokenizer encodes apart anyway, so text without such strings gets
exactly the tokens it always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

# Private-use characters (plane 15) stand in for control-token strings while the template renders.
_PLACEHOLDERS = range(0xF0000, 0xFFFFE)


Span = tuple[int, int]


@dataclass(slots=True)
class AssembledEncoding:
    """An encoding assembled from pieces, read like a tokenizers Encoding."""

    ids: list[int] = field(default_factory=list)
    offsets: list[Span] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    type_ids: list[int] = field(default_factory=list)

    def add(self, ids: Sequence[int], offsets: Iterable[Span]) -> None:
        self.ids += ids
        self.offsets += offsets
        self.special_tokens_mask += [0] * len(ids)
        self.type_ids += [0] * len(ids)


class ControlTokens:
    """The tokenizer's special tokens, where client strings spell them, and encoders that read
    them as text (a copy of the tokenizer's pipeline, never the shared tokenizer's state)."""

    def __init__(self, tokenizer: Any) -> None:
        backend = tokenizer.backend_tokenizer
        special = {i: t for i, t in backend.get_added_tokens_decoder().items() if t.special}
        self.ids = frozenset(special) | frozenset(tokenizer.all_special_ids)
        self.strings = {t.content: i for i, t in special.items()}
        longest_first = sorted(self.strings, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        # A special token matched after normalisation could be spelled other ways (e.g. in
        # capitals under a lowercasing normaliser): such text is refused, not guessed at.
        self._normalizer = backend.normalizer
        self._normalized = [t.content for t in special.values() if t.normalized]
        self.as_text = _copy(backend, continuation=False)
        # A stretch after a control token must not get the prefix space SentencePiece-style
        # pre-tokenizers add at the start of the text ("first" scheme): a copy that never adds it.
        self.as_text_after = _copy(backend, continuation=True)
        self._template = str(getattr(tokenizer, "chat_template", "") or "")

    def spelled_in(self, text: str) -> set[str]:
        """The control-token strings that occur in a client's string."""
        return set(self._pattern.findall(text)) if self._pattern else set()

    def normalizes_into_one(self, text: str) -> str | None:
        """A normalised special token that `text` turns into once normalised, if any."""
        if not self._normalized or self._normalizer is None:
            return None
        normalized = self._normalizer.normalize_str(text)
        return next((s for s in self._normalized if s in normalized), None)

    def placeholders(self, strings: Iterable[str], found: set[str]) -> dict[str, str]:
        """A private-use character for each control-token string found, one that occurs in none
        of the client's strings nor in the template (so no placeholder can be forged either)."""
        used = set(self._template).union(*map(set, strings))
        free = (chr(c) for c in _PLACEHOLDERS if chr(c) not in used)
        return {string: next(free) for string in sorted(found)}

    def substitute(self, text: str, marks: dict[str, str]) -> str:
        """The text with each control-token string (matched as the tokenizer would: leftmost,
        longest) replaced by its placeholder."""
        if not marks or self._pattern is None:
            return text
        return self._pattern.sub(lambda match: marks[match.group()], text)


    def encode_defused(
        self, rendered: str, marks: dict[str, str], prompt_spans: list[Span], response_span: Span | None,
        encode: Callable[[str], Any],
    ) -> tuple[AssembledEncoding, list[Span], Span | None]:
        """A chat rendered with placeholders, encoded: the template's control tokens as the
        tokenizer finds them (the rendered text holds no others), each stretch between them as
        text with the placeholders' strings back. Also the messages' spans in the final text."""
        controls = [
            (token, offsets) for token, offsets in zip(*_ids_and_offsets(encode(rendered)), strict=True)
            if token in self.ids and rendered[offsets[0] : offsets[1]].strip() in self.strings
        ]
        text, where = restore(rendered, marks)
        cuts = stretches(len(rendered), [offsets for _, offsets in controls])
        parts = [(start, 1, i) for i, (start, _) in enumerate(cuts)]
        parts += [(offsets[0], 0, i) for i, (_, offsets) in enumerate(controls)]
        pieces = self._encode_stretches(text, [(where[a], where[b]) for a, b in cuts])
        tokens = AssembledEncoding()
        for _, is_text, i in sorted(parts):
            if is_text:
                shift = where[cuts[i][0]]
                tokens.add(pieces[i].ids, [(shift + a, shift + b) for a, b in pieces[i].offsets])
            else:
                token, (a, b) = controls[i]
                tokens.add([token], [(where[a], where[b])])
        spans = [(where[a], where[b]) for a, b in prompt_spans]
        response = (where[response_span[0]], where[response_span[1]]) if response_span else None
        return tokens, spans, response

    def _encode_stretches(self, text: str, cuts: list[Span]) -> list[Any]:
        """Each stretch of text as text, the one at the very start of the text as such."""
        pieces: list[Any] = [None] * len(cuts)
        at_start = [i for i, (start, _) in enumerate(cuts) if start == 0]
        after = [i for i, (start, _) in enumerate(cuts) if start > 0]
        for encoder, chosen in ((self.as_text, at_start), (self.as_text_after, after)):
            if chosen:
                batch = [text[slice(*cuts[i])] for i in chosen]
                encodings = encoder.encode_batch(batch, add_special_tokens=False)
                for i, encoding in zip(chosen, encodings, strict=True):
                    pieces[i] = encoding
        return pieces


def _ids_and_offsets(encoding: Any) -> tuple[list[int], list[Span]]:
    return encoding.ids, encoding.offsets


def _copy(backend: Tokenizer, *, continuation: bool) -> Tokenizer:
    """The same pipeline with special tokens read as text, no padding and no truncation."""
    config = json.loads(backend.to_str())
    if continuation:
        _never_prepend(config.get("pre_tokenizer"))
    copy = Tokenizer.from_str(json.dumps(config))
    copy.encode_special_tokens = True
    copy.no_padding()
    copy.no_truncation()
    return copy


def _never_prepend(node: Any) -> None:
    """Metaspace with prepend_scheme "first" prepends only at the start of the text; the
    tokenizer's own stretches after a control token do not start there."""
    if isinstance(node, dict):
        if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
            node["prepend_scheme"] = "never"
        for value in node.values():
            _never_prepend(value)
    elif isinstance(node, list):
        for value in node:
            _never_prepend(value)


def restore(text: str, marks: dict[str, str]) -> tuple[str, list[int]]:
    """The text with each placeholder back as its control-token string, and where each of the
    text's positions (and its end) lands in the result."""
    back = {mark: string for string, mark in marks.items()}
    out: list[str] = []
    where: list[int] = []
    start = shift = 0
    for found in re.finditer("|".join(map(re.escape, back)) or "(?!)", text):
        at = found.start()
        out += [text[start:at], back[found.group()]]
        where += range(start + shift, at + shift + 1)  # the placeholder's own position too
        shift += len(back[found.group()]) - 1
        start = at + 1
    out.append(text[start:])
    where += range(start + shift, len(text) + shift + 1)
    return "".join(out), where


def stretches(length: int, controls: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches of a text of `length` characters between its control tokens' (start, end)."""
    cuts, start = [], 0
    for begin, end in controls:
        if begin > start:
            cuts.append((start, begin))
        start = max(start, end)
    if length > start:
        cuts.append((start, length))
    return cuts

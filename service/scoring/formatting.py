"""Turn score inputs into token ids: chat template, text pair or raw text, then truncation.

Truncation keeps what is being judged: tokens of the prompt go first, from the left, then
tokens of the response from the right. Template scaffolding and special tokens are never cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.backends.base import EncodedPair
from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput

# The role of each token when the sequence is too long.
_KEEP, _PROMPT, _RESPONSE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class FormattedItem:
    """An input ready for the batcher, and whether it had to be shortened."""

    pair: EncodedPair
    truncated: bool


class InputFormatter:
    """Renders and tokenises inputs exactly as the reward model was trained to see them."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if not tokenizer.is_fast:
            raise ValueError("rmserve needs a fast (Rust) tokenizer for offsets-based truncation")
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._with_token_types = "token_type_ids" in tokenizer.model_input_names
        self._special_ids = frozenset(tokenizer.all_special_ids)

    def format(self, items: Sequence[ScoreInput]) -> list[FormattedItem]:
        """Format a request's items, in order (one tokenizer call per kind of encoding)."""
        pairs: list[tuple[int, str, str]] = []
        texts: list[tuple[int, str, list[tuple[int, int]], tuple[int, int] | None, bool]] = []
        for index, item in enumerate(items):
            if isinstance(item, RawText):
                texts.append((index, item.text, [], None, self._adds_bos(item.text)))
            elif self.has_chat_template:
                text, prompt_spans, response_span = self._render_chat(_as_messages(item))
                texts.append((index, text, prompt_spans, response_span, False))
            else:
                prompt, response = _as_text_pair(item)
                pairs.append((index, prompt, response))

        results: list[FormattedItem | None] = [None] * len(items)
        if pairs:
            encodings = self._tokenizer(
                [p for _, p, _ in pairs], [r for _, _, r in pairs], **self._encode_options(True)
            ).encodings
            for (index, _, _), encoding in zip(pairs, encodings, strict=True):
                roles = [_role_of_pair_token(seq) for seq in encoding.sequence_ids]
                results[index] = self._truncate(encoding, roles)
        for add_special in (True, False):
            group = [t for t in texts if t[4] == add_special]
            if not group:
                continue
            encodings = self._tokenizer(
                [t[1] for t in group], **self._encode_options(add_special)
            ).encodings
            for (index, _, prompt_spans, response_span, _), encoding in zip(
                group, encodings, strict=True
            ):
                roles = _roles_from_spans(encoding, prompt_spans, response_span)
                results[index] = self._truncate(encoding, roles)
        return [r for r in results if r is not None]

    def _encode_options(self, add_special_tokens: bool) -> dict[str, Any]:
        return {
            "add_special_tokens": add_special_tokens,
            "truncation": False,
            "return_offsets_mapping": True,
            "return_special_tokens_mask": True,
            "return_token_type_ids": self._with_token_types,
            "verbose": False,
        }

    def _adds_bos(self, text: str) -> bool:
        """Raw text gets the tokenizer's special tokens unless it already starts with BOS."""
        bos = self._tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def _render_chat(
        self, messages: list[Message]
    ) -> tuple[str, list[tuple[int, int]], tuple[int, int] | None]:
        """Render with the model's template; find each message's content in the text."""
        text = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages], tokenize=False
        )
        spans: list[tuple[int, int]] = []
        cursor = 0
        for message in messages:
            start = text.find(message.content, cursor)
            if start < 0:  # the template rewrote the content: cut from the left as raw text
                return text, [(0, len(text))], None
            spans.append((start, start + len(message.content)))
            cursor = start + len(message.content)
        return text, spans[:-1], spans[-1]

    def _truncate(self, encoding: Any, roles: list[int]) -> FormattedItem:
        ids: list[int] = encoding.ids
        # Special tokens (added by the tokenizer, or already in a raw text, like BOS) are never cut.
        roles = [
            _KEEP if special or token in self._special_ids else role
            for token, role, special in zip(ids, roles, encoding.special_tokens_mask, strict=True)
        ]
        excess = len(ids) - self.max_length
        keep = [True] * len(ids)
        if excess > 0:
            excess = _drop(keep, roles, _PROMPT, excess, from_left=True)
            excess = _drop(keep, roles, _RESPONSE, excess, from_left=False)
            if excess > 0:  # scaffolding alone is too long: keep the head, as HF would
                for i in range(len(ids) - 1, -1, -1):
                    if excess == 0:
                        break
                    if keep[i]:
                        keep[i], excess = False, excess - 1
        truncated = not all(keep)
        kept_ids = tuple(t for t, k in zip(ids, keep, strict=True) if k)
        token_types = None
        if self._with_token_types:
            token_types = tuple(t for t, k in zip(encoding.type_ids, keep, strict=True) if k)
        return FormattedItem(EncodedPair(kept_ids, token_types), truncated)


def _drop(keep: list[bool], roles: list[int], role: int, excess: int, *, from_left: bool) -> int:
    order = range(len(roles)) if from_left else range(len(roles) - 1, -1, -1)
    for i in order:
        if excess == 0:
            break
        if roles[i] == role and keep[i]:
            keep[i], excess = False, excess - 1
    return excess


def _role_of_pair_token(sequence_id: int | None) -> int:
    return {0: _PROMPT, 1: _RESPONSE}.get(sequence_id, _KEEP)  # type: ignore[arg-type]


def _roles_from_spans(
    encoding: Any, prompt_spans: list[tuple[int, int]], response_span: tuple[int, int] | None
) -> list[int]:
    """Raw text (no spans) counts as prompt: it is cut from the left, keeping its end."""
    if not prompt_spans and response_span is None:
        return [_PROMPT] * len(encoding.ids)
    roles = []
    for start, end in encoding.offsets:
        if response_span and response_span[0] <= start < response_span[1] and end > start:
            roles.append(_RESPONSE)
        elif any(s <= start < e for s, e in prompt_spans) and end > start:
            roles.append(_PROMPT)
        else:
            roles.append(_KEEP)
    return roles


def _as_messages(item: PromptResponse | Conversation) -> list[Message]:
    if isinstance(item, Conversation):
        return list(item.messages)
    return [Message("user", item.prompt), Message("assistant", item.response)]


def _as_text_pair(item: PromptResponse | Conversation) -> tuple[str, str]:
    """Without a chat template, earlier turns form the prompt and the last turn the response."""
    if isinstance(item, PromptResponse):
        return item.prompt, item.response
    *earlier, last = item.messages
    return "\n".join(m.content for m in earlier), last.content

"""Turn score inputs into token ids: chat template, text pair or raw text, then truncation.

Truncation keeps what is being judged: tokens of the prompt go first, from the left, then
tokens of the response from the right. Template scaffolding and special tokens are never cut.
Client strings are text: a control token they spell is encoded as text (control_tokens.py),
except in a raw `text` item, which is the model's input as is.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jinja2 import TemplateError

from service.backends.base import EncodedPair
from service.scoring.control_tokens import ControlTokens
from service.scoring.errors import InvalidInputError
from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput

# The role of each token when the sequence is too long.
_KEEP, _PROMPT, _RESPONSE = 0, 1, 2
# Python strings may hold lone surrogates (JSON's "\ud800"); the tokenizer's Rust strings cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")
# What chat templates raise for messages they refuse (raise_exception) or cannot render.
_TEMPLATE_ERRORS = (TemplateError, ValueError, TypeError, KeyError, IndexError, AttributeError)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Rendered:
    """A chat rendered with placeholders for the control-token strings its client strings spell
    (`marks`: string -> placeholder; empty for most chats), and where its messages' contents are."""

    text: str
    prompt_spans: list[tuple[int, int]]
    response_span: tuple[int, int] | None
    marks: dict[str, str] = field(default_factory=dict)


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
        self._control = ControlTokens(tokenizer)
        self._render_arguments = frozenset(inspect.signature(tokenizer.apply_chat_template).parameters)
        # Never cut, as scaffolding; but an unknown token is what unknown text becomes: cut it.
        self._keep_ids = self._control.ids - {tokenizer.unk_token_id}

    @property
    def tokenizer(self) -> Any:  # for what else needs its vocabulary (OpenRLHF's padding)
        return self._tokenizer

    def format(self, items: Sequence[ScoreInput]) -> list[FormattedItem]:
        """Format a request's items, in order (one tokenizer call per kind of encoding)."""
        pairs: list[tuple[int, str, str]] = []
        texts: list[tuple[int, str, list[tuple[int, int]], tuple[int, int] | None, bool]] = []
        defused: list[tuple[int, _Rendered]] = []
        for index, item in enumerate(items):
            _check_encodable(index, item)
            if isinstance(item, RawText):
                texts.append((index, item.text, [], None, self._adds_bos(item.text)))
            elif self.has_chat_template:
                kwargs = self._template_kwargs(index, item)
                rendered = self._render_chat(index, _as_messages(item), kwargs)
                if rendered.marks:
                    defused.append((index, rendered))
                else:
                    texts.append((index, rendered.text, rendered.prompt_spans, rendered.response_span, False))
            else:
                pairs.append((index, *self._text_pair(index, item)))

        results: list[FormattedItem | None] = [None] * len(items)
        if pairs:
            # Special tokens are read as text; the tokenizer still adds its own ([CLS], [SEP]).
            encodings = _blaming([i for i, _, _ in pairs], [(p, r) for _, p, r in pairs], lambda batch: (
                self._control.as_text.encode_batch(batch, add_special_tokens=True)))
            for (index, _, _), encoding in zip(pairs, encodings, strict=True):
                roles = [_role_of_pair_token(seq) for seq in encoding.sequence_ids]
                results[index] = self._truncate(encoding, roles)
        for add_special in (True, False):
            group = [t for t in texts if t[4] == add_special]
            if not group:
                continue
            options = self._encode_options(add_special)
            encodings = _blaming([t[0] for t in group], [t[1] for t in group], lambda batch, o=options: (
                self._tokenizer(batch, **o).encodings))
            for (index, _, prompt_spans, response_span, _), encoding in zip(
                group, encodings, strict=True
            ):
                roles = _roles_from_spans(encoding, prompt_spans, response_span)
                results[index] = self._truncate(encoding, roles)
        for index, rendered in defused:
            tokens, prompt_spans, response_span = self._control.encode_defused(
                rendered.text, rendered.marks, rendered.prompt_spans, rendered.response_span,
                lambda text: self._tokenizer(text, **self._encode_options(False)).encodings[0],
            )
            results[index] = self._truncate(tokens, _roles_from_spans(tokens, prompt_spans, response_span))
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

    def _text_pair(self, index: int, item: PromptResponse | Conversation) -> tuple[str, str]:
        prompt, response = _as_text_pair(item)
        for name, text in (("prompt", prompt), ("response", response)):
            self._refuse_normalized_control(index, name, text)
        return prompt, response

    def _template_kwargs(self, index: int, item: PromptResponse | Conversation) -> dict[str, Any]:
        """A conversation's chat-template variables; never one of apply_chat_template's own
        arguments (a client must not pass its own template, or tokenize)."""
        kwargs = dict(item.template_kwargs) if isinstance(item, Conversation) else {}
        if reserved := sorted(kwargs.keys() & self._render_arguments):
            raise InvalidInputError(
                f"inputs[{index}].chat_template_kwargs: {', '.join(reserved)} cannot be set by a request"
            )
        return kwargs

    def _render_chat(
        self, index: int, messages: list[Message], template_kwargs: dict[str, Any] | None = None
    ) -> _Rendered:
        """Render with the model's template (control-token strings of the client's strings as
        placeholders); find each message's content in the text."""
        strings = [s for m in messages for s in (m.role, m.content)]
        for name, text in _message_fields(messages):
            self._refuse_normalized_control(index, name, text)
        found = set().union(*map(self._control.spelled_in, strings))
        marks = self._control.placeholders(strings, found) if found else {}
        substitute = self._control.substitute
        messages = [Message(substitute(m.role, marks), substitute(m.content, marks)) for m in messages]
        try:
            text = self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], tokenize=False,
                **(template_kwargs or {}),
            )
        except _TEMPLATE_ERRORS as exc:
            raise InvalidInputError(
                f"inputs[{index}]: this model's chat template refuses these messages ({exc}); send "
                "the roles and turns it accepts"
            ) from exc
        spans: list[tuple[int, int]] = []
        cursor = 0
        for message in messages:
            start = text.find(message.content, cursor)
            if start < 0:  # the template rewrote the content: cut from the left as raw text
                return _Rendered(text, [(0, len(text))], None, marks)
            spans.append((start, start + len(message.content)))
            cursor = start + len(message.content)
        return _Rendered(text, spans[:-1], spans[-1], marks)

    def _refuse_normalized_control(self, index: int, name: str, text: str) -> None:
        if special := self._control.normalizes_into_one(text):
            raise InvalidInputError(
                f"inputs[{index}].{name} reads as this model's control token {special!r} once "
                "normalised; reword it"
            )

    def _truncate(self, encoding: Any, roles: list[int]) -> FormattedItem:
        ids: list[int] = encoding.ids
        # Special tokens (added by the tokenizer, or already in a raw text, like BOS) are never cut.
        roles = [
            _KEEP if special or token in self._keep_ids else role
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


def _check_encodable(index: int, item: ScoreInput) -> None:
    """A lone surrogate cannot reach the tokenizer (it would fail the whole request)."""
    fields = ([("text", item.text)] if isinstance(item, RawText)
              else [("prompt", item.prompt), ("response", item.response)] if isinstance(item, PromptResponse)
              else _message_fields(item.messages))
    for name, text in fields:
        if bad := _SURROGATE.search(text):
            raise InvalidInputError(
                f"inputs[{index}].{name} holds a lone surrogate (U+{ord(bad.group()):04X}) at character "
                f"{bad.start()}, which is not Unicode text: send valid UTF-8"
            )


def _message_fields(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(f"messages[{i}].{key}", text) for i, m in enumerate(messages)
            for key, text in (("role", m.role), ("content", m.content))]


def _blaming(indices: list[int], inputs: list[Any], encode: Callable[[list[Any]], list[_T]]) -> list[_T]:
    """Encode a batch; if the tokenizer fails, find the item it fails on and name it (a bad item
    must be the caller's 422, never a 500 for the whole request)."""
    try:
        return encode(inputs)
    except BaseException as exc:
        if not _is_encoding_error(exc):
            raise
        for index, one in zip(indices, inputs, strict=True):
            try:
                encode([one])
            except BaseException as alone:
                if not _is_encoding_error(alone):
                    raise
                raise InvalidInputError(
                    f"inputs[{index}] cannot be encoded by this model's tokenizer ({alone}): send plain text"
                ) from alone
        raise


def _is_encoding_error(exc: BaseException) -> bool:
    """An Exception, or a panic inside the Rust tokenizer (pyo3's PanicException is a
    BaseException); never an interrupt or an exit."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


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

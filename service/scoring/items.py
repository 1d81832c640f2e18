"""The three kinds of input a caller can ask to be scored."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PromptResponse:
    """A prompt and the response being judged."""

    prompt: str
    response: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """A chat; the last message is the one being judged. `template_kwargs` are extra variables of
    the model's chat template (e.g. enable_thinking), as (name, value) pairs."""

    messages: tuple[Message, ...]
    template_kwargs: tuple[tuple[str, bool | int | float | str], ...] = ()


@dataclass(frozen=True, slots=True)
class RawText:
    """Text already formatted for the model, e.g. what a PPO trainer decoded."""

    text: str


ScoreInput = PromptResponse | Conversation | RawText

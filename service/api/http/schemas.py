"""Wire models of the HTTP API (JSON in, JSON out) and their conversion to domain items."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    model_validator,
)

from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput
from service.scoring.options import MAX_PRIORITY, ScoreOptions

# Most messages in one conversation (a chat template renders every one before truncation), and
# most models one combination may name.
MAX_MESSAGES, MAX_COMBINED_MODELS = 1024, 16


class _Strict(BaseModel):
    # Unknown fields are errors, so a typo is reported instead of silently ignored.
    model_config = ConfigDict(extra="forbid")


class MessageIn(_Strict):
    role: str = Field(min_length=1, examples=["user"])
    content: str


class PromptResponseIn(_Strict):
    prompt: str
    response: str


TemplateName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
TemplateValue = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=256)]


class MessagesIn(_Strict):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES, fail_fast=True)
    chat_template_kwargs: dict[TemplateName, TemplateValue] | None = Field(
        None, max_length=16, examples=[{"enable_thinking": False}],
        description="extra variables of the model's chat template, as TRL and vLLM pass them",
    )


class TextIn(_Strict):
    text: str


def _item_kind(item: Any) -> str | None:
    """Which kind of item an object is, by its fields: one error per bad item, not one per kind."""
    if isinstance(item, dict):
        return next((kind for kind in ("messages", "text") if kind in item), "pair")
    return _KINDS.get(type(item))


_KINDS: dict[type, str] = {PromptResponseIn: "pair", MessagesIn: "messages", TextIn: "text"}
ItemIn = Annotated[
    Annotated[PromptResponseIn, Tag("pair")] | Annotated[MessagesIn, Tag("messages")]
    | Annotated[TextIn, Tag("text")],
    Discriminator(_item_kind, custom_error_type="invalid_item",
                  custom_error_message="an item is an object with prompt and response, messages, or text"),
]


class _Scheduling(_Strict):
    # Strict: a "5" or a true is a client's mistake to report, not a number to guess at.
    priority: int | None = Field(
        None, strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY,
        description="higher is served sooner; default 0 for /v1/score, 10 for /v1/rank",
    )
    timeout_ms: int | None = Field(
        None, strict=True, ge=1, le=3_600_000,
        description="answer 504 (and drop the items) if they are not computed within this time",
    )

    normalize: bool = Field(
        False, strict=True,
        description="(r - mean) / std with the model's statistics (rmserve models calibrate)",
    )
    clip: float | None = Field(
        None, strict=True, gt=0, description="clip each returned reward to [-clip, clip]"
    )

    def options(self) -> ScoreOptions:
        timeout_s = self.timeout_ms / 1000 if self.timeout_ms else None
        return ScoreOptions(self.priority, timeout_s, self.normalize, self.clip)


class ScoreRequest(_Scheduling):
    inputs: list[ItemIn] = Field(min_length=1, fail_fast=True, description="items to score, in order")
    model: str | None = Field(None, description="served model name; default model when absent")
    combine: dict[str, StrictFloat] | None = Field(
        None, min_length=1, max_length=MAX_COMBINED_MODELS, examples=[{"helpful": 0.7, "harmless": 0.3}],
        description="served model -> weight: rewards are the weighted sum of these models' rewards "
        "(each normalised first with normalize: true); instead of `model`",
    )

    @model_validator(mode="after")
    def _model_or_combine(self) -> ScoreRequest:
        if self.combine is not None and self.model is not None:
            raise ValueError("give either 'model' or 'combine', not both")
        if self.combine and not all(math.isfinite(w) for w in self.combine.values()):
            raise ValueError("combine weights must be finite numbers")
        return self

    def items(self) -> list[ScoreInput]:
        return [_to_item(item) for item in self.inputs]


class Usage(BaseModel):
    tokens: int


class ScoreResponse(BaseModel):
    model: str = Field(description="the model, or 'combined' for a combine request")
    version: str
    rewards: list[float]
    truncated: list[bool]
    usage: Usage
    components: dict[str, list[float]] | None = Field(
        None, description="combine only: each model's rewards as weighted (normalised if asked)"
    )


class _AfterContext(_Scheduling):
    """Responses to one prompt or conversation (exactly one of them)."""

    prompt: str | None = None
    messages: list[MessageIn] | None = Field(None, min_length=1, max_length=MAX_MESSAGES, fail_fast=True)
    model: str | None = None

    @model_validator(mode="after")
    def _one_context(self) -> _AfterContext:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def conversation(self) -> list[Message]:
        if self.prompt is not None:
            return [Message("user", self.prompt)]
        return [Message(m.role, m.content) for m in self.messages or []]


class CompareRequest(_AfterContext):
    a: str = Field(description="one response")
    b: str = Field(description="the other response")


class CompareResponse(BaseModel):
    model: str
    version: str
    rewards: list[float] = Field(description="[reward of a, reward of b] (normalised if asked)")
    probability_a: float = Field(description="P(a preferred to b) = sigmoid(r_a - r_b), raw rewards")
    preferred: str = Field(description="'a' or 'b' ('a' on a tie)")


class RankRequest(_AfterContext):
    responses: list[str] = Field(min_length=1, fail_fast=True, description="candidate responses to rank")
    top_k: int | None = Field(None, strict=True, ge=1, description="return only the best k indices")


class RankResponse(BaseModel):
    model: str
    version: str
    rewards: list[float]
    ranking: list[int]
    best: int


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request (`--reward.remote_url http://host:port/get_reward`;
    `--remote_rm_url` before 0.10.2). Unknown keys are ignored: OpenRLHF versions add their own."""

    query: list[str] = Field(
        fail_fast=True,
        description="full formatted texts (prompt + response); empty when OpenRLHF shards fewer "
        "samples than it has reward servers, answered with empty lists",
    )
    prompts: list[str] | None = Field(
        None, fail_fast=True, description="the prompts alone (not needed: query has them)"
    )
    labels: list[Any] | None = Field(None, description="reference labels (unused by a reward model)")
    model: str | None = Field(None, description="served model name; default model when absent")

    def items(self, clean: Callable[[str], str] | None = None) -> list[ScoreInput]:
        """Each query as raw text, `clean`ed first (of its padding) if given."""
        return [RawText(clean(text) if clean else text) for text in self.query]


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(
        default_factory=dict,
        description="logged by OpenRLHF per sample: `truncated` is 1.0 where the query was cut to "
        "the model's max length (numbers, which OpenRLHF's logging averages)",
    )


class ModelCard(BaseModel):
    name: str
    version: str
    backend: str
    device: str
    dtype: str
    max_length: int


class ModelList(BaseModel):
    models: list[ModelCard]
    max_inputs_per_request: int = Field(description="items one scoring request may carry")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _to_item(item: ItemIn) -> ScoreInput:
    if isinstance(item, PromptResponseIn):
        return PromptResponse(item.prompt, item.response)
    if isinstance(item, MessagesIn):
        kwargs = tuple(sorted((item.chat_template_kwargs or {}).items()))
        return Conversation(tuple(Message(m.role, m.content) for m in item.messages), kwargs)
    return RawText(item.text)

"""vLLM's pooling API on the wire (/classify, /score, /rerank, /v1/models), as vLLM documents it,
in our own models. Unknown fields are ignored, as vLLM does (its OpenAIBaseModel logs and drops
them); fields that steer vLLM's engine (truncate_prompt_tokens, priority, ...) are accepted and
have no effect: rmserve truncates as the model was trained to see inputs, and schedules by its
own priorities."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.http.schemas import MessageIn

# A one-output reward model's single class, named as transformers names it by default.
REWARD_LABEL = "LABEL_0"


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class _VllmRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="served model name; default model when absent")
    user: str | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=-1, description="accepted, no effect")
    priority: int = Field(0, description="accepted, no effect (rmserve schedules by its own priorities)")
    use_activation: bool | None = Field(
        None, description="true: sigmoid of the reward, in (0, 1); absent or false: the raw reward"
    )


class VllmClassifyRequest(_VllmRequest):
    """Either `input` (texts already formatted for the model) or `messages` (one chat, rendered
    with the model's chat template; its last message is the one judged)."""

    input: str | list[str] | None = None
    messages: list[MessageIn] | None = Field(None, min_length=1)


class VllmScoreRequest(_VllmRequest):
    """vLLM's /score: `text_1`/`text_2` (or `queries`/`documents`, `queries`/`items`,
    `data_1`/`data_2`). For a reward model, the first side is the prompt and the second the
    response: one prompt against many responses (1:N) or pairwise lists (N:N)."""

    text_1: str | list[str] | None = None
    text_2: str | list[str] | None = None
    queries: str | list[str] | None = None
    documents: str | list[str] | None = None
    items: str | list[str] | None = None
    data_1: str | list[str] | None = None
    data_2: str | list[str] | None = None

    def sides(self) -> tuple[str | list[str] | None, str | list[str] | None]:
        for first, second in (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"),
                              ("data_1", "data_2")):
            if getattr(self, first) is not None and getattr(self, second) is not None:
                return getattr(self, first), getattr(self, second)
        return None, None


# The fields that make a /v1/score body vLLM's rather than rmserve's (`inputs`).
SCORE_SIDES = frozenset({"text_1", "text_2", "queries", "documents", "items", "data_1", "data_2"})


class VllmRerankRequest(_VllmRequest):
    """vLLM's /rerank (Jina/Cohere style): each document is a response to `query`, the prompt."""

    query: str
    documents: list[str] = Field(min_length=1)
    top_n: int = Field(0, ge=0, description="the best n only; 0: every document")


class VllmUsageInfo(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = 0
    prompt_tokens_details: dict[str, Any] | None = None


class VllmClassificationData(BaseModel):
    index: int
    label: str | None = Field(description=f"always {REWARD_LABEL!r}: a reward model has one output")
    probs: list[float] = Field(
        description="[reward]: the single logit is the raw reward (its sigmoid with use_activation)"
    )
    num_classes: int = Field(description="1: a reward model has one scalar head")


class VllmClassificationResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("classify"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[VllmClassificationData]
    usage: VllmUsageInfo


class VllmScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float = Field(description="the reward of (text_1, text_2); its sigmoid with use_activation")


class VllmScoreResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("score"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[VllmScoreData]
    usage: VllmUsageInfo


class VllmRerankDocument(BaseModel):
    text: str | None = None


class VllmRerankResult(BaseModel):
    index: int
    document: VllmRerankDocument
    relevance_score: float = Field(description="the reward of (query, document); best first")


class VllmRerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class VllmRerankResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("rerank"))
    model: str
    usage: VllmRerankUsage
    results: list[VllmRerankResult]


class VllmErrorInfo(BaseModel):
    message: str
    type: str = Field(examples=["BadRequestError"])
    param: str | None = None
    code: int = Field(description="the HTTP status")


class VllmErrorResponse(BaseModel):
    """vLLM's (OpenAI-style) error body."""

    error: VllmErrorInfo


class OpenAIModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rmserve"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[dict[str, Any]] = Field(default_factory=list)

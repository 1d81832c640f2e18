"""Hugging Face TEI's request and response bodies, as TEI documents them, in our own models.
`truncate` and `truncation_direction` are accepted and have no effect: rmserve truncates as the
model was trained to see inputs (the prompt from the left, then the response from the right)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.http.compat.vllm_schemas import REWARD_LABEL
from service.scoring.registry import ServedModel
from service.scoring.scorer import Scorer

# A string, a pair [string, string], or a batch [[string], [string, string], ...].
PredictInput = str | list[str] | list[list[str]]


class _TeiRequest(BaseModel):
    # TEI (serde) ignores fields it does not know.
    model_config = ConfigDict(extra="ignore")

    truncate: bool | None = Field(None, description="accepted, no effect")
    truncation_direction: Literal["left", "right", "Left", "Right"] = Field(
        "right", description="accepted, no effect"
    )
    raw_scores: bool = Field(False, description="true: the raw reward; false: its sigmoid, in (0, 1)")


class TeiPredictRequest(_TeiRequest):
    inputs: PredictInput = Field(examples=["What is Deep Learning?"])


class TeiRerankRequest(_TeiRequest):
    query: str = Field(examples=["What is Deep Learning?"])
    texts: list[str] = Field(examples=[["Deep Learning is ..."]])
    return_text: bool = False


class TeiPrediction(BaseModel):
    score: float
    label: str = Field(examples=[REWARD_LABEL])


class TeiRank(BaseModel):
    index: int
    text: str | None = None
    score: float


class TeiErrorResponse(BaseModel):
    """TEI's error body."""

    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class TeiInfo(BaseModel):
    """TEI's /info. The model type is a reranker: a reward model scores (prompt, response) pairs."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    served_model_name: str
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None

    @classmethod
    def of(cls, served: ServedModel, scorer: Scorer, *, version: str) -> TeiInfo:
        limits = served.batcher.limits
        return cls(
            model_id=served.name, model_sha=served.version, model_dtype=served.backend.dtype,
            served_model_name=served.name,
            model_type={"reranker": {"id2label": {"0": REWARD_LABEL}, "label2id": {REWARD_LABEL: 0}}},
            # rmserve caps connections and queue depth, not concurrent requests: what it reports
            # is the most items one request may carry.
            max_concurrent_requests=scorer.max_inputs_per_request, max_input_length=served.max_length,
            max_batch_tokens=limits.max_tokens, max_batch_requests=limits.max_pairs,
            max_client_batch_size=scorer.max_inputs_per_request,
            auto_truncate=not scorer.limits.reject_too_long, tokenization_workers=1, version=version,
        )

"""vLLM's pooling routes, scored by rmserve's Scorer: a client written for `vllm serve --task
classify|score` works against rmserve unchanged.

A reward model has one scalar head, so: /classify's `probs` is `[reward]` (the single logit, raw)
with `num_classes` 1; /score's `score` and /rerank's `relevance_score` are the reward of (prompt,
response). vLLM applies a sigmoid to one-label models by default; rmserve returns the raw reward
unless the request sets `use_activation: true`, because a reward is unbounded and its differences
(not a probability) are what trainers use. Errors are OpenAI-style, as vLLM answers them:
`{"error": {"message", "type", "param", "code"}}`, bad requests 400.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from service.api.http.compat import tei
from service.api.http.compat.common import BodyDispatchRoute, CompatRoute, route_of, sigmoid
from service.api.http.compat.vllm_schemas import (
    REWARD_LABEL,
    SCORE_SIDES,
    OpenAIModelCard,
    VllmClassificationData,
    VllmClassificationResponse,
    VllmClassifyRequest,
    VllmErrorResponse,
    VllmRerankDocument,
    VllmRerankRequest,
    VllmRerankResponse,
    VllmRerankResult,
    VllmRerankUsage,
    VllmScoreData,
    VllmScoreRequest,
    VllmScoreResponse,
    VllmUsageInfo,
)
from service.api.http.routes import get_observation, get_registry, get_scorer, models, unless_client_leaves
from service.api.http.routes import router as rmserve_router
from service.api.http.schemas import ErrorResponse, ModelList
from service.api.observe import RequestObservation
from service.scoring.errors import InvalidInputError
from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput
from service.scoring.registry import ModelRegistry
from service.scoring.results import ScoreResult
from service.scoring.scorer import Scorer

_OPENAI_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
                 429: "RateLimitError", 503: "ServiceUnavailableError", 504: "TimeoutError"}


def openai_error(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    """vLLM answers every request it cannot take (bad field, too many items) 400."""
    status = 400 if status in (413, 422) else status
    error_type = _OPENAI_TYPES.get(status, "InternalServerError")
    return status, {"error": {"message": message, "type": error_type, "param": None, "code": status}}


class VllmRoute(CompatRoute):
    error_shape = staticmethod(openai_error)


def _is_vllm_body(body: Any) -> bool:
    return isinstance(body, dict) and bool(SCORE_SIDES & body.keys())


def _is_vllm_rerank(body: Any) -> bool:
    return isinstance(body, dict) and "documents" in body


class VllmScoreRoute(BodyDispatchRoute, VllmRoute):
    """/v1/score with vLLM's fields; rmserve's own body (`inputs`) goes on to rmserve's route."""

    wants = staticmethod(_is_vllm_body)
    otherwise = staticmethod(lambda: route_of(rmserve_router, "/v1/score", "POST"))


class VllmRerankRoute(BodyDispatchRoute, VllmRoute):
    """/rerank with vLLM's `documents`; TEI's body (`texts`) goes on to TEI's route."""

    wants = staticmethod(_is_vllm_rerank)
    otherwise = staticmethod(lambda: route_of(tei.router, "/rerank", "POST"))


# What these routes answer besides 200; 401 and 413 (body over the limit) come from middleware, in
# rmserve's own shape, before the route is known.
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": VllmErrorResponse, "description": text} for status, text in {
        400: "invalid request, or too many inputs", 404: "unknown model", 429: "queue full",
        500: "internal error", 503: "not ready or shutting down", 504: "computed too late"}.items()
} | {status: {"model": ErrorResponse, "description": text}
     for status, text in {401: "missing or invalid API key", 413: "body too large"}.items()}
router = APIRouter(route_class=VllmRoute, tags=["vLLM-compatible"], responses=_ERRORS)
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
ObservationDep = Annotated[RequestObservation, Depends(get_observation)]


def _usage(result: ScoreResult) -> VllmUsageInfo:
    return VllmUsageInfo(prompt_tokens=result.tokens, total_tokens=result.tokens)


def _as_asked(rewards: Sequence[float], use_activation: bool | None) -> list[float]:
    return [sigmoid(r) for r in rewards] if use_activation else list(rewards)


async def _score(request: Request, scorer: Scorer, observation: RequestObservation,
                 items: list[ScoreInput], model: str | None) -> ScoreResult:
    result = await unless_client_leaves(request, scorer.score(items, model))
    observation.served(result.usage)
    return result


@router.post("/classify", response_model=VllmClassificationResponse)
async def classify(
    request: Request, body: VllmClassifyRequest, scorer: ScorerDep, observation: ObservationDep
) -> VllmClassificationResponse:
    """vLLM's /classify: each `input` text (or the one `messages` chat) scored; `probs` is
    `[reward]`, the raw reward as the single logit (its sigmoid with `use_activation: true`)."""
    if (body.input is None) == (body.messages is None):
        raise InvalidInputError("give exactly one of 'input' or 'messages'")
    if body.messages is not None:
        items: list[ScoreInput] = [Conversation(tuple(Message(m.role, m.content) for m in body.messages))]
    else:
        texts = [body.input] if isinstance(body.input, str) else body.input or []
        if not texts:
            raise InvalidInputError("input must hold at least one text")
        items = [RawText(text) for text in texts]
    result = await _score(request, scorer, observation, items, body.model)
    return VllmClassificationResponse(model=result.model, usage=_usage(result), data=[
        VllmClassificationData(index=i, label=REWARD_LABEL, probs=[p], num_classes=1)
        for i, p in enumerate(_as_asked(result.rewards, body.use_activation))
    ])


def score_pairs(first: str | list[str] | None, second: str | list[str] | None) -> list[ScoreInput]:
    """vLLM's pairing: one prompt against each response (1:N), or pairwise lists (N:N)."""
    if first is None or second is None:
        raise InvalidInputError("give text_1 and text_2 (or queries and documents)")
    prompts = [first] if isinstance(first, str) else first
    responses = [second] if isinstance(second, str) else second
    if not prompts or not responses:
        raise InvalidInputError("text_1 and text_2 must hold at least one text each")
    if len(prompts) == 1:
        prompts = prompts * len(responses)
    if len(prompts) != len(responses):
        raise InvalidInputError(
            f"text_1 has {len(prompts)} texts and text_2 {len(responses)}: give one text_1, or as "
            "many as text_2"
        )
    return [PromptResponse(p, r) for p, r in zip(prompts, responses, strict=True)]


async def vllm_score(
    request: Request, body: VllmScoreRequest, scorer: ScorerDep, observation: ObservationDep
) -> VllmScoreResponse:
    """vLLM's /score: the reward of each (text_1, text_2) as (prompt, response), formatted as the
    model expects (chat template or text pair), as rmserve's /v1/score formats a prompt/response."""
    result = await _score(request, scorer, observation, score_pairs(*body.sides()), body.model)
    scores = _as_asked(result.rewards, body.use_activation)
    return VllmScoreResponse(model=result.model, usage=_usage(result), data=[
        VllmScoreData(index=i, score=s) for i, s in enumerate(scores)
    ])


async def vllm_rerank(
    request: Request, body: VllmRerankRequest, scorer: ScorerDep, observation: ObservationDep
) -> VllmRerankResponse:
    """vLLM's /rerank: each document scored as a response to `query`; best first, `top_n` kept."""
    items: list[ScoreInput] = [PromptResponse(body.query, document) for document in body.documents]
    result = await _score(request, scorer, observation, items, body.model)
    scores = _as_asked(result.rewards, body.use_activation)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return VllmRerankResponse(
        model=result.model, usage=VllmRerankUsage(prompt_tokens=result.tokens, total_tokens=result.tokens),
        results=[
            VllmRerankResult(
                index=i, document=VllmRerankDocument(text=body.documents[i]), relevance_score=scores[i]
            )
            for i in order[: body.top_n or None]
        ],
    )


router.add_api_route("/score", vllm_score, methods=["POST"], response_model=VllmScoreResponse)
# rmserve's own /v1/score stays what OpenAPI describes; this one only takes vLLM's bodies.
router.add_api_route("/v1/score", vllm_score, methods=["POST"], response_model=VllmScoreResponse,
                     route_class_override=VllmScoreRoute, include_in_schema=False)
for _path in ("/rerank", "/v1/rerank", "/v2/rerank"):
    router.add_api_route(_path, vllm_rerank, methods=["POST"], response_model=VllmRerankResponse,
                         route_class_override=VllmRerankRoute if _path == "/rerank" else VllmRoute)


class OpenAIModelList(ModelList):
    """OpenAI's model list (`object`, `data`), with rmserve's own fields kept alongside."""

    object: str = "list"
    data: list[OpenAIModelCard] = Field(description="OpenAI-style cards: id, max_model_len, ...")


@router.get("/v1/models", response_model=OpenAIModelList)
async def openai_models(
    registry: Annotated[ModelRegistry, Depends(get_registry)], scorer: ScorerDep
) -> OpenAIModelList:
    """The served models, as OpenAI's and vLLM's clients list them and as rmserve's do."""
    own = await models(registry, scorer)
    created = int(time.time())
    return OpenAIModelList(
        models=own.models, max_inputs_per_request=own.max_inputs_per_request,
        data=[OpenAIModelCard(id=card.name, created=created, root=card.name, max_model_len=card.max_length)
              for card in own.models],
    )

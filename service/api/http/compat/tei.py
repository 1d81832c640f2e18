"""Hugging Face text-embeddings-inference's routes (/predict, /rerank, /info, /health), scored by
rmserve's Scorer: a TEI client (its own, or huggingface_hub's) works against rmserve unchanged.

A reward model has one scalar head, so each prediction is one `{"score", "label"}` and each rank
one `{"index", "score"}`; `raw_scores: true` gives the raw reward, `false` (TEI's default) its
sigmoid, as TEI does for a one-label model. Errors are TEI's: `{"error": "...", "error_type":
"Validation" | "Overloaded" | "Unhealthy" | "Backend" | "Empty"}` with TEI's status codes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api.http.compat.common import CompatRoute, sigmoid
from service.api.http.compat.tei_schemas import (
    PredictInput,
    TeiErrorResponse,
    TeiInfo,
    TeiPrediction,
    TeiPredictRequest,
    TeiRank,
    TeiRerankRequest,
)
from service.api.http.compat.vllm_schemas import REWARD_LABEL
from service.api.http.routes import (
    get_observation,
    get_readiness,
    get_registry,
    get_scorer,
    unless_client_leaves,
)
from service.api.http.schemas import ErrorResponse
from service.api.observe import RequestObservation
from service.scoring.errors import InvalidInputError, NotReadyError
from service.scoring.items import PromptResponse, RawText, ScoreInput
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Readiness, Scorer

# rmserve's status -> TEI's error type (TEI's own status for each type is in _TEI_STATUS).
_TEI_TYPES = {400: "Empty", 413: "Validation", 422: "Validation", 404: "Validation", 429: "Overloaded",
              503: "Unhealthy"}
_TEI_STATUS = {"Validation": 422, "Overloaded": 429, "Unhealthy": 503, "Backend": 424, "Empty": 400}




def tei_error(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    error_type = _TEI_TYPES.get(status, "Backend")
    return _TEI_STATUS[error_type], {"error": message, "error_type": error_type}


class _EmptyBatch(Exception):
    """An empty batch, which TEI answers with a type of its own: Empty (400)."""


class TeiRoute(CompatRoute):
    error_shape = staticmethod(tei_error)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def empty_is_empty(request: Request) -> Response:
            try:
                return await handler(request)
            except _EmptyBatch:
                return self.error(request, 400, "invalid_input", "batch is empty")

        return empty_is_empty


# What these routes answer besides 200; 401 and 413 (body over the limit) come from middleware, in
# rmserve's own shape, before the route is known.
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": TeiErrorResponse, "description": text} for status, text in {
        400: "Empty: no sequence", 422: "Validation: invalid request, unknown model, too many inputs",
        424: "Backend: the model failed or was too late", 429: "Overloaded: queue full",
        503: "Unhealthy: not ready or shutting down"}.items()
} | {status: {"model": ErrorResponse, "description": text}
     for status, text in {401: "missing or invalid API key", 413: "body too large"}.items()}
router = APIRouter(route_class=TeiRoute, tags=["TEI-compatible"], responses=_ERRORS)
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
ObservationDep = Annotated[RequestObservation, Depends(get_observation)]


def _scores(rewards: Sequence[float], raw_scores: bool) -> list[float]:
    return list(rewards) if raw_scores else [sigmoid(r) for r in rewards]


def _item(sequence: list[str]) -> ScoreInput:
    """TEI's sequence: one text (formatted for the model) or a (text, text_pair) pair, which for a
    reward model is (prompt, response), formatted as the model expects."""
    if len(sequence) == 1:
        return RawText(sequence[0])
    if len(sequence) == 2:
        return PromptResponse(sequence[0], sequence[1])
    raise InvalidInputError("a sequence is a string or a pair of strings [string, string]")


def _predict_items(inputs: PredictInput) -> tuple[list[ScoreInput], bool]:
    """The items, and whether the input was a batch (answered as a list of lists)."""
    if isinstance(inputs, str):
        return [RawText(inputs)], False
    if not inputs:
        raise _empty()
    if all(isinstance(part, str) for part in inputs):
        return [_item([str(part) for part in inputs])], False
    if not all(isinstance(part, list) for part in inputs):
        raise InvalidInputError("a batch is a list of sequences: [[string], [string, string], ...]")
    return [_item(list(part)) for part in inputs], True


def _empty() -> Exception:
    return _EmptyBatch()


@router.post("/predict", response_model=list[TeiPrediction] | list[list[TeiPrediction]])
async def predict(
    request: Request, body: TeiPredictRequest, scorer: ScorerDep, observation: ObservationDep
) -> list[TeiPrediction] | list[list[TeiPrediction]]:
    """TEI's /predict: each sequence's reward as its one prediction (label 'LABEL_0'); its sigmoid
    unless `raw_scores` is true."""
    items, batch = _predict_items(body.inputs)
    result = await unless_client_leaves(request, scorer.score(items))
    observation.served(result.usage)
    scores = _scores(result.rewards, body.raw_scores)
    predictions = [[TeiPrediction(score=s, label=REWARD_LABEL)] for s in scores]
    return predictions if batch else predictions[0]


@router.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True)
async def rerank(
    request: Request, body: TeiRerankRequest, scorer: ScorerDep, observation: ObservationDep
) -> list[TeiRank]:
    """TEI's /rerank: each text scored as a response to `query`, best first; `score` is the
    sigmoid of the reward (the raw reward with `raw_scores: true`); `text` with `return_text`."""
    if not body.texts:
        raise _empty()
    items: list[ScoreInput] = [PromptResponse(body.query, text) for text in body.texts]
    result = await unless_client_leaves(request, scorer.score(items))
    observation.served(result.usage)
    scores = _scores(result.rewards, body.raw_scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [
        TeiRank(index=i, score=scores[i], text=body.texts[i] if body.return_text else None) for i in order
    ]


@router.get("/info", response_model=TeiInfo)
async def info(
    request: Request, registry: Annotated[ModelRegistry, Depends(get_registry)], scorer: ScorerDep,
    readiness: Annotated[Readiness, Depends(get_readiness)],
) -> TeiInfo:
    """TEI's /info for the default model (the one TEI's routes score with)."""
    if reason := readiness.not_ready_reason:  # no model may be registered yet
        raise NotReadyError(reason)
    served = registry.get(None)
    return TeiInfo.of(served, scorer, version=request.app.version)


@router.get("/health", response_class=Response, responses={200: {"description": "ready (no body)"}})
async def health(readiness: Annotated[Readiness, Depends(get_readiness)]) -> Response:
    """TEI's /health: 200 with no body once every model is loaded, else 503 Unhealthy."""
    if readiness.not_ready_reason:
        return JSONResponse({"error": "unhealthy", "error_type": "Unhealthy"}, status_code=503,
                            headers={"Retry-After": "1"})
    return Response(status_code=200)

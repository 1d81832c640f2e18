"""Thin routes: wire model in, scoring core, wire model out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.http.body_checks import CheckedBodyRoute
from service.api.http.compat.openrlhf import padding_tokens
from service.api.http.errors import error_response
from service.api.http.schemas import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    Usage,
)
from service.api.observe import RequestObservation
from service.metrics import Metrics
from service.scoring.errors import ClientGoneError
from service.scoring.options import ScoreOptions
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Readiness, Scorer

# Every route counts its body's items before validating them (body_checks.py).
router = APIRouter(route_class=CheckedBodyRoute)

_ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "missing or invalid API key", 404: "unknown model",
        504: "timeout_ms passed before the items were computed",
        413: "too many inputs, or a field, item or body too large", 422: "invalid request",
        429: "queue full: retry after Retry-After seconds", 500: "internal error (with an error id)",
        503: "not ready or shutting down (see Retry-After)",
    }.items()
}


def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_readiness(request: Request) -> Readiness:
    return request.app.state.lifecycle


def get_observation(request: Request) -> RequestObservation:
    """This request's observation, made by RequestObserverMiddleware."""
    return request.state.observation


T = TypeVar("T")


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelled if the client disconnects first: its queued items are then
    dropped instead of computed for nobody."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # The body has been read, so the next message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # the server is cancelling this request, not the client
        raise ClientGoneError("the client disconnected before the answer") from None
    finally:
        watcher.cancel()


@router.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True, responses=_ERRORS)
async def score(
    request: Request,
    body: ScoreRequest,
    scorer: Annotated[Scorer, Depends(get_scorer)],
    observation: Annotated[RequestObservation, Depends(get_observation)],
) -> ScoreResponse:
    """Score each (prompt, response), conversation or pre-formatted text; rewards in input order."""
    if body.combine is not None:
        work = scorer.combine(body.items(), body.combine, body.options())
        combined = await unless_client_leaves(request, work)
        observation.served(combined.usage)
        first = next(iter(combined.components.values()))
        return ScoreResponse(
            model="combined", version="", rewards=combined.rewards, truncated=first.truncated,
            usage=Usage(tokens=combined.tokens),
            components={name: part.rewards for name, part in combined.components.items()},
        )
    result = await unless_client_leaves(request, scorer.score(body.items(), body.model, body.options()))
    observation.served(result.usage)
    return ScoreResponse(
        model=result.model,
        version=result.version,
        rewards=result.rewards,
        truncated=result.truncated,
        usage=Usage(tokens=result.tokens),
    )


@router.post("/v1/rank", response_model=RankResponse, responses=_ERRORS)
async def rank(
    request: Request,
    body: RankRequest,
    scorer: Annotated[Scorer, Depends(get_scorer)],
    observation: Annotated[RequestObservation, Depends(get_observation)],
) -> RankResponse:
    """Best-of-n: rank candidate responses to one prompt or conversation, best first."""
    result = await unless_client_leaves(request, scorer.rank(
        body.conversation(), body.responses, model=body.model, top_k=body.top_k, options=body.options(),
    ))
    observation.served(result.usage)
    return RankResponse(
        model=result.score.model,
        version=result.score.version,
        rewards=result.score.rewards,
        ranking=result.ranking,
        best=result.best,
    )


@router.post("/v1/compare", response_model=CompareResponse, responses=_ERRORS)
async def compare(
    request: Request,
    body: CompareRequest,
    scorer: Annotated[Scorer, Depends(get_scorer)],
    observation: Annotated[RequestObservation, Depends(get_observation)],
) -> CompareResponse:
    """Pairwise: both responses' rewards and P(a preferred to b) under Bradley-Terry."""
    result = await unless_client_leaves(request, scorer.compare(
        body.conversation(), body.a, body.b, model=body.model, options=body.options(),
    ))
    observation.served(result.usage)
    return CompareResponse(
        model=result.score.model, version=result.score.version, rewards=result.score.rewards,
        probability_a=result.probability_a, preferred="a" if result.probability_a >= 0.5 else "b",
    )


@router.post("/get_reward", response_model=OpenRLHFRewardResponse, responses=_ERRORS)
async def get_reward(
    request: Request,
    body: OpenRLHFRewardRequest,
    scorer: Annotated[Scorer, Depends(get_scorer)],
    registry: Annotated[ModelRegistry, Depends(get_registry)],
    readiness: Annotated[Readiness, Depends(get_readiness)],
    observation: Annotated[RequestObservation, Depends(get_observation)],
    model: Annotated[str | None, Query(description="served model (a body's `model` wins)")] = None,
    # Booleans spelled true or false only, as the schema says: not FastAPI's lax 1, yes or on.
    normalize: Annotated[Literal["true", "false"], Query(
        description="normalise with the model's statistics"
    )] = "false",
    clip: Annotated[float | None, Query(gt=0, description="clip rewards to [-clip, clip]")] = None,
    strip_padding: Annotated[Literal["true", "false"], Query(
        description="strip leading/trailing pad and EOS strings (the model's tokenizer's) from each "
        "query, one EOS put back where the query ended with one: padded and clean queries score the same"
    )] = "true",
) -> OpenRLHFRewardResponse:
    """OpenRLHF's remote reward model: each `query` (the full formatted text) scored, cleaned of
    padding first (`?strip_padding=false`: as is). Model, normalisation and clip can be chosen in
    the URL, as OpenRLHF sends a body of its own: `/get_reward?model=NAME&normalize=true&clip=5`."""
    options = ScoreOptions(normalize=normalize == "true", clip=clip)  # checked even for no query
    if not body.query:  # OpenRLHF's later reward servers when it has fewer samples than servers
        return OpenRLHFRewardResponse(rewards=[], scores=[], extra_logs={"truncated": []})
    name = body.model or model
    clean = None
    if strip_padding == "true" and readiness.not_ready_reason is None:  # else the scorer says why not
        clean = padding_tokens(registry.get(name)).strip
    result = await unless_client_leaves(request, scorer.score(body.items(clean), name, options))
    observation.served(result.usage)
    truncated = [float(cut) for cut in result.truncated]
    return OpenRLHFRewardResponse(rewards=result.rewards, scores=result.rewards,
                                  extra_logs={"truncated": truncated})


@router.get("/v1/models", response_model=ModelList)
async def models(
    registry: Annotated[ModelRegistry, Depends(get_registry)], scorer: Annotated[Scorer, Depends(get_scorer)]
) -> ModelList:
    return ModelList(max_inputs_per_request=scorer.max_inputs_per_request, models=[
        ModelCard(
            name=m.name, version=m.version, backend=m.backend.backend, device=m.backend.device,
            dtype=m.backend.dtype, max_length=m.max_length,
        )
        for m in registry.all()
    ])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(request: Request, readiness: Annotated[Readiness, Depends(get_readiness)]) -> JSONResponse:
    """Ready: every model is loaded and warmed up."""
    if reason := readiness.not_ready_reason:
        return error_response(503, "not_ready", reason, request)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
async def metrics(registry_metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    return Response(registry_metrics.render(), media_type="text/plain; version=0.0.4")

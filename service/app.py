"""Composition root: settings -> lifecycle (store -> backend -> batcher) -> scorer -> HTTP app +
gRPC server. The only module that wires concrete classes together; it does no work itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.auth import ApiKeys
from service.api.grpc.server import GrpcConnectionLimits, GrpcServer
from service.api.http.compat import tei, vllm
from service.api.http.errors import install_error_handlers
from service.api.http.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestObserverMiddleware
from service.api.http.routes import router
from service.engine.remote import EnginePool
from service.lifecycle import Lifecycle, PeersLoaded, locate_models
from service.loading import ModelSource
from service.metrics import Metrics
from service.scoring.cache import reward_cache
from service.scoring.preparation import ScoringLimits
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer
from service.settings import Settings


def create_app(
    settings: Settings, sources: list[ModelSource] | None = None, engines: Sequence[tuple[str, str]] = (),
    peers: PeersLoaded | None = None,
) -> FastAPI:
    """The HTTP app; models load in the background once it starts (see /readyz). With `engines`
    ((endpoint, device) of each engine process) it is a front end: the engines compute, and it is
    ready once all its `peers` (the API processes) are."""
    metrics = Metrics()
    registry = ModelRegistry()
    lifecycle = Lifecycle(settings, registry, metrics, EnginePool(engines) if engines else None, peers)
    # Engines keep the result cache, shared by every API process; a lone process keeps its own.
    cache = None if engines else reward_cache(settings.result_cache_mb)
    scorer = Scorer(registry, scoring_limits(settings), lifecycle, cache)
    keys = ApiKeys(settings.all_api_keys())
    run = _ServerRun(settings, lifecycle, sources if sources is not None else locate_models(settings),
                     lambda: GrpcServer.start(
                         scorer, registry, metrics, host=settings.host, port=settings.grpc_port,
                         max_message_bytes=settings.max_body_bytes, keys=keys,
                         protect_health=settings.protect_health, limits=grpc_limits(settings),
                     ))
    app = FastAPI(
        title="rmserve",
        summary="Reward-model scoring: scalar rewards for (prompt, response) pairs.",
        version="0.1.0",
        lifespan=run.lifespan,
    )
    app.state.scorer = scorer
    app.state.registry = registry
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.state.begin_shutdown = run.begin_shutdown
    install_error_handlers(app)
    app.include_router(vllm.router)  # first: its /v1/score hands rmserve's own bodies on
    app.include_router(tei.router)  # before rmserve's: its /rerank is vLLM's or TEI's by the body
    app.include_router(router)
    # Every route's path (not the client's), so the metrics' endpoint labels stay bounded.
    endpoints = {route.path for r in (vllm.router, tei.router, router)
                 for route in r.routes}  # type: ignore[attr-defined]
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s)
    app.add_middleware(ApiKeyMiddleware, keys=keys, open_paths=open_paths(settings))
    # Outermost, so that every answer (a 401 or a 413 too) is counted and logged.
    app.add_middleware(RequestObserverMiddleware, metrics=metrics, endpoints=endpoints)
    return app


class _ServerRun:
    """What happens while the app runs: gRPC starts beside it, models load in the background,
    SIGTERM drains, and everything stops with the app."""

    def __init__(
        self, settings: Settings, lifecycle: Lifecycle, sources: list[ModelSource],
        start_grpc: Callable[[], Awaitable[GrpcServer]],
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._sources = sources
        self._start_grpc = start_grpc
        self._grpc_servers: list[GrpcServer] = []
        self._stopping: list[asyncio.Task[None]] = []  # held so the tasks are not collected mid-way

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        if self._settings.grpc_port:
            self._grpc_servers.append(await self._start_grpc())
        loading = asyncio.create_task(self._load())
        try:
            yield
        finally:
            loading.cancel()
            for grpc_server in self._grpc_servers:
                await grpc_server.stop(self._settings.shutdown_grace_s)
            await self._lifecycle.close()

    async def _load(self) -> None:
        if await self._lifecycle.load_all(self._sources):
            for grpc_server in self._grpc_servers:
                await grpc_server.set_serving(True)

    def begin_shutdown(self) -> None:
        """On SIGTERM, before uvicorn stops accepting: not ready at once and no new work (503);
        gRPC refuses new calls. Admitted requests finish, then the lifespan ends."""
        self._lifecycle.begin_drain()
        loop = asyncio.get_running_loop()
        for grpc_server in self._grpc_servers:
            self._stopping.append(loop.create_task(grpc_server.stop(self._settings.shutdown_grace_s)))


def scoring_limits(settings: Settings) -> ScoringLimits:
    return ScoringLimits(
        max_inputs_per_request=settings.max_inputs_per_request,
        max_chars_per_field=settings.max_chars_per_field,
        reject_too_long=settings.too_long == "reject",
        min_shared_prefix_tokens=settings.min_shared_prefix_tokens if settings.prefix_sharing else None,
    )


def grpc_limits(settings: Settings) -> GrpcConnectionLimits:
    return GrpcConnectionLimits(
        handshake_timeout_s=settings.header_timeout_s, idle_timeout_s=settings.grpc_idle_timeout_s,
        max_age_s=settings.grpc_max_connection_age_s, age_grace_s=settings.body_timeout_s,
        max_connections=settings.max_connections, max_concurrent_rpcs=settings.max_connections,
    )


def open_paths(settings: Settings) -> set[str]:
    """What answers without an API key: the docs, and health and metrics unless protected."""
    paths = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
    if not settings.protect_health:
        paths |= {"/healthz", "/readyz"}
    if not settings.protect_metrics:
        paths.add("/metrics")
    return paths

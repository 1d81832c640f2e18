"""Composition root: store -> backend -> batcher -> scorer -> HTTP app. The only module that
names concrete classes; everything below it receives plain arguments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from model_store.store import ModelStore
from service.api.auth import ApiKeys
from service.api.grpc.server import GrpcServer
from service.api.http.errors import install_error_handlers
from service.api.http.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestObserverMiddleware
from service.api.http.routes import router
from service.backends.base import Backend
from service.backends.onnx_backend import OnnxBackend, import_onnxruntime
from service.backends.torch_backend import TorchBackend
from service.batching.batcher import Batcher
from service.batching.policy import BatchLimits
from service.formatting import InputFormatter
from service.items import PromptResponse
from service.loading import ModelSource, load_tokenizer, locate_model, refuse_custom_code
from service.metrics import Metrics
from service.registry import ModelRegistry, ServedModel
from service.result_cache import RewardCache
from service.scoring import Scorer, ScoringLimits
from service.settings import DEFAULT_MODEL, Settings

logger = logging.getLogger("rmserve")

# Measured on a 2-core CPU (benchmarks/RESULTS.md): past ~2k padded tokens a CPU forward gains
# nothing from more rows, while a GPU keeps gaining up to tens of thousands.
_CPU_LIMITS = BatchLimits(max_pairs=32, max_tokens=2048, max_padding_fraction=0.2)
_GPU_LIMITS = BatchLimits(max_pairs=256, max_tokens=32768, max_padding_fraction=0.5)


def batch_limits(settings: Settings, device: str) -> BatchLimits:
    defaults = _GPU_LIMITS if device.startswith("cuda") else _CPU_LIMITS
    return BatchLimits(
        max_pairs=settings.max_batch_pairs or defaults.max_pairs,
        max_tokens=settings.max_batch_tokens or defaults.max_tokens,
        max_padding_fraction=defaults.max_padding_fraction,
    )


def locate_models(settings: Settings) -> list[ModelSource]:
    """Resolve and checksum-verify every --model before the server starts (fail fast)."""
    store = ModelStore(settings.store)
    sources = [locate_model(arg, store, settings.backend) for arg in settings.model or [DEFAULT_MODEL]]
    for source in sources:
        if source.backend == "torch" and source.name not in settings.trust_remote_code:
            refuse_custom_code(source)
    if any(source.backend == "onnx" for source in sources):
        import_onnxruntime()  # a missing extra is a one-line error now, not a failed load later
    return sources


def load_backend(source: ModelSource, settings: Settings, pad_token_id: int) -> Backend:
    if source.backend == "torch":
        return TorchBackend.load(
            source.path, pad_token_id=pad_token_id, device=settings.device, dtype=settings.dtype,
            trust_remote_code=source.name in settings.trust_remote_code,
            prefix_sharing=settings.prefix_sharing,
        )
    # --dtype is for torch only (Settings refuses it with --backend onnx): an export has its own.
    return OnnxBackend.load(
        source.onnx_file, pad_token_id=pad_token_id, device=settings.device, threads=settings.threads
    )


class ModelLoader:
    """Loads, warms up and registers the models in the background while the server answers."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._executors: dict[str, ThreadPoolExecutor] = {}

    async def load_all(self, sources: list[ModelSource]) -> bool:
        """Load every model; True once all serve, False (reason in registry.failure) if one failed."""
        for source in sources:
            self._metrics.model_ready.labels(model=source.name, version=source.version).set(0)
        try:
            for source in sources:
                await self._load(source)
        except Exception as exc:
            logger.exception("loading models failed")
            self._registry.failure = f"model loading failed: {exc}"
            return False
        self._registry.ready = True
        for model in self._registry.all():
            self._metrics.model_ready.labels(model=model.name, version=model.version).set(1)
        logger.info("ready: %s", ", ".join(f"{m.name}:{m.version}" for m in self._registry.all()))
        return True

    async def _load(self, source: ModelSource) -> None:
        settings = self._settings
        logger.info("loading %s:%s from %s", source.name, source.version, source.path)
        tokenizer = await asyncio.to_thread(
            load_tokenizer, source.path, trust_remote_code=source.name in settings.trust_remote_code
        )
        backend = await asyncio.to_thread(load_backend, source, settings, tokenizer.pad_token_id)
        formatter = InputFormatter(tokenizer, source.max_length)
        device = backend.info.device
        if device not in self._executors:
            self._executors[device] = ThreadPoolExecutor(
                settings.forward_workers, thread_name_prefix=f"forward-{device}"
            )
        executor = self._executors[device]
        if settings.warmup:
            warm = formatter.format([PromptResponse("Warm-up prompt.", "Warm-up response.")])
            await asyncio.get_running_loop().run_in_executor(
                executor, backend.score, [w.pair for w in warm]
            )
        model_metrics = self._metrics.for_model(source.name, source.version)
        batcher = Batcher(
            backend.score, executor, batch_limits(settings, device),
            max_wait_s=settings.max_wait_ms / 1000, max_queue_items=settings.max_queue_items,
            max_queue_tokens=settings.max_queue_tokens, workers=settings.forward_workers,
            priority_aging_s=settings.priority_aging_ms / 1000, observer=model_metrics,
        )
        batcher.start()
        self._registry.add(ServedModel(
            name=source.name, version=source.version, max_length=source.max_length,
            formatter=formatter, batcher=batcher, backend=backend.info, metrics=model_metrics,
            normalization=source.normalization,
        ))
        info = backend.info
        self._metrics.model_info.labels(
            model=source.name, version=source.version, backend=info.backend,
            device=info.device, dtype=info.dtype,
        ).set(1)
        self._metrics.device_memory.devices.add(device)

    async def close(self) -> None:
        self._registry.ready = False
        for model in self._registry.all():
            self._metrics.model_ready.labels(model=model.name, version=model.version).set(0)
        for model in self._registry.all():
            await model.batcher.stop()
        for executor in self._executors.values():
            executor.shutdown(wait=True)


def create_app(settings: Settings, sources: list[ModelSource] | None = None) -> FastAPI:
    """The HTTP app; models load in the background once it starts (see /readyz)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    metrics = Metrics()
    registry = ModelRegistry()
    loader = ModelLoader(settings, registry, metrics)
    to_load = sources if sources is not None else locate_models(settings)

    scorer = Scorer(registry, ScoringLimits(
        max_inputs_per_request=settings.max_inputs_per_request,
        max_chars_per_field=settings.max_chars_per_field,
        reject_too_long=settings.too_long == "reject",
        min_shared_prefix_tokens=settings.min_shared_prefix_tokens if settings.prefix_sharing else None,
    ), RewardCache(int(settings.result_cache_mb * 2**20)) if settings.result_cache_mb else None)
    keys = ApiKeys(settings.all_api_keys())
    grpc_servers: list[GrpcServer] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.grpc_port:
            grpc_servers.append(await GrpcServer.start(
                scorer, registry, metrics, host=settings.host, port=settings.grpc_port,
                max_message_bytes=settings.max_body_bytes, keys=keys, protect_health=settings.protect_health,
            ))

        async def load() -> None:
            if await loader.load_all(to_load):
                for grpc_server in grpc_servers:
                    await grpc_server.set_serving(True)

        loading = asyncio.create_task(load())
        try:
            yield
        finally:
            loading.cancel()
            for grpc_server in grpc_servers:
                await grpc_server.stop(settings.shutdown_grace_s)
            await loader.close()

    def begin_shutdown() -> None:
        """On SIGTERM, before uvicorn stops accepting: not ready at once and no new work (503);
        gRPC refuses new calls. Admitted requests finish, then the lifespan ends."""
        registry.draining = True
        for model in registry.all():
            metrics.model_ready.labels(model=model.name, version=model.version).set(0)
        loop = asyncio.get_running_loop()
        for grpc_server in grpc_servers:
            stopping.append(loop.create_task(grpc_server.stop(settings.shutdown_grace_s)))

    stopping: list[asyncio.Task[None]] = []  # held so the tasks are not collected mid-way

    app = FastAPI(
        title="rmserve",
        summary="Reward-model scoring: scalar rewards for (prompt, response) pairs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.scorer = scorer
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.begin_shutdown = begin_shutdown
    install_error_handlers(app)
    app.include_router(router)
    endpoints = {route.path for route in router.routes}  # type: ignore[attr-defined]
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys, open_paths=open_paths(settings))
    # Outermost, so that every answer (a 401 or a 413 too) is counted and logged.
    app.add_middleware(RequestObserverMiddleware, metrics=metrics, endpoints=endpoints)
    return app


def open_paths(settings: Settings) -> set[str]:
    """What answers without an API key: the docs, and health and metrics unless protected."""
    paths = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
    if not settings.protect_health:
        paths |= {"/healthz", "/readyz"}
    if not settings.protect_metrics:
        paths.add("/metrics")
    return paths

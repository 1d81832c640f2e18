"""A server's life: load and warm up every model, report readiness, drain on shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model_store.store import ModelStore
from service.allocator import HeapTrimmer
from service.backends.base import Backend, BackendInfo
from service.batching.batcher import Batcher
from service.batching.policy import BatchLimits
from service.engine.remote import EnginePool
from service.engine.wire import ModelCard
from service.loading import ModelSource, load_tokenizer, locate_model, position_capped, refuse_custom_code
from service.metrics import Metrics, ModelMetrics
from service.scoring.formatting import InputFormatter
from service.scoring.items import PromptResponse
from service.scoring.registry import ModelBatcher, ModelRegistry, ServedModel
from service.settings import DEFAULT_MODEL, Settings

logger = logging.getLogger("rmserve")

# Measured on a 2-core CPU (benchmarks/RESULTS.md): past ~2k padded tokens a CPU forward gains
# nothing from more rows, while a GPU keeps gaining up to tens of thousands.
_CPU_LIMITS = BatchLimits(max_pairs=32, max_tokens=2048, max_padding_fraction=0.2)
_PEER_POLL_S = 0.05
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
        from service.backends.onnx_backend import import_onnxruntime

        import_onnxruntime()  # a missing extra is a one-line error now, not a failed load later
    return sources


def load_backend(source: ModelSource, settings: Settings, pad_token_id: int) -> Backend:
    """The concrete backend, imported only when used: the server imports torch (or ONNX Runtime)
    only for the models it serves."""
    if source.backend == "torch":
        from service.backends.torch_backend import TorchBackend

        return TorchBackend.load(
            source.path, pad_token_id=pad_token_id, device=settings.device, dtype=settings.dtype,
            trust_remote_code=source.name in settings.trust_remote_code,
            prefix_sharing=settings.prefix_sharing, threads=settings.threads,
        )
    from service.backends.onnx_backend import OnnxBackend

    # --dtype is for torch only (Settings refuses it with --backend onnx): an export has its own.
    return OnnxBackend.load(
        source.onnx_file, pad_token_id=pad_token_id, device=settings.device, threads=settings.threads
    )


class PeersLoaded:
    """How many of a server's API processes have loaded their models (a counter shared between
    processes). Each becomes ready only once all have, so that whichever answers a probe or a
    request, the server is in one state: never 200 from one process and 503 from the next.
    Readiness reads the counter itself, so every process turns ready the moment the last loads."""

    def __init__(self, counter: Any, processes: int) -> None:
        self._counter = counter  # a multiprocessing.Value("i")
        self._processes = processes

    def mark_loaded(self) -> None:
        with self._counter.get_lock():
            self._counter.value += 1

    @property
    def all_loaded(self) -> bool:
        return self._counter.value >= self._processes

    async def wait_for_all(self) -> None:
        while not self.all_loaded:
            await asyncio.sleep(_PEER_POLL_S)


class Lifecycle:
    """Loads, warms up and registers the models in the background while the server answers;
    says whether it is ready; drains on shutdown. With `engines` (a front end of several
    processes), the backends and batchers are the engine processes'; this process tokenises."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, metrics: Metrics,
        engines: EnginePool | None = None, peers: PeersLoaded | None = None,
    ) -> None:
        self._settings = settings
        self._peers = peers
        self._registry = registry
        self._metrics = metrics
        self._engines = engines
        self._cards: dict[str, ModelCard] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        # One per process that runs forwards: resident memory is the process's (service/allocator.py).
        self._trimmer = None if engines is not None else HeapTrimmer.for_this_process(
            settings.malloc_trim_slack_mib * 1024 * 1024)
        self._loaded = False  # this process's models serve
        self._peers_loaded = peers is None  # latched: the counter only grows
        self._failure: str | None = None  # why loading failed
        self._draining = False

    @property
    def not_ready_reason(self) -> str | None:
        """None once every model serves; else why not (reported by /readyz and to scoring calls)."""
        if self._engines is not None and (stopped := self._engines.stopped):
            return stopped
        if self._draining:
            return "the server is shutting down"
        if not self._loaded or not self._all_peers_loaded():
            return self._failure or "models are still loading"
        return None

    def _all_peers_loaded(self) -> bool:
        if not self._peers_loaded and self._peers is not None:
            self._peers_loaded = self._peers.all_loaded
        return self._peers_loaded

    async def load_all(self, sources: list[ModelSource]) -> bool:
        """Load every model; True once all serve, False (the reason in not_ready_reason) if one failed."""
        for source in sources:
            self._metrics.model_ready.labels(model=source.name, version=source.version).set(0)
        try:
            if self._engines is not None:
                self._cards = await self._engines.models()
            for source in sources:
                await self._load(source)
        except Exception as exc:
            logger.exception("loading models failed")
            self._failure = f"model loading failed: {exc}"
            return False
        self._loaded = True
        if self._peers is not None:
            self._peers.mark_loaded()
            await self._peers.wait_for_all()  # for the metric and the log line only
        self._set_ready_metric(1)
        logger.info("ready: %s", ", ".join(f"{m.name}:{m.version}" for m in self._registry.all()))
        return True

    async def _load(self, source: ModelSource) -> None:
        settings = self._settings
        logger.info("loading %s:%s from %s", source.name, source.version, source.path)
        tokenizer = await asyncio.to_thread(
            load_tokenizer, source.path, trust_remote_code=source.name in settings.trust_remote_code
        )
        if (max_length := position_capped(source)) < source.max_length:
            logger.warning("%s: max length %d capped to the model's %d positions", source.name,
                           source.max_length, max_length)
            source = dataclasses.replace(source, max_length=max_length)
        formatter = InputFormatter(tokenizer, source.max_length)
        model_metrics = self._metrics.for_model(source.name, source.version)
        if self._engines is not None:
            remote = self._engines.batcher(self._cards[source.name])
            batcher, info = remote, remote.info
        else:
            pad_token_id = tokenizer.pad_token_id
            batcher, info = await self._local_batcher(source, formatter, pad_token_id, model_metrics)
        self._registry.add(ServedModel(
            name=source.name, version=source.version, max_length=source.max_length,
            formatter=formatter, batcher=batcher, backend=info, metrics=model_metrics,
            normalization=source.normalization,
        ))
        self._metrics.model_info.labels(
            model=source.name, version=source.version, backend=info.backend,
            device=info.device, dtype=info.dtype,
        ).set(1)

    async def _local_batcher(
        self, source: ModelSource, formatter: InputFormatter, pad_token_id: int, observer: ModelMetrics
    ) -> tuple[ModelBatcher, BackendInfo]:
        """The backend loaded and warmed up in this process, and its batcher started."""
        settings = self._settings
        backend = await asyncio.to_thread(load_backend, source, settings, pad_token_id)
        device = backend.info.device
        if device not in self._executors:  # one pool per device: models on it take turns
            self._executors[device] = ThreadPoolExecutor(
                settings.forward_workers, thread_name_prefix=f"forward-{device}"
            )
        executor = self._executors[device]
        if settings.warmup:
            warm = formatter.format([PromptResponse("Warm-up prompt.", "Warm-up response.")])
            await asyncio.get_running_loop().run_in_executor(executor, backend.score, [w.pair for w in warm])
        score = self._trimmer.wrap(backend.score) if self._trimmer else backend.score
        batcher = Batcher(
            score, executor, batch_limits(settings, device),
            max_wait_s=settings.max_wait_ms / 1000, max_queue_items=settings.max_queue_items,
            max_queue_tokens=settings.max_queue_tokens, workers=settings.forward_workers,
            priority_aging_s=settings.priority_aging_ms / 1000, observer=observer,
        )
        batcher.start()
        self._metrics.device_memory.devices.add(device)
        return batcher, backend.info

    def begin_drain(self) -> None:
        """Not ready at once and no new work (503); admitted work goes on."""
        self._draining = True
        self._set_ready_metric(0)

    async def close(self) -> None:
        """Finish what is queued, then stop every batcher and worker thread."""
        self._loaded = False
        self._set_ready_metric(0)
        for model in self._registry.all():
            await model.batcher.stop()
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        if self._engines is not None:
            self._engines.close()

    def _set_ready_metric(self, value: int) -> None:
        for model in self._registry.all():
            self._metrics.model_ready.labels(model=model.name, version=model.version).set(value)

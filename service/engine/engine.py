"""The engine process: one per device. It owns the models' backends and batchers (queue, policy,
priorities, cancellation) and serves front ends over a ZeroMQ ROUTER socket (service.engine.wire).
Front ends do everything else: HTTP, gRPC, validation, tokenising, caching, normalising."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from service.backends.base import EncodedPair
from service.batching.batcher import Batcher, BatcherClosedError, QueueFullError
from service.batching.submission import Submission
from service.engine import wire
from service.lifecycle import Lifecycle
from service.loading import ModelSource
from service.metrics import DeviceMemorySampler, Metrics
from service.scoring.cache import RewardCache, look_up, merged, remember
from service.scoring.registry import ModelRegistry, ServedModel
from service.settings import Settings

logger = logging.getLogger("rmserve.engine")

Key = tuple[bytes, int]  # (front end's socket identity, its request id)


@dataclass
class _Request:
    """A front end's request in this engine: its submission, and what the result cache knew."""

    submission: Submission
    served: ServedModel
    known: list[float | None] = field(default_factory=list)  # per item: the cache's reward, or None
    missed: list[bytes] = field(default_factory=list)  # the cache keys of the items sent to the model

    @property
    def batcher(self) -> Batcher:
        return self.served.batcher  # type: ignore[return-value]


class EngineServer:
    """Answers front ends' requests with the batchers of the models this engine loaded. The
    result cache is here, not in the front ends, so that every API process shares it."""

    def __init__(
        self, socket: zmq.asyncio.Socket, lifecycle: Lifecycle, registry: ModelRegistry,
        cache: RewardCache | None,
    ) -> None:
        self._socket = socket
        self._lifecycle = lifecycle
        self._registry = registry
        self._cache = cache
        self._loaded = asyncio.Event()
        self._open: dict[Key, _Request] = {}
        self._answering: dict[Key, tuple[asyncio.Task[None], Submission]] = {}
        self._background: set[asyncio.Task[None]] = set()  # held so they are not collected mid-way

    def loaded(self) -> None:
        self._loaded.set()

    async def serve(self) -> None:
        while True:
            identity, frame = await self._socket.recv_multipart()
            message = wire.decode(frame)
            kind = message[0]
            if kind == "add":
                self._add(identity, *message[1:])
            elif kind == "close":
                self._finish(identity, message[1])
            elif kind == "cancel":
                self._cancel((identity, message[1]))
            elif kind == "hello":
                self._track(asyncio.create_task(self._hello(identity)))

    async def _hello(self, identity: bytes) -> None:
        await self._loaded.wait()
        if reason := self._lifecycle.not_ready_reason:
            await self._send(identity, "failed", reason)
            return
        cards = [self._card(model).as_wire() for model in self._registry.all()]
        await self._send(identity, "models", cards)

    def _card(self, served: ServedModel) -> wire.ModelCard:
        limits, info = served.batcher.limits, served.backend
        return wire.ModelCard(served.name, served.version, info.backend, info.device, info.dtype,
                              info.shares_prefixes, limits.max_pairs, limits.max_tokens,
                              limits.max_padding_fraction)

    def _add(self, identity: bytes, sid: int, model: str, priority: int, last: bool, *packed: object) -> None:
        key = (identity, sid)
        served = self._registry.get(model)
        batcher = served.batcher
        try:
            request = self._open.get(key) or _Request(batcher.open(priority), served)
            self._open[key] = request
            request.submission.add(self._look_up(request, wire.unpack_pairs(*packed)))  # type: ignore[arg-type]
        except (QueueFullError, BatcherClosedError) as exc:
            self._open.pop(key, None)
            kind = wire.QUEUE_FULL if isinstance(exc, QueueFullError) else wire.CLOSED
            self._track(asyncio.create_task(self._send(identity, "error", sid, kind, str(exc), batcher.full)))
            return
        if last:
            self._finish(identity, sid)

    def _finish(self, identity: bytes, sid: int) -> None:
        key = (identity, sid)
        if (request := self._open.pop(key, None)) is None:
            return
        request.submission.close()
        self._answering[key] = asyncio.create_task(self._answer(key, request)), request.submission

    async def _answer(self, key: Key, request: _Request) -> None:
        identity, sid = key
        try:
            outcome = await request.submission.outcome()
        except Exception as exc:  # the forward pass failed: the front end says so, with an error id
            logger.error("forward pass failed", exc_info=exc)
            await self._send(identity, "error", sid, wire.FAILED, repr(exc), request.batcher.full)
        else:
            rewards = self._remember(request, outcome.rewards)
            await self._send(identity, "done", sid, wire.pack_rewards(rewards),
                             outcome.timing.queue_s, outcome.timing.compute_s, request.batcher.full)
        finally:
            self._answering.pop(key, None)

    def _look_up(self, request: _Request, pairs: list[EncodedPair]) -> list[EncodedPair]:
        """What the cache lacks of a part's items (all of them without a cache)."""
        known, missed = look_up(self._cache, request.served, pairs)
        request.known += known
        request.missed += missed
        return [pair for pair, reward in zip(pairs, known, strict=True) if reward is None]

    def _remember(self, request: _Request, computed: list[float]) -> list[float]:
        """Every item's reward in order; the computed ones cached."""
        remember(self._cache, request.served, request.missed, computed)
        return merged(request.known, computed)

    def abandon(self) -> None:
        """Drop the requests still open (more parts announced, never sent), so the batchers can stop."""
        for key in list(self._open):
            self._cancel(key)

    def _cancel(self, key: Key) -> None:
        """Drop the request's queued items (they never reach a forward pass) and its answer."""
        if (request := self._open.pop(key, None)) is not None:
            request.submission.cancel()
        if (answering := self._answering.pop(key, None)) is not None:
            task, submission = answering
            submission.cancel()
            task.cancel()

    async def _send(self, identity: bytes, *fields: object) -> None:
        await self._socket.send_multipart([identity, wire.encode(*fields)])

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def run_engine(
    settings: Settings, sources: list[ModelSource], endpoint: str, cache: RewardCache | None
) -> None:
    """Load the models on settings.device, serve front ends at `endpoint` until SIGUSR1 (the
    supervisor's, once the front ends have drained), then finish what is queued."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # held since its start (supervisor)
    metrics, registry = Metrics(), ModelRegistry()
    lifecycle = Lifecycle(settings, registry, metrics)
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    wire.unbounded(socket)
    socket.bind(endpoint)
    server = EngineServer(socket, lifecycle, registry, cache)
    serving = asyncio.create_task(server.serve())
    sampler = DeviceMemorySampler(metrics)
    if await lifecycle.load_all(sources):
        sampler.start()
    server.loaded()
    logger.info("engine on %s serving at %s", settings.device, endpoint)
    await stop.wait()
    server.abandon()  # parts of a front end that died mid-request: never to be completed
    await lifecycle.close()  # front ends have drained: this only finishes what is left
    serving.cancel()
    sampler.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    socket.close()
    context.term()

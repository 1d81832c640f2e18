"""The engine process: one per device. It owns the models' backends and batchers (queue, policy,
priorities, cancellation) and serves front ends over a ZeroMQ ROUTER socket (service.engine.wire).
Front ends do everything else: HTTP, gRPC, validation, tokenising, caching, normalising."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import zmq
import zmq.asyncio

from service.batching.batcher import Batcher, BatcherClosedError, QueueFullError
from service.batching.submission import Submission
from service.engine import wire
from service.lifecycle import Lifecycle
from service.loading import ModelSource
from service.metrics import DeviceMemorySampler, Metrics
from service.scoring.registry import ModelRegistry
from service.settings import Settings

logger = logging.getLogger("rmserve.engine")

Key = tuple[bytes, int]  # (front end's socket identity, its request id)


class EngineServer:
    """Answers front ends' requests with the batchers of the models this engine loaded."""

    def __init__(self, socket: zmq.asyncio.Socket, lifecycle: Lifecycle, registry: ModelRegistry) -> None:
        self._socket = socket
        self._lifecycle = lifecycle
        self._registry = registry
        self._loaded = asyncio.Event()
        self._open: dict[Key, tuple[Submission, Batcher]] = {}
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
        cards = [self._card(model.name).as_wire() for model in self._registry.all()]
        await self._send(identity, "models", cards)

    def _card(self, name: str) -> wire.ModelCard:
        served = self._registry.get(name)
        limits, info = served.batcher.limits, served.backend
        return wire.ModelCard(served.name, served.version, info.backend, info.device, info.dtype,
                              info.shares_prefixes, limits.max_pairs, limits.max_tokens,
                              limits.max_padding_fraction)

    def _add(self, identity: bytes, sid: int, model: str, priority: int, last: bool, *packed: object) -> None:
        key = (identity, sid)
        batcher = self._registry.get(model).batcher
        try:
            submission = self._open[key][0] if key in self._open else batcher.open(priority)
            self._open[key] = submission, batcher
            submission.add(wire.unpack_pairs(*packed))  # type: ignore[arg-type]
        except (QueueFullError, BatcherClosedError) as exc:
            self._open.pop(key, None)
            kind = wire.QUEUE_FULL if isinstance(exc, QueueFullError) else wire.CLOSED
            self._track(asyncio.create_task(self._send(identity, "error", sid, kind, str(exc), batcher.full)))
            return
        if last:
            self._finish(identity, sid)

    def _finish(self, identity: bytes, sid: int) -> None:
        key = (identity, sid)
        if (opened := self._open.pop(key, None)) is None:
            return
        submission, batcher = opened
        submission.close()
        self._answering[key] = asyncio.create_task(self._answer(key, submission, batcher)), submission

    async def _answer(self, key: Key, submission: Submission, batcher: Batcher) -> None:
        identity, sid = key
        try:
            outcome = await submission.outcome()
        except Exception as exc:  # the forward pass failed: the front end says so, with an error id
            logger.error("forward pass failed", exc_info=exc)
            await self._send(identity, "error", sid, wire.FAILED, repr(exc), batcher.full)
        else:
            await self._send(identity, "done", sid, wire.pack_rewards(outcome.rewards),
                             outcome.timing.queue_s, outcome.timing.compute_s, batcher.full)
        finally:
            self._answering.pop(key, None)

    def _cancel(self, key: Key) -> None:
        """Drop the request's queued items (they never reach a forward pass) and its answer."""
        if (opened := self._open.pop(key, None)) is not None:
            opened[0].cancel()
        if (answering := self._answering.pop(key, None)) is not None:
            task, submission = answering
            submission.cancel()
            task.cancel()

    async def _send(self, identity: bytes, *fields: object) -> None:
        await self._socket.send_multipart([identity, wire.encode(*fields)])

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def run_engine(settings: Settings, sources: list[ModelSource], endpoint: str) -> None:
    """Load the models on settings.device, serve front ends at `endpoint` until SIGUSR1 (the
    supervisor's, once the front ends have drained), then finish what is queued."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, stop.set)
    metrics, registry = Metrics(), ModelRegistry()
    lifecycle = Lifecycle(settings, registry, metrics)
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(endpoint)
    server = EngineServer(socket, lifecycle, registry)
    serving = asyncio.create_task(server.serve())
    sampler = DeviceMemorySampler(metrics)
    if await lifecycle.load_all(sources):
        sampler.start({model.backend.device for model in registry.all()})
    server.loaded()
    logger.info("engine on %s serving at %s", settings.device, endpoint)
    await stop.wait()
    await lifecycle.close()  # front ends have drained: this only finishes what is left
    serving.cancel()
    sampler.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    socket.close()
    context.term()

"""A front end's view of the engine processes: each model's batcher, as the scoring core uses it
(open, add, close, outcome, cancel), with the batching done in the engines.

A request's parts go to the engine with the fewest items outstanding from this front end, so
that several devices share the work (data parallel) and one big request spreads over all of
them. An engine that stops fails every request waiting on it at once (503), never a hang."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from service.backends.base import BackendInfo, EncodedPair
from service.batching.batcher import BatcherClosedError, QueueFullError
from service.batching.policy import BatchLimits
from service.batching.submission import BatchedRewards, Timing
from service.engine import wire

logger = logging.getLogger("rmserve.engine")

# An engine that said its queue was full is not sent new requests for this long; after it, the
# engine decides again (a front end hears of a queue that emptied only when it asks).
_FULL_FOR_S = 0.05


class EngineStoppedError(BatcherClosedError):
    """The engine process is gone; the server is exiting (see the supervisor)."""


class EngineLink:
    """One engine's socket: requests out, answers in, and a watch on the connection."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, name: str) -> None:
        self.name = name
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        wire.unbounded(self._socket)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._socket.connect(endpoint)
        self._waiting: dict[int, tuple[asyncio.Future[list[object]], int]] = {}
        self.outstanding = 0  # items sent and not yet answered
        self.stopped: str | None = None  # why, once the engine is gone
        self._full_until = 0.0
        self._hello: asyncio.Future[list[object]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._watch())]

    async def models(self) -> list[wire.ModelCard]:
        """The engine's models, once it has loaded them (raises if its loading failed)."""
        self._hello = asyncio.get_running_loop().create_future()
        self.send("hello")
        kind, *fields = await self._hello
        if kind == "failed":
            raise RuntimeError(str(fields[0]))
        return [wire.ModelCard.from_wire(card) for card in fields[0]]  # type: ignore[attr-defined]

    @property
    def full(self) -> bool:
        return time.monotonic() < self._full_until

    def send(self, *fields: object) -> None:
        self._socket.send(wire.encode(*fields))

    def expect(self, sid: int, items: int) -> asyncio.Future[list[object]]:
        """The answer to request `sid`, which sends this engine `items` more items (a live engine:
        EnginePool.pick refuses when any has stopped)."""
        future, counted = self._waiting.get(sid) or (asyncio.get_running_loop().create_future(), 0)
        self._waiting[sid] = (future, counted + items)
        self.outstanding += items
        return future

    def forget(self, sid: int) -> None:
        if (entry := self._waiting.pop(sid, None)) is not None:
            entry[0].cancel()
            self.outstanding -= entry[1]

    async def _receive(self) -> None:
        while True:
            kind, *fields = wire.decode(await self._socket.recv())
            if kind in ("models", "failed"):
                if self._hello is not None and not self._hello.done():
                    self._hello.set_result([kind, *fields])
                continue
            sid, *answer = fields
            self._full_until = time.monotonic() + _FULL_FOR_S if answer[-1] else 0.0
            if (entry := self._waiting.pop(sid, None)) is None:
                continue  # cancelled meanwhile
            future, items = entry
            self.outstanding -= items
            if not future.done():
                future.set_result([kind, *answer[:-1]])

    async def _watch(self) -> None:
        connected = False
        while True:
            event = (await recv_monitor_message(self._monitor))["event"]
            if event == zmq.EVENT_CONNECTED:
                connected = True
            elif event == zmq.EVENT_DISCONNECTED and connected:
                self._stop(f"the engine process for {self.name} stopped; the server is exiting")
                return

    def _stop(self, reason: str) -> None:
        logger.error(reason)
        self.stopped = reason
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(EngineStoppedError(reason))
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(["failed", reason])

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._monitor.close()
        self._socket.close()


class EnginePool:
    """Every engine process of the server, as one front end reaches them."""

    def __init__(self, endpoints: Sequence[tuple[str, str]]) -> None:
        self._endpoints = endpoints  # (endpoint, device name)
        self._context: zmq.asyncio.Context | None = None
        self.links: list[EngineLink] = []
        self._serials = itertools.count()

    async def models(self) -> dict[str, wire.ModelCard]:
        """Start the links; every engine's models once all have loaded (the first engine's cards:
        every engine loads the same models)."""
        self._context = zmq.asyncio.Context()
        self.links = [EngineLink(self._context, endpoint, name) for endpoint, name in self._endpoints]
        for link in self.links:
            link.start()
        cards = await asyncio.gather(*(link.models() for link in self.links))
        return {card.name: card for card in cards[0]}

    @property
    def stopped(self) -> str | None:
        return next((link.stopped for link in self.links if link.stopped), None)

    def batcher(self, card: wire.ModelCard) -> RemoteBatcher:
        return RemoteBatcher(self, card)

    def pick(self) -> EngineLink:
        """The live engine with the fewest outstanding items, preferring one whose queue has room."""
        if reason := self.stopped:
            raise EngineStoppedError(reason)
        return min(self.links, key=lambda link: (link.full, link.outstanding))

    def next_serial(self) -> int:
        return next(self._serials)

    def close(self) -> None:
        for link in self.links:
            link.close()
        if self._context is not None:
            self._context.term()


class RemoteBatcher:
    """One model's batching, done by the engines."""

    def __init__(self, pool: EnginePool, card: wire.ModelCard) -> None:
        self._pool = pool
        self.model = card.name
        self.limits = BatchLimits(card.max_pairs, card.max_tokens, card.max_padding_fraction)
        self.info = BackendInfo(card.backend, card.device, card.dtype, card.shares_prefixes)

    def open(self, priority: int = 0) -> RemoteSubmission:
        """A new request; refused at once if every engine's queue was full a moment ago."""
        if self._pool.pick().full:
            raise QueueFullError("the queue is full: retry shortly")
        return RemoteSubmission(self._pool, self.model, priority)

    async def stop(self) -> None:
        """Nothing to stop here: each engine finishes its own queue when it is stopped."""


class RemoteSubmission:
    """One request's items sent to the engines as they are tokenised; the parts' rewards back in
    order. A part is held until the next one (or the end) is known, so that a small request is
    one message each way."""

    def __init__(self, pool: EnginePool, model: str, priority: int) -> None:
        self._pool = pool
        self._model = model
        self._priority = priority
        self._sid = pool.next_serial()
        self._held: Sequence[EncodedPair] = ()
        self._parts: list[tuple[EngineLink, int]] = []
        self._answers: dict[EngineLink, asyncio.Future[list[object]]] = {}
        self._closed = False

    def add(self, pairs: Sequence[EncodedPair]) -> None:
        if self._held:
            self._send(self._held, last=False)
        self._held = pairs

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        final = self._send(self._held, last=True) if self._held else None
        self._held = ()
        for link in self._answers:
            if link is not final:
                link.send("close", self._sid)

    def _send(self, pairs: Sequence[EncodedPair], *, last: bool) -> EngineLink:
        link = self._pool.pick()
        self._answers[link] = link.expect(self._sid, len(pairs))
        self._parts.append((link, len(pairs)))
        link.send("add", self._sid, self._model, self._priority, last, *wire.pack_pairs(pairs))
        return link

    async def outcome(self) -> BatchedRewards:
        self.close()
        links = list(self._answers)
        answers = dict(zip(links, await asyncio.gather(*(self._answers[link] for link in links)),
                           strict=True))
        rewards, timing = {}, Timing()
        for link, (kind, *fields) in answers.items():
            if kind == "error":
                raise _refusal(*fields)  # type: ignore[arg-type]
            rewards[link] = iter(wire.unpack_rewards(fields[0]))  # type: ignore[arg-type]
            timing += Timing(fields[1], fields[2])  # type: ignore[arg-type]
        ordered = [next(rewards[link]) for link, count in self._parts for _ in range(count)]
        return BatchedRewards(ordered, timing)

    def cancel(self) -> int:
        """Drop what the engines have not computed; how many items were sent and not answered
        (or never sent)."""
        dropped = len(self._held)
        for link, future in self._answers.items():
            if future.cancelled() or not future.done():  # no answer came (awaiting it was cancelled)
                dropped += sum(count for part, count in self._parts if part is link)
            link.send("cancel", self._sid)
            link.forget(self._sid)
        self._held, self._closed = (), True
        return dropped


def _refusal(kind: str, message: str) -> Exception:
    """An engine's error as the batcher's own exceptions, so the scoring core answers as usual."""
    if kind == wire.QUEUE_FULL:
        return QueueFullError(message)
    if kind == wire.CLOSED:
        return BatcherClosedError(message)
    return RuntimeError(f"engine: {message}")

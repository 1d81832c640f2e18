"""uvicorn with a graceful drain (told of SIGTERM before it stops accepting connections), and
connections that a client cannot hold open by being slow: a deadline on every phase a client
controls, and a bound on how many are open at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar, Literal

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import HANDLED_SIGNALS

from service.api.http.middleware import CLOSED_EXTENSION, OVERLOAD_EXTENSION
from service.api.observe import error_body

log = logging.getLogger("rmserve.connections")

# The app answers 408 itself at body_timeout_s (counted and logged); the connection is closed
# this much later whatever happened, e.g. a client still sending a body after a 401.
BODY_BACKSTOP_S = 1.0
# A closed socket's last bytes (a 408) get this long to leave; a client that does not read them
# must not keep the socket open, so it is then reset.
CLOSE_FLUSH_S = 1.0
# File descriptors kept beside the connections: the listeners, gRPC, model files, logs.
FD_RESERVE = 256
# Connections over max_connections are still accepted and answered 503 (probes answered as
# usual) up to this multiple of it; past that they are reset at once, so that the process
# never runs out of descriptors and stops accepting.
SHED_HEADROOM = 2
_SHED_WARNING_EVERY_S = 10.0

_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: 16\r\n\r\nRequest Timeout\n")

Phase = Literal["head", "idle", "body", "busy", "send", "closing"]
# When the server is full, a new connection displaces the open one that has waited longest in
# the first of these phases: idle between requests, then sending its request head, then its
# body. A connection whose answer is being computed is never displaced.
_DISPLACEABLE: dict[Phase, int] = {"idle": 0, "head": 1, "body": 2}


@dataclass(frozen=True)
class ConnectionLimits:
    """How long an HTTP client may take over each phase of a connection, and how many it holds."""

    header_timeout_s: float  # from connecting (or the first byte after an answer) to a full head
    body_timeout_s: float  # from the head to the end of the body; also a stalled write
    keep_alive_timeout_s: float  # idle between an answer and the next request
    max_connections: int

    def timeout_s(self, phase: Phase) -> float | None:
        return {
            "head": self.header_timeout_s, "idle": self.keep_alive_timeout_s,
            "body": self.body_timeout_s + BODY_BACKSTOP_S, "send": self.body_timeout_s,
        }.get(phase)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline per phase. uvicorn's own keep-alive timer starts only
    after a first answer and is cancelled by any byte received, so a client dripping its head (or
    its body after an answer) would hold the socket forever; here a timer runs whenever the client,
    not the server, is the one to act."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self.phase_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._answered_one = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter_phase()
        if len(self.connections) > self.limits.max_connections and not self._displace_one():
            self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._enter_phase()

    def on_response_complete(self) -> None:
        self._answered_one = True
        super().on_response_complete()
        self._enter_phase()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._enter_phase()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._enter_phase()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse gets the one error body too, not uvicorn's plain text."""
        body = json.dumps(error_body("bad_request", f"malformed HTTP request ({msg.rstrip('.')})")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.close(why=(400, "bad_request"))

    @property
    def phase(self) -> Phase:
        if self.transport.is_closing():
            return "closing"
        if self.flow.write_paused:  # the client stopped reading its answer
            return "send"
        if self.conn.their_state is h11.SEND_BODY:
            return "body"
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.conn.their_state is h11.IDLE and not answering:
            started = bool(self.conn.trailing_data[0]) or not self._answered_one
            return "head" if started else "idle"
        return "busy"

    def _enter_phase(self) -> None:
        """Re-arm the timer when the phase changes; within a phase the deadline stands, so
        dripping bytes does not extend it."""
        phase = self.phase
        if phase == self._phase:
            return
        self._phase, self.phase_since = phase, time.monotonic()
        self._cancel_timer()
        if (timeout_s := self.limits.timeout_s(phase)) is not None:
            self._timer = self.loop.call_later(timeout_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == "head" and self.conn.trailing_data[0]:  # half a head: say why it ends
            self.transport.write(_REQUEST_TIMEOUT)
        log.debug("closing a connection: %s phase over its timeout", phase,
                  extra={"client": _peer(self.client), "phase": phase})
        self.close(reset=phase == "send", why=(408, "request_timeout"))

    def close(self, *, reset: bool = False, why: tuple[int, str] | None = None) -> None:
        """Close now; a socket whose client does not read is reset rather than left flushing.
        A request the app is still handling is counted as `why` (status, error type)."""
        if why and self.cycle is not None and not self.cycle.response_started:
            self.scope.setdefault("extensions", {})[CLOSED_EXTENSION] = why  # type: ignore[index]
        self._cancel_timer()
        self._phase = "closing"
        self.connections.discard(self)
        if reset:
            self.transport.abort()
            return
        self.transport.close()
        self.loop.call_later(CLOSE_FLUSH_S, self.transport.abort)

    def _displace_one(self) -> bool:
        candidates = [c for c in self.connections if isinstance(c, BoundedH11Protocol)
                      and c is not self and c._phase in _DISPLACEABLE]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: (_DISPLACEABLE.get(c._phase or "busy", 0), c.phase_since))
        log.debug("server full: closing the connection %s longest in the %s phase",
                  _peer(victim.client), victim._phase)
        victim.close(why=(503, "too_many_connections"))
        return True

    def _shed(self) -> None:
        """Every open connection is being answered: this one gets 503 (the probes are still
        answered), or a reset past the headroom."""
        if len(self.connections) > SHED_HEADROOM * self.limits.max_connections:
            self.close(reset=True)
            return
        app = self.app

        async def flagged(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[OVERLOAD_EXTENSION] = {}
            await app(scope, receive, send)

        self.app = flagged
        _warn_shedding(len(self.connections), self.limits.max_connections)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_last_shed_warning = [-math.inf]


def _warn_shedding(open_connections: int, limit: int) -> None:
    now = time.monotonic()
    if now - _last_shed_warning[0] >= _SHED_WARNING_EVERY_S:
        _last_shed_warning[0] = now
        log.warning("%d connections open, all busy (--max-connections %d): answering new ones "
                    "503", open_connections, limit)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn makes per connection, bound to these limits."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"limits": limits})


def fit_fd_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE so that max_connections (and the 503 headroom) fit; if the
    hard limit is too low, lower max_connections to what fits and say so. Running out of
    descriptors would stop the server accepting, probes included."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SHED_HEADROOM * max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    fitted = max(1, (soft - FD_RESERVE) // SHED_HEADROOM)
    log.warning("--max-connections %d needs %d file descriptors and the limit is %d: serving at "
                "most %d connections", max_connections, needed, soft, fitted)
    return fitted


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT `on_exit` runs (readiness turns false, new work gets 503, gRPC
    stops taking calls); then uvicorn closes its listener, lets requests in flight finish within
    `timeout_graceful_shutdown`, and the app's lifespan ends (queued work is computed). A second
    signal exits at once."""

    def __init__(
        self, config: uvicorn.Config, on_exit: Callable[[], None], signals: tuple[int, ...] = HANDLED_SIGNALS
    ) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._signals = signals  # an API process of several leaves Ctrl-C to the supervisor

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal once it has shut down, so the process dies of it (143);
        # a finished drain is a clean exit, 0, which is what orchestrators and users expect.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in self._signals}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self._signals)  # held since its start (supervisor)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

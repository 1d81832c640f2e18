"""ASGI middleware: request body limit and deadline, and each request's id, metrics and log line."""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import UNAUTHORIZED_MESSAGE, ApiKeys
from service.api.http.errors import send_error
from service.api.observe import RequestObservation, request_id_from
from service.metrics import Metrics

# Their 503s while starting or draining are answers, not errors.
_PROBES = {"/healthz", "/readyz"}

# Set by the connection layer (service/serving.py) on requests of a connection accepted while
# every other one was busy: they are answered 503, probes excepted.
OVERLOAD_EXTENSION = "rmserve.overloaded"
# Set by the connection layer when it closes a connection whose request the app is still handling
# (a malformed chunk, a body past its deadline, a slow connection displaced): (status, error type),
# what the request is counted as; otherwise the app would see a disconnect and count the client's.
CLOSED_EXTENSION = "rmserve.closed"
# What a request is counted as when its client went away before it was answered (nginx's code).
CLIENT_CLOSED = 499


class BodyLimitMiddleware:
    """Answers 413 for bodies over the limit, declared or streamed, before anything parses them,
    and 408 for a body not in within `body_timeout_s` of its head (a dripped upload)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        declared = headers.get(b"content-length")
        # Any request that carries a body, whatever its method: a GET's body is read too (and
        # could be as large, or dripped as slowly).
        if declared in (None, b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        # Read the whole body here (bounded by the limit and the deadline) and replay it to the app.
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.body_timeout_s):
                if not await self._read(scope, receive, send, chunks):
                    return
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_s:g} s of its headers"
            await send_error(scope, send, 408, "request_timeout", message, {"Connection": "close"})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive, send: Send, chunks: list[bytes]) -> bool:
        """The body into `chunks`; False if it was answered (413) or the client went away."""
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return True

    async def _too_large(self, scope: Scope, send: Send) -> None:
        message = f"request body over {self.max_body_bytes} bytes; split the request"
        await send_error(scope, send, 413, "body_too_large", message)


class ApiKeyMiddleware:
    """401 for protected paths without a valid API key, before the body is read. The answer is the
    same whether the key was missing or wrong."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys, open_paths: set[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] in self.open_paths
                or self.keys.allows(Headers(scope=scope).get("authorization"))):
            await self.app(scope, receive, send)
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        await send_error(scope, send, 401, "unauthorized", UNAUTHORIZED_MESSAGE, challenge)


class RequestObserverMiddleware:
    """Gives each request an id (the client's X-Request-ID, or a new one, returned either way) and
    a RequestObservation that the routes tell what they served; when the request is answered it is
    counted, timed and logged once."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints  # known paths only, so labels stay bounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        observation = RequestObservation(
            self.metrics, endpoint, request_id_from(Headers(scope=scope).get("x-request-id")),
            log_level=logging.INFO if _scoring(scope["method"], endpoint) else logging.DEBUG,
        )
        scope.setdefault("state", {})["observation"] = observation
        status: int | None = None
        client_gone = False
        inflight = self.metrics.inflight.labels(endpoint=endpoint)
        inflight.inc()

        async def receive_noting_disconnect() -> Message:
            nonlocal client_gone
            message = await receive()
            client_gone = client_gone or message["type"] == "http.disconnect"
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = observation.request_id
            await send(message)

        try:
            if OVERLOAD_EXTENSION in scope.get("extensions", {}) and endpoint not in _PROBES:
                await _overloaded(scope, send_with_id)
            else:
                await self.app(scope, receive_noting_disconnect, send_with_id)
        except Exception:  # a bug: the outer error handler answers 500; count it as one
            observation.failed("internal")
            status = 500
            raise
        finally:
            inflight.dec()
            status = status or _unanswered(observation, client_gone, scope)
            observation.answered(status, failed=status >= 400 and endpoint not in _PROBES)


def _unanswered(observation: RequestObservation, client_gone: bool, scope: Scope) -> int:
    """The status of a request the app returned from without answering: the server's connection
    layer closed it (and says why), the client hung up (an aborted upload: the client's doing,
    499), or else uvicorn answers 500 (a bug)."""
    if closed := scope.get("extensions", {}).get(CLOSED_EXTENSION):
        status, kind = closed
        observation.failed(kind)
        return int(status)
    if client_gone:
        observation.failed("client_closed")
        return CLIENT_CLOSED
    observation.failed("internal")
    return 500


async def _overloaded(scope: Scope, send: Send) -> None:
    message = "the server is at its connection limit with every connection busy; retry"
    await send_error(scope, send, 503, "too_many_connections", message, {"Connection": "close"})


def _scoring(method: str, endpoint: str) -> bool:
    """Scoring requests (every known POST route, rmserve's and the compatible APIs') are logged at
    info; everything else (probes and scrapes every few seconds, docs) at debug."""
    return method == "POST" and endpoint != "other"

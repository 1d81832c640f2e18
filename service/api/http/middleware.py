"""ASGI middleware: request body limit, and each request's id, metrics and log line."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import UNAUTHORIZED_MESSAGE, ApiKeys
from service.api.http.errors import send_error
from service.api.observe import RequestObservation, request_id_from
from service.metrics import Metrics

# Logged at info; everything else (probes and scrapes every few seconds, docs) at debug.
_SCORING_ENDPOINTS = {"/v1/score", "/v1/rank", "/v1/compare", "/get_reward"}
# Their 503s while starting or draining are answers, not errors.
_PROBES = {"/healthz", "/readyz"}

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyLimitMiddleware:
    """Answers 413 for bodies over the limit, declared or streamed, before anything parses them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        # Read the whole body here (bounded by the limit) and replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

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
            log_level=logging.INFO if endpoint in _SCORING_ENDPOINTS else logging.DEBUG,
        )
        scope.setdefault("state", {})["observation"] = observation
        status = 500
        inflight = self.metrics.inflight.labels(endpoint=endpoint)
        inflight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = observation.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # a bug: the outer error handler answers 500; count it as one
            observation.failed("internal")
            raise
        finally:
            inflight.dec()
            observation.answered(status, failed=status >= 400 and endpoint not in _PROBES)

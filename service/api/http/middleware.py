"""ASGI middleware: request body limit, and each request's id, metrics and log line."""

from __future__ import annotations

import json
import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import UNAUTHORIZED_MESSAGE, ApiKeys
from service.metrics import Metrics
from service.request_record import RequestRecord, request_id_from

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
        record: RequestRecord | None = scope.get("state", {}).get("record")
        if record is not None:
            record.error_type = "body_too_large"
        body = json.dumps({"error": {
            "type": "body_too_large",
            "message": f"request body over {self.max_body_bytes} bytes; split the request",
        }}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})


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
        record: RequestRecord | None = scope.get("state", {}).get("record")
        if record is not None:
            record.error_type = "unauthorized"
        body = json.dumps({"error": {"type": "unauthorized", "message": UNAUTHORIZED_MESSAGE}}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]})
        await send({"type": "http.response.body", "body": body})


class RequestObserverMiddleware:
    """Gives each request an id (the client's X-Request-ID, or a new one, returned either way), a
    RequestRecord for the routes to fill in, and when it is answered counts it, times it and logs
    one JSON line about it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints  # known paths only, so labels stay bounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        record = RequestRecord(request_id_from(Headers(scope=scope).get("x-request-id")), endpoint)
        scope.setdefault("state", {})["record"] = record
        started = time.monotonic()
        status = 500
        inflight = self.metrics.inflight.labels(endpoint=endpoint)
        inflight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # a bug: the outer error handler answers 500; count it as one
            record.error_type = record.error_type or "internal"
            raise
        finally:
            inflight.dec()
            duration_s = time.monotonic() - started
            failed = status >= 400 and endpoint not in _PROBES
            self.metrics.count_request(record, str(status), failed=failed, duration_s=duration_s)
            record.log(status, duration_s, logging.INFO if endpoint in _SCORING_ENDPOINTS else logging.DEBUG)

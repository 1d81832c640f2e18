"""What every compatibility route shares: items counted before validation, errors in the shape the
other project's clients parse, and routes that share a path told apart by the body's fields."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from service.api.http.body_checks import check_body, parsed_json
from service.api.http.errors import RETRY_AFTER_S
from service.api.observe import error_kind
from service.scoring.errors import ScoringError, TooManyInputsError

# (status rmserve would answer, rmserve's error type, message) -> (status, body) for the client.
ErrorShape = Callable[[int, str, str], tuple[int, dict[str, Any]]]
# Top-level fields of the other projects' bodies that hold one item per element.
_LIST_FIELDS = ("input", "inputs", "texts", "documents", "text_1", "text_2", "queries", "items",
                "data_1", "data_2", "messages")


def count_items(body: Any, max_items: int) -> None:
    """Refuse before validation what would be expensive to validate (see body_checks.py): too many
    elements in any list field, or objects with more keys than any of these APIs has."""
    check_body(body, "", max_items)
    if not isinstance(body, dict):
        return
    for field in _LIST_FIELDS:
        value = body.get(field)
        if isinstance(value, list) and len(value) > max_items:
            raise TooManyInputsError(
                f"{len(value)} {field} in one request; the limit is {max_items}: split the request"
            )


def describe(exc: RequestValidationError) -> str:
    """'body.texts.0: Input should be a valid string': the field first, so it says what to fix."""
    parts = []
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":
            return "request body is not valid JSON"
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def sigmoid(reward: float) -> float:
    """The logistic function, without overflow for rewards of either sign."""
    if reward >= 0:
        return 1.0 / (1.0 + math.exp(-reward))
    z = math.exp(reward)
    return z / (1.0 + z)


class CompatRoute(APIRoute):
    """A route that answers its errors in another project's shape (`error_shape`), bodies counted
    first. Subclasses name the shape; FastAPI keeps the class when a router is included."""

    error_shape: ClassVar[ErrorShape]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered_in_shape(request: Request) -> Response:
            try:
                if raw := await request.body():
                    body = await parsed_json(request, raw)  # None: validation reports it, in shape
                    count_items(body, request.app.state.scorer.max_inputs_per_request)
                return await handler(request)
            except ScoringError as exc:
                kind = error_kind(exc)
                return self.error(request, kind.http_status, kind.type, str(exc), exc.model)
            except RequestValidationError as exc:
                return self.error(request, 422, "invalid_request", describe(exc))

        return answered_in_shape

    def error(
        self, request: Request, status: int, kind: str, message: str, model: tuple[str, str] | None = None
    ) -> JSONResponse:
        """The error in the client's shape; the request's record learns rmserve's error type."""
        observation = getattr(request.state, "observation", None)
        if observation is not None:
            observation.failed(kind, model)
        status, body = type(self).error_shape(status, kind, message)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
        return JSONResponse(body, status_code=status, headers=headers)


class BodyDispatchRoute(CompatRoute):
    """A route that shares its path and method with another (rmserve's own /v1/score, or
    another project's /rerank), included after it, and takes only the bodies `wants` recognises by
    their fields; any other body goes to the route `otherwise` names, exactly as if this one were
    absent (its validation, errors and OpenAPI entry are that route's own).
    """

    wants: ClassVar[Callable[[Any], bool]]
    otherwise: ClassVar[Callable[[], APIRoute]]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, replay = await _buffered(receive)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if type(self).wants(parsed):
            await super().handle(scope, replay, send)
            return
        route = type(self).otherwise()
        match, child_scope = route.matches(scope)
        if match != Match.FULL:
            raise HTTPException(status_code=404)
        scope.update(child_scope)
        await route.handle(scope, replay, send)


def route_of(router: APIRouter, path: str, method: str) -> APIRoute:
    """The route of `router` that answers `method` on `path`."""
    return next(route for route in router.routes
                if isinstance(route, APIRoute) and route.path == path and method in route.methods)


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (already bounded by BodyLimitMiddleware), and a receive that replays it
    once, then passes on what comes next (a disconnect)."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay

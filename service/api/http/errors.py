"""Errors to HTTP answers, in one place: the error table and body are service.api.observe's."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from service.api.observe import RequestObservation, error_body, error_kind, new_error_id
from service.scoring.errors import ScoringError

logger = logging.getLogger("rmserve.http")
RETRY_AFTER_S = 1


def error_response(
    status: int, kind: str, message: str, request: Request | None = None,
    model: tuple[str, str] | None = None,
) -> JSONResponse:
    """The one error body; `request`'s observation learns the error type (for metrics and the log)."""
    observation = _observation_of(request.scope) if request is not None else None
    if observation is not None:
        observation.failed(kind, model)
    return JSONResponse(error_body(kind, message), status_code=status, headers=_headers(status))


async def send_error(scope: Scope, send: Send, status: int, kind: str, message: str,
                     headers: dict[str, str] | None = None) -> None:
    """The same answer from ASGI middleware, which runs before (and without) the app."""
    observation = _observation_of(scope)
    if observation is not None:
        observation.failed(kind)
    body = json.dumps(error_body(kind, message)).encode()
    extra = {**(_headers(status) or {}), **(headers or {})}
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in extra.items()),
    ]})
    await send({"type": "http.response.body", "body": body})


def _headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None


def _observation_of(scope: Scope) -> RequestObservation | None:
    return scope.get("state", {}).get("observation")


# FastAPI's detail when reading the body failed other than as JSON (e.g. bytes that are not UTF-8).
_UNREADABLE_BODY = "There was an error parsing the body"
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _describe_validation(exc: RequestValidationError, content_type: str | None) -> str:
    """'body.inputs.0.prompt: Field required' — the field path first, so it says what to fix."""
    parts = []
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "unparseable")
            return f"request body is not valid UTF-8 JSON ({reason})"
        if tuple(error.get("loc", ())) == ("body",) and (whole := _describe_whole_body(error, content_type)):
            return whole
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _describe_whole_body(error: dict[str, Any], content_type: str | None) -> str | None:
    """What is wrong with the body as a whole: none, not sent as JSON, or JSON but no object."""
    value = error.get("input")
    if error.get("type") == "missing":
        return "request body is missing: send a JSON object with content-type: application/json"
    if isinstance(value, bytes | bytearray):  # FastAPI parses JSON only under a JSON content type
        return (f"request body must be sent with content-type: application/json (got "
                f"{content_type or 'none'}); it is read as JSON only then")
    if type(value) in _JSON_TYPES:
        return f"request body must be a JSON object, not {_JSON_TYPES[type(value)]}"
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ScoringError)
    async def _scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
        kind = error_kind(exc)
        return error_response(kind.http_status, kind.type, str(exc), request, exc.model)

    # One rule for bodies: whatever is wrong with one (not UTF-8, not JSON, not an object, no JSON
    # content type, missing, or fields that do not fit) is 422 invalid_request, saying which.
    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _describe_validation(exc, request.headers.get("content-type"))
        return error_response(422, "invalid_request", message, request)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Framework errors (unknown path, wrong method) get the same body shape; FastAPI's 400 for
        # a body it could not read is a bad body like any other (the rule above).
        if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
            message = "request body is not valid UTF-8 JSON (it could not be decoded)"
            return error_response(422, "invalid_request", message, request)
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, kind, str(exc.detail), request)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up while its body was read (an aborted upload): its doing, not ours.
        return error_response(499, "client_closed", "client closed the connection", request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = new_error_id()
        logger.exception("internal error %s", error_id, exc_info=exc)
        return error_response(500, "internal", f"internal error (id {error_id}); see server log", request)

"""Domain errors to HTTP status codes, in one place; every error body is ErrorResponse."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import (
    ClientGoneError,
    DeadlineExceededError,
    InternalScoringError,
    InvalidInputError,
    NotReadyError,
    OverloadedError,
    ScoringError,
    TooLargeError,
    TooManyInputsError,
    UnknownModelError,
)

logger = logging.getLogger("rmserve.http")
RETRY_AFTER_S = 1

_STATUS: dict[type[ScoringError], tuple[int, str]] = {
    InvalidInputError: (422, "invalid_input"),
    TooManyInputsError: (413, "too_many_inputs"),
    TooLargeError: (413, "too_large"),
    UnknownModelError: (404, "unknown_model"),
    NotReadyError: (503, "not_ready"),
    OverloadedError: (429, "overloaded"),
    InternalScoringError: (500, "internal"),
    DeadlineExceededError: (504, "deadline_exceeded"),
    # Nobody reads it; the status is for the metrics and the log (nginx's "client closed request").
    ClientGoneError: (499, "client_closed"),
}


def error_response(status: int, kind: str, message: str, request: Request | None = None) -> JSONResponse:
    """The one error body; `request`'s record learns the error type (for metrics and the log)."""
    record = getattr(request.state, "record", None) if request is not None else None
    if record is not None:
        record.error_type = kind
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    body = {"error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    """'body.inputs.0.prompt: Field required' — the field path first, so it says what to fix."""
    parts = []
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "unparseable")
            return f"request body is not valid UTF-8 JSON ({reason})"
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ScoringError)
    async def _scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
        status, kind = next(
            (v for cls, v in _STATUS.items() if isinstance(exc, cls)), (500, "internal")
        )
        return error_response(status, kind, str(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(exc), request)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Framework errors (unparseable body, unknown path, wrong method) get the same body shape.
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, kind, str(exc.detail), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("internal error %s", error_id, exc_info=exc)
        return error_response(500, "internal", f"internal error (id {error_id}); see server log", request)

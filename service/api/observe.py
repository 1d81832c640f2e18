"""What both transports do around a request: its id, the one error table and error body, and its
record (assembled here from what the scorer returned or raised), counted and logged once."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from service.batching.submission import Timing
from service.metrics import Metrics
from service.scoring.errors import (
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
from service.scoring.results import Usage

# The label of requests that never reached a model (bad body, unknown model, not ready): the
# requested name is not used, so a client cannot grow the label set.
NO_MODEL = "none"

request_log = logging.getLogger("rmserve.requests")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


@dataclass(frozen=True)
class ErrorKind:
    """One kind of error as each transport answers it."""

    type: str
    http_status: int
    grpc_code: str  # a grpc.StatusCode name


_ERROR_KINDS: dict[type[ScoringError], ErrorKind] = {
    InvalidInputError: ErrorKind("invalid_input", 422, "INVALID_ARGUMENT"),
    TooManyInputsError: ErrorKind("too_many_inputs", 413, "INVALID_ARGUMENT"),
    TooLargeError: ErrorKind("too_large", 413, "INVALID_ARGUMENT"),
    UnknownModelError: ErrorKind("unknown_model", 404, "NOT_FOUND"),
    NotReadyError: ErrorKind("not_ready", 503, "UNAVAILABLE"),
    OverloadedError: ErrorKind("overloaded", 429, "RESOURCE_EXHAUSTED"),
    InternalScoringError: ErrorKind("internal", 500, "INTERNAL"),
    DeadlineExceededError: ErrorKind("deadline_exceeded", 504, "DEADLINE_EXCEEDED"),
    # Nobody reads it; the status is for the metrics and the log (nginx's "client closed request").
    ClientGoneError: ErrorKind("client_closed", 499, "CANCELLED"),
}
INTERNAL = ErrorKind("internal", 500, "INTERNAL")


def error_kind(exc: ScoringError) -> ErrorKind:
    return next((kind for cls, kind in _ERROR_KINDS.items() if isinstance(exc, cls)), INTERNAL)


def error_body(kind: str, message: str) -> dict[str, Any]:
    """The one error body, on every transport that answers in JSON."""
    return {"error": {"type": kind, "message": message}}


def new_error_id() -> str:
    return uuid.uuid4().hex[:12]


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    if header is not None and _CLIENT_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestObservation:
    """One request as its transport saw it: told what the scorer returned (`served`) or why it
    failed (`failed`), it is counted and logged once, when `answered`."""

    def __init__(self, metrics: Metrics, endpoint: str, request_id: str, *, log_level: int = logging.INFO):
        self._metrics = metrics
        self.endpoint = endpoint
        self.request_id = request_id
        self._log_level = log_level
        self._started = time.monotonic()
        self.usage: Usage | None = None
        self.model: tuple[str, str] | None = None
        self.error_type: str | None = None

    def served(self, usage: Usage) -> None:
        self.usage = usage
        self.model = (usage.model, usage.version)

    def failed(self, error_type: str, model: tuple[str, str] | None = None) -> None:
        """The first error type given stands: the innermost layer knows best what went wrong."""
        self.error_type = self.error_type or error_type
        self.model = self.model or model

    def answered(self, status: int | str, *, failed: bool) -> None:
        duration_s = time.monotonic() - self._started
        model, version = self.model or (NO_MODEL, NO_MODEL)
        self._metrics.count_request(
            model=model, version=version, endpoint=self.endpoint, code=str(status),
            error_type=(self.error_type or "error") if failed else None, duration_s=duration_s,
        )
        request_log.log(self._log_level, "request", extra=self.log_fields(status, duration_s))

    def log_fields(self, status: int | str, duration_s: float) -> dict[str, Any]:
        model, version = self.model or (NO_MODEL, NO_MODEL)
        usage = self.usage
        timing = usage.timing if usage else Timing()
        return {
            "request_id": self.request_id, "endpoint": self.endpoint, "status": status,
            "model": model, "version": version,
            "items": usage.items if usage else 0, "tokens": usage.tokens if usage else 0,
            "queue_ms": round(timing.queue_s * 1e3, 3), "compute_ms": round(timing.compute_s * 1e3, 3),
            "duration_ms": round(duration_s * 1e3, 3),
            **({"error": self.error_type} if self.error_type else {}),
        }

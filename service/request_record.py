"""What one request did, filled in as it is served; counted and logged once it is answered."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from service.batching.batcher import RequestTiming

# The label of requests that never reached a model (bad body, unknown model, not ready): the
# requested name is not used, so a client cannot grow the label set.
NO_MODEL = "none"

request_log = logging.getLogger("rmserve.requests")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    if header is not None and _CLIENT_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@dataclass
class RequestRecord:
    request_id: str
    endpoint: str
    model: str = NO_MODEL
    version: str = NO_MODEL
    items: int = 0
    tokens: int = 0
    timing: RequestTiming = field(default_factory=RequestTiming)
    error_type: str | None = None

    def log(self, status: int | str, duration_s: float, level: int = logging.INFO) -> None:
        """The request's one log line (JSON with --log-format json)."""
        request_log.log(level, "request", extra=self.log_fields(status, duration_s))

    def log_fields(self, status: int | str, duration_s: float) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "endpoint": self.endpoint, "status": status,
            "model": self.model, "version": self.version, "items": self.items, "tokens": self.tokens,
            "queue_ms": round(self.timing.queue_s * 1e3, 3),
            "compute_ms": round(self.timing.compute_s * 1e3, 3),
            "duration_ms": round(duration_s * 1e3, 3),
            **({"error": self.error_type} if self.error_type else {}),
        }

"""uvicorn with a graceful drain: told of SIGTERM before it stops accepting connections."""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT `on_exit` runs (readiness turns false, new work gets 503, gRPC
    stops taking calls); then uvicorn closes its listener, lets requests in flight finish within
    `timeout_graceful_shutdown`, and the app's lifespan ends (queued work is computed)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._on_exit()
        super().handle_exit(sig, frame)

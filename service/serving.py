"""uvicorn with a graceful drain: told of SIGTERM before it stops accepting connections."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from uvicorn.server import HANDLED_SIGNALS


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT `on_exit` runs (readiness turns false, new work gets 503, gRPC
    stops taking calls); then uvicorn closes its listener, lets requests in flight finish within
    `timeout_graceful_shutdown`, and the app's lifespan ends (queued work is computed). A second
    signal exits at once."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

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
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

"""What each process of a server runs: the in-process server (`rmserve serve` by default), an API
front end, an engine. The supervisor (service/supervisor.py) starts the last two."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from service.allocator import fix_mmap_threshold
from service.app import create_app
from service.lifecycle import PeersLoaded
from service.loading import ModelSource
from service.logs import configure_logging
from service.scoring.cache import reward_cache
from service.serving import ConnectionLimits, DrainingServer, bounded_protocol
from service.settings import Settings

# Connections waiting to be accepted per listener: a burst of clients is queued, not refused.
_BACKLOG = 2048
_PARENT_POLL_S = 1.0


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    # Logging is ours (log_config=None); the access log is replaced by rmserve.requests' lines.
    # Connections are bounded in time and number by our h11 protocol (service/serving.py), not
    # uvicorn's limit_concurrency, which counts slow connections too and so would answer good
    # clients 503 during a slowloris; no WebSocket upgrade, so every connection stays ours.
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s, max_connections=settings.max_connections,
    )
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
        access_log=False, timeout_graceful_shutdown=settings.shutdown_grace_s,
        http=bounded_protocol(limits), ws="none",
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout_s),
    )


def serve_in_process(settings: Settings, sources: list[ModelSource]) -> None:
    """One process: HTTP, gRPC, tokenising and the models."""
    app = create_app(settings, sources)
    DrainingServer(uvicorn_config(app, settings), app.state.begin_shutdown).run()


def serve_front_end(
    settings: Settings, sources: list[ModelSource], engines: Sequence[tuple[str, str]], role: str,
    loaded: Any,
) -> None:
    """An API process of several: HTTP and gRPC on the shared ports, the models in the engines."""
    # Ctrl-C in a terminal reaches every process of the group: the supervisor turns it into one
    # SIGTERM each, in order (a second signal here would skip the drain).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(signal.SIGTERM)
    configure_logging(settings.log_level, settings.log_format, role)
    app = create_app(settings, sources, engines, PeersLoaded(loaded, settings.api_workers))
    listener = _shared_listener(settings.host, settings.port)
    server = DrainingServer(uvicorn_config(app, settings), app.state.begin_shutdown, (signal.SIGTERM,))
    server.run(sockets=[listener])


def serve_engine(settings: Settings, sources: list[ModelSource], endpoint: str, role: str) -> None:
    """An engine process: the models on settings.device, for the front ends at `endpoint`."""
    # Stopped by the supervisor (SIGUSR1), after the front ends: a signal to the whole group
    # (Ctrl-C, `timeout`) must not stop it while they drain.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _exit_with_parent(signal.SIGUSR1)
    configure_logging(settings.log_level, settings.log_format, role)
    fix_mmap_threshold(settings.malloc_mmap_threshold_kib * 1024)
    from transformers.utils import logging as hf_logging

    from service.engine.engine import run_engine

    hf_logging.disable_progress_bar()
    asyncio.run(run_engine(settings, sources, endpoint, reward_cache(settings.result_cache_mb)))


def _exit_with_parent(drain: signal.Signals) -> None:
    """Drain and exit if the supervisor dies (e.g. kill -9): never an orphan holding the port."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os.kill(os.getpid(), drain)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _shared_listener(host: str, port: int) -> socket.socket:
    """The HTTP port, bound with SO_REUSEPORT: the kernel spreads connections over the API processes."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.create_server((host, port), family=family, backlog=_BACKLOG, reuse_port=True)
    listener.set_inheritable(False)
    os.set_blocking(listener.fileno(), False)
    return listener

"""Start the real `rmserve serve` in a subprocess on a free loopback port.

The starting, probing and stopping are benchmarks/harness.py's, which the load benchmarks use too;
this module adds what the tests want on top: no hub access, quiet logs unless a log file is asked
for, and gRPC off unless a port is given.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import LOOPBACK, free_port, free_ports, metric, serve_command, started_server

# Re-exported: the tests import them from here.
__all__ = ["STARTUP_TIMEOUT_S", "free_port", "free_ports", "metric", "running_server", "serve_command",
           "server_process"]

STARTUP_TIMEOUT_S = 120


@contextlib.contextmanager
def running_server(args: list[str], *, store: Path, **options: Any) -> Iterator[str]:
    """Yield the base URL of a server started with `rmserve serve ARGS`; stop it afterwards."""
    with server_process(args, store=store, **options) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(
    args: list[str],
    *,
    store: Path,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
    grpc_port: int = 0,
    probe_headers: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Yield the base URL and the process of `rmserve serve ARGS`; stop it afterwards.
    Its output goes to `log_file` at info level if given (else to a pipe, warnings only). gRPC
    is off unless a `grpc_port` is given."""
    port = next(p for p in free_ports(2) if p != grpc_port)
    command = serve_command(*args, port=port, grpc_port=grpc_port, store=store,
                            log_level="info" if log_file else "warning")
    url = f"http://{LOOPBACK}:{port}"
    with started_server(
        command, url + ("/readyz" if wait_ready else "/healthz"), startup_timeout_s=STARTUP_TIMEOUT_S,
        log_file=log_file, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        probe_headers=probe_headers,
    ) as process:
        yield url, process

"""Start the real `rmserve serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


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
    level = "info" if log_file else "warning"
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--grpc-port", str(grpc_port), "--store", str(store),
               "--log-level", level, *args]
    with log_file.open("w") if log_file else contextlib.nullcontext(subprocess.PIPE) as output:
        process = subprocess.Popen(
            command, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=output, stderr=subprocess.STDOUT, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(process, url + ("/readyz" if wait_ready else "/healthz"), probe_headers or {})
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples on the server's /metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _wait(process: subprocess.Popen[str], probe: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else "(see its log file)"
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(probe, headers=headers, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"server did not answer {probe} within {STARTUP_TIMEOUT_S}s")

"""Servers on loopback for the benchmarks and the integration tests: start, wait ready, read, stop.

One module for both, so a benchmark's server is started, probed and stopped exactly as the tests'
servers are. It needs only the standard library, httpx and prometheus-client (which the test and
server installs both have): no pytest, no aiohttp, nothing else from benchmarks/. The benchmarks
import it as `harness` (their folder is on sys.path when run as scripts), the tests as
`benchmarks.harness`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

LOOPBACK = "127.0.0.1"
PROBE_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 2.0  # one probe; a server still loading answers /healthz at once
STOP_GRACE_S = 30.0  # SIGTERM drains in-flight work first; a server still up after this is killed
LOG_TAIL_CHARS = 3000


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def serve_command(
    *args: str, port: int, store: Path, grpc_port: int = 0, log_level: str | None = None
) -> list[str]:
    """`rmserve serve` on loopback, run by this interpreter; `args` last, so they can override."""
    level = ["--log-level", log_level] if log_level else []
    return [sys.executable, "-m", "service.cli", "serve", "--host", LOOPBACK, "--port", str(port),
            "--grpc-port", str(grpc_port), "--store", str(store), *level, *args]


@contextlib.contextmanager
def started_server(
    command: list[str],
    probe_url: str,
    *,
    startup_timeout_s: float,
    log_file: Path | None = None,
    env: dict[str, str] | None = None,
    probe_headers: dict[str, str] | None = None,
    new_session: bool = False,
) -> Iterator[subprocess.Popen[str]]:
    """Run `command`, wait until `probe_url` answers 200, yield the process; always stop it.

    Output goes to `log_file` if given, else to a pipe (keep such a server quiet: nobody reads the
    pipe until it fails). `new_session` keeps a terminal's Ctrl-C from reaching the server
    directly, so the caller's own cleanup stops it, in order.
    """
    with log_file.open("w") if log_file else contextlib.nullcontext(subprocess.PIPE) as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=new_session)
    try:
        wait_ready(process, probe_url, startup_timeout_s, probe_headers or {}, log_file)
        yield process
    finally:
        stop(process)


def wait_ready(
    process: subprocess.Popen[str], probe_url: str, timeout_s: float, headers: dict[str, str],
    log_file: Path | None,
) -> None:
    """Poll until `probe_url` answers 200; raise at once if the server exits, kill it at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{output_tail(process, log_file)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(probe_url, headers=headers, timeout=PROBE_TIMEOUT_S).status_code == 200:
                return
        time.sleep(PROBE_INTERVAL_S)
    process.kill()
    raise TimeoutError(f"server did not answer {probe_url} within {timeout_s:.0f} s; "
                       f"log: {log_file or 'its output pipe'}")


def output_tail(process: subprocess.Popen[str], log_file: Path | None) -> str:
    """What an exited server wrote: its pipe, or the end of its log file."""
    if process.stdout:
        return process.stdout.read()
    return log_file.read_text()[-LOG_TAIL_CHARS:] if log_file else "(no output kept)"


def stop(process: subprocess.Popen[str], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM (a no-op if it already exited), then SIGKILL if it outlives `grace_s`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, log: Path, timeout_s: float = 300, env: dict[str, str] | None = None
) -> Iterator[int]:
    """A benchmark's server: start `command`, wait for GET /readyz on `port`, yield its pid.

    The output goes to `log`, the environment is `env` (else inherited), and the startup wait is
    long, since a large model on a GPU may take minutes to load and warm up.
    """
    with started_server(command, f"http://{LOOPBACK}:{port}/readyz", startup_timeout_s=timeout_s,
                        log_file=log, env=env, new_session=True) as process:
        yield process.pid


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples on the server's /metrics whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def metric_sums(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Every sample name on the server's /metrics, with its values summed over their label sets."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=timeout_s).text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums

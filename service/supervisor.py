"""A server of several processes: an engine per device and N API front ends, started, watched
and stopped together (`rmserve serve --api-workers N`, or several --device).

SIGTERM (or Ctrl-C) drains in order: the front ends first (admitted requests complete, which
needs the engines), then the engines; exit 0. If any process dies, the server exits non-zero:
the front ends have already answered what waited on a lost engine with 503 and readiness is
false; a restart of the whole pod reloads the model cleanly and shows in its restart count,
where an engine restarted behind live front ends would hide a crash loop.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

from service.loading import ModelSource
from service.processes import serve_engine, serve_front_end
from service.settings import Settings

logger = logging.getLogger("rmserve.supervisor")

# After the front ends' own grace period (shutdown_grace_s), how long the supervisor waits for
# a process to exit before killing it.
_EXIT_MARGIN_S = 15.0
_POLL_S = 0.2
# What asks a process to drain and exit: SIGTERM for a front end; SIGUSR1 for an engine, which
# ignores SIGTERM and SIGINT since a signal to the whole group (Ctrl-C, `timeout`) reaches it
# too, and it must outlive the front ends' drain.
FRONT_END_DRAIN = signal.SIGTERM
ENGINE_DRAIN = signal.SIGUSR1


def engine_settings(settings: Settings, device: str) -> Settings:
    """One engine's settings: its device, and its share of the cores when several engines are on CPU."""
    cpu_engines = sum(not d.startswith("cuda") for d in settings.devices)
    if settings.threads or cpu_engines < 2:
        return settings.model_copy(update={"device": device})
    share = max(1, (os.cpu_count() or 1) // cpu_engines)
    return settings.model_copy(update={"device": device, "threads": share})


def serve_processes(settings: Settings, sources: list[ModelSource]) -> int:
    """Run the engines and the front ends until SIGTERM or a death; the exit code."""
    if settings.port == 0:  # any free port, then the same one for every API process
        settings = settings.model_copy(update={"port": _free_port(settings.host)})
    with tempfile.TemporaryDirectory(prefix="rmserve-") as workdir:
        metrics_dir = Path(workdir, "metrics")
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by every child's metrics
        spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no torch state forked
        devices = settings.devices
        endpoints = [(f"ipc://{workdir}/engine-{i}", f"engine-{i} ({device})")
                     for i, device in enumerate(devices)]
        engines = [
            spawn.Process(target=serve_engine, name=f"engine-{i}",
                          args=(engine_settings(settings, device), sources, endpoint, f"engine-{i}"))
            for i, ((endpoint, _), device) in enumerate(zip(endpoints, devices, strict=True))
        ]
        loaded = spawn.Value("i", 0)  # API processes that have loaded: all are ready together
        front_ends = [
            spawn.Process(target=serve_front_end, name=f"api-{i}",
                          args=(settings, sources, endpoints, f"api-{i}", loaded))
            for i in range(settings.api_workers)
        ]
        group = _Group(engines, front_ends, settings.shutdown_grace_s + _EXIT_MARGIN_S)
        return group.run()


def _free_port(host: str) -> int:
    with socket.create_server((host, 0)) as probe:
        return probe.getsockname()[1]


@contextlib.contextmanager
def _blocked(*signals: signal.Signals) -> Iterator[None]:
    """Signals held pending in this process meanwhile, and in the children started meanwhile (a
    child inherits the mask) until each installs its handler: a stop asked while a child is still
    importing is then a drain and exit 0, not a death by the signal's default action."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class _Group:
    engines: list[BaseProcess]
    front_ends: list[BaseProcess]
    exit_wait_s: float
    _signalled: list[int] = field(default_factory=list)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with _blocked(FRONT_END_DRAIN, ENGINE_DRAIN):
                for process in [*self.engines, *self.front_ends]:
                    process.start()
                    logger.info("%s started", process.name,
                                extra={"child": process.name, "child_pid": process.pid})
            logger.info("serving with %d API processes and %d engines", len(self.front_ends),
                        len(self.engines))
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signalled.append(sig)

    def _watch(self) -> int:
        processes = [*self.engines, *self.front_ends]
        while not self._signalled:
            wait([p.sentinel for p in processes], timeout=_POLL_S)
            if dead := [p for p in processes if p.exitcode is not None]:
                for process in dead:
                    logger.error("%s exited (code %s): stopping the server, exit code 1",
                                 process.name, process.exitcode)
                self._stop()
                return 1
        logger.info("signal %d: draining the API processes, then the engines", self._signalled[0])
        return 0 if self._stop() else 1

    def _stop(self) -> bool:
        """Front ends first, then engines; True if every process exited cleanly."""
        clean = [self._end(self.front_ends, FRONT_END_DRAIN), self._end(self.engines, ENGINE_DRAIN)]
        return all(clean)

    def _end(self, processes: list[BaseProcess], drain: signal.Signals) -> bool:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, drain)
        clean = True
        for process in processes:
            process.join(self.exit_wait_s)
            if process.is_alive():
                logger.error("%s still running %.0f s after %s: killed", process.name, self.exit_wait_s,
                             drain.name)
                process.kill()
                process.join()
            elif process.exitcode != 0:
                logger.error("%s exited (code %s) while draining", process.name, process.exitcode)
            clean = clean and process.exitcode == 0
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)
        return clean

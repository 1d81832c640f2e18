"""Images and containers with buildah (chroot isolation): inspect, derive, run the image's own
ENTRYPOINT and CMD on loopback, find its processes, run its HEALTHCHECK, read its /models."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server import free_ports

READY_TIMEOUT_S = 180


def buildah(*args: str, timeout_s: float = 120) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@dataclass(frozen=True)
class Image:
    """A built image and the configuration it declares (docker format: with the HEALTHCHECK)."""

    tag: str
    config: dict[str, Any]

    @classmethod
    def inspect(cls, tag: str) -> Image:
        return cls(tag, json.loads(buildah("inspect", "--type", "image", tag))["Docker"]["config"])

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    @contextlib.contextmanager
    def container(self) -> Iterator[str]:
        name = buildah("from", "--quiet", "--pull=never", self.tag)
        try:
            yield name
        finally:
            buildah("rm", name)


def cannot_build_reason() -> str | None:
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (bash .ci/setup installs it)"
    if os.geteuid() != 0:
        return "buildah's chroot isolation needs root on these machines"
    return None


@dataclass
class Server:
    """A running container: its HTTP URL and gRPC target on loopback, buildah's process, its log."""

    url: str
    grpc_target: str
    process: subprocess.Popen[str]
    log: Path
    started_s: float

    def entrypoint_pid(self, command: list[str]) -> int:
        """The process of the image's entrypoint, the container's PID 1 under Docker (buildah run's
        descendant with that command line)."""
        for pid in descendants(self.process.pid):
            argv = cmdline(pid)
            if argv[1:] == command[1:] and Path(argv[0]).name == Path(command[0]).name:
                return pid
        raise AssertionError(f"no process runs {command}")

    def server_pid(self) -> int | None:
        """The Python process of `rmserve serve`, once it runs."""
        for pid in descendants(self.process.pid):
            argv = cmdline(pid)
            if argv and Path(argv[0]).name.startswith("python") and "serve" in argv:
                return pid
        return None


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return [p for child in children for p in (child, *descendants(child))]


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    return []


def uids(pid: int) -> set[int]:
    (line,) = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:")]
    return {int(uid) for uid in line.split()[1:]}


def read_only_mounts(container: str) -> list[str]:
    """A read-only root filesystem as far as the image's user can tell: what it could write is
    bound read-only, and /tmp is an empty tmpfs (the chart's emptyDir)."""
    root = Path(buildah("mount", container))
    flags = ["--mount", "type=tmpfs,destination=/tmp"]
    for folder in ("/models", "/home/rmserve", "/var/tmp"):
        flags += ["--mount", f"type=bind,source={root}{folder},destination={folder},ro"]
    return flags


@contextlib.contextmanager
def serving(image: Image, env: dict[str, str], *, user: str | None = None, wait: bool = True,
            log: Path) -> Iterator[Server]:
    """The image's own ENTRYPOINT and CMD in a new container, with `env` added to the image's."""
    port, grpc_port = int(env.get("RMSERVE_PORT", 0)), int(env.get("RMSERVE_GRPC_PORT", 0))
    if not port:
        port, grpc_port = free_ports(2)
    env = {"RMSERVE_HOST": "127.0.0.1", **env, "RMSERVE_PORT": str(port), "RMSERVE_GRPC_PORT": str(grpc_port),
           # Without a pid namespace tini is not PID 1; as a subreaper it still reaps, and says nothing.
           "TINI_SUBREAPER": "1"}
    with image.container() as container:
        command = ["buildah", "run", "--isolation", "chroot", "--user", user or image.config["User"],
                   *read_only_mounts(container), *(f"--env={k}={v}" for k, v in env.items()),
                   container, "--", *image.command]
        with log.open("w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        server = Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", process, log, time.monotonic())
        try:
            if wait:
                wait_ready(server)
            yield server
        finally:
            stop(server)
            buildah("umount", container)


def wait_ready(server: Server) -> None:
    deadline = server.started_s + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the container exited with {server.process.returncode} before /readyz "
                                 f"answered:\n{server.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"/readyz did not answer 200 within {READY_TIMEOUT_S}s:\n"
                         f"{server.log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    """Kill what is left of the container (after a test's own SIGTERM, nothing)."""
    if server.process.poll() is None:
        for pid in reversed(descendants(server.process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.process.kill()
    server.process.wait(timeout=30)


def healthcheck(image: Image, server: Server) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run in a container of that image beside the server."""
    check = image.config.get("Healthcheck") or {}
    test = check.get("Test") or ["NONE"]
    assert test[0] == "CMD", f"HEALTHCHECK {test}: exec form expected"
    port = server.url.rsplit(":", 1)[1]
    with image.container() as container:
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--user", image.config["User"],
             f"--env=RMSERVE_PORT={port}", container, "--", *test[1:]],
            capture_output=True, text=True, timeout=check["Timeout"] / 1e9 + 30,
        )


def baked_models(image: Image) -> dict[str, dict[str, Any]]:
    """name:version -> manifest of every model in the image's /models."""
    with image.container() as container:
        root = Path(buildah("mount", container))
        try:
            return {f"{m['name']}:{m['version']}": m
                    for m in (json.loads(p.read_text()) for p in (root / "models").glob("*/*/manifest.json"))}
        finally:
            buildah("umount", container)

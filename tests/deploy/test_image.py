"""The CPU image, built with buildah (.ci/build-image) and run for real: its own ENTRYPOINT and CMD as
the user it declares, on loopback; /readyz, /v1/score and gRPC; its HEALTHCHECK run inside it; uid
10001; the demo model baked into /models is the one served; a drained exit 0 on SIGTERM. Then the Helm
chart's probes, ports, user and environment against the running image. Broken variants, derived from
the image with `buildah config` and `buildah run`, show that each check fails when it should.

buildah's chroot isolation shares this machine's network and process ids: the server binds 127.0.0.1
(RMSERVE_HOST), and SIGTERM goes to the entrypoint's process, as `docker stop` sends it to PID 1.
A first build takes about 7 to 8 minutes on an idle 2-core machine (debootstrap, the wheelhouse, the
demo model's training); a rebuild with nothing changed, under a minute (README, "The image in CI")."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.deploy.containers import (
    READY_TIMEOUT_S,
    Image,
    Server,
    baked_models,
    buildah,
    cannot_build_reason,
    healthcheck,
    serving,
    uids,
)
from tests.deploy.test_helm_chart import RELEASE, only, render, server_env
from tests.integration.server import free_ports, metric

ROOT = Path(__file__).parents[2]
BUILD_TIMEOUT_S = 25 * 60
DEMO_MODEL = "demo-minilm-rm"
PAIRS = [{"prompt": "How do I boil an egg?", "response": "Simmer it for nine minutes, then cool it."},
         {"prompt": "How do I boil an egg?", "response": "Eggs are birds."}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def image() -> Image:
    if reason := cannot_build_reason():
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    build = subprocess.Popen(["bash", ".ci/build-image", "cpu"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = build.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)  # buildah and the build's steps too, not only the script
        out, err = build.communicate()
        pytest.fail(f"the image build took over {BUILD_TIMEOUT_S}s:\n{err[-6000:]}")
    assert build.returncode == 0, f"the image build failed:\n{err[-6000:]}"
    return Image.inspect(out.split()[-1])  # its id: the tag may be retagged meanwhile


@pytest.fixture(scope="session")
def variant(image: Image) -> Iterator[Any]:
    """`variant(name, run=shell command as root, config=buildah config flags)`: a broken copy."""
    made: list[str] = []

    def derive(name: str, *, run: str | None = None, config: tuple[str, ...] = ()) -> Image:
        with image.container() as container:
            if run:
                buildah("run", "--isolation", "chroot", "--user", "0:0", container, "--", "sh", "-c", run)
            if config:
                buildah("config", *config, container)
            tag = f"localhost/rmserve-broken:{name}-{os.getpid()}"
            buildah("commit", "--quiet", "--format", "docker", container, tag, timeout_s=300)
        made.append(tag)
        return Image.inspect(tag)

    yield derive
    for tag in made:
        buildah("rmi", tag)


def assert_healthcheck_passes(image: Image, server: Server) -> None:
    result = healthcheck(image, server)
    assert result.returncode == 0, f"HEALTHCHECK failed ({result.returncode}): {result.stderr[-2000:]}"
    startup_s = time.monotonic() - server.started_s
    assert image.config["Healthcheck"]["StartPeriod"] / 1e9 > startup_s, "start period shorter than startup"


def assert_non_root(image: Image, server: Server) -> None:
    assert image.config["User"] == "10001:10001", f"the image runs as {image.config['User']!r}"
    server_pid = server.server_pid()
    assert server_pid is not None, "the server is not running"
    assert uids(server_pid) == {10001}, f"the server runs as uid {uids(server_pid)}"


def assert_demo_model_baked(image: Image) -> dict[str, Any]:
    models = baked_models(image)
    demo = [m for ref, m in models.items() if ref.startswith(DEMO_MODEL + ":")]
    assert len(demo) == 1, f"the image's /models holds {sorted(models)}, not the demo model"
    assert image.config["Env"] and "RMSERVE_STORE=/models" in image.config["Env"]
    return demo[0]


def drained_exit(image: Image, server: Server, in_flight: int = 6) -> tuple[int, float]:
    """SIGTERM to the entrypoint while `in_flight` requests wait in the queue (a long batching
    window, RMSERVE_MAX_WAIT_MS): each must still be answered 200. Returns (exit code, seconds)."""
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        admitted = [pool.submit(httpx.post, server.url + "/v1/score",
                                json={"inputs": [{"text": f"in flight {i}"}]}, timeout=60)
                    for i in range(in_flight)]
        deadline = time.monotonic() + 10
        while metric(server.url, "rmserve_queue_depth") < in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(server.url, "rmserve_queue_depth") == in_flight, "the requests were not queued"
        signalled = time.monotonic()
        os.kill(server.entrypoint_pid(image.command), signal.SIGTERM)
        codes = [future.result().status_code for future in admitted]
    code = server.process.wait(timeout=60)
    assert codes == [200] * in_flight, f"admitted requests got {codes}"
    return code, time.monotonic() - signalled


def test_the_image_serves_as_declared(image: Image, tmp_path: Path) -> None:
    assert image.command == ["tini", "--", "rmserve", "serve"]
    demo = assert_demo_model_baked(image)
    with serving(image, {"RMSERVE_MAX_WAIT_MS": "1500"}, log=tmp_path / "server.log") as server:
        assert_non_root(image, server)
        assert_healthcheck_passes(image, server)
        models = httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
        assert [(m["name"], m["version"]) for m in models] == [(DEMO_MODEL, demo["version"])]
        over_http = httpx.post(server.url + "/v1/score", json={"inputs": PAIRS}, timeout=30).json()
        assert over_http["model"] == DEMO_MODEL and over_http["rewards"][0] > over_http["rewards"][1]
        with grpc.insecure_channel(server.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            over_grpc = rmserve_pb2_grpc.RewardServiceStub(channel).Score(pb.ScoreRequest(inputs=[
                pb.Item(pair=pb.PromptResponse(**pair)) for pair in PAIRS]), timeout=30)
        assert list(over_grpc.rewards) == pytest.approx(over_http["rewards"], abs=1e-5)
        code, seconds = drained_exit(image, server)
    assert code == 0, f"exit code {code} after SIGTERM:\n{server.log.read_text()[-3000:]}"
    assert seconds < 30


def test_the_charts_probes_ports_user_and_environment_fit_the_running_image(
    image: Image, tmp_path: Path
) -> None:
    """The chart rendered (on free ports; a batching window that keeps a request queued while SIGTERM
    comes), its server container's environment given to the image as is, except RMSERVE_HOST: 0.0.0.0
    in a pod, loopback here where the network is the machine's."""
    http_port, grpc_port = free_ports(2)
    manifests = render({"ports": {"http": http_port, "grpc": grpc_port},
                        "config": {"RMSERVE_MAX_WAIT_MS": 1500}})
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = server_env(manifests)
    assert env.pop("RMSERVE_HOST") == "0.0.0.0"
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert user == image.config["User"]
    assert container["securityContext"]["readOnlyRootFilesystem"]  # read_only_mounts() stands in
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    exposed = {int(p.split("/")[0]) for p in image.config["ExposedPorts"]}
    assert len(exposed) == len(ports) == 2

    with serving(image, env, user=user, wait=False, log=tmp_path / "server.log") as server:
        startup = container["startupProbe"]
        budget_s = startup["periodSeconds"] * startup["failureThreshold"]
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
        deadline = time.monotonic() + min(budget_s, READY_TIMEOUT_S)
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                answers = {kind: httpx.get(f"http://127.0.0.1:{ports[p['port']]}{p['path']}",
                                           timeout=container[f"{kind}Probe"]["timeoutSeconds"]).status_code
                           for kind, p in probes.items()}
                if set(answers.values()) == {200}:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"the chart's probes never all passed:\n{server.log.read_text()[-3000:]}")
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        service = only(manifests, "Service", f"{RELEASE}-rmserve")
        (metrics,) = [p["targetPort"] for p in service["spec"]["ports"] if p["name"] == "metrics"]
        metrics_port = ports[metrics]
        assert "rmserve_" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert httpx.post(f"http://127.0.0.1:{ports['http']}/v1/score", json={"inputs": PAIRS},
                          timeout=30).status_code == 200
        code, seconds = drained_exit(image, server, in_flight=1)
    assert code == 0
    pre_stop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pre_stop_s + seconds < pod["terminationGracePeriodSeconds"]
    if env.get("RMSERVE_LOG_FORMAT") == "json":  # no progress bar or stray print among the log lines
        lines = [line for line in server.log.read_text().splitlines() if line.strip()]
        assert lines and all(line.startswith("{") for line in lines), lines[:5]


# The same checks, shown to fail on broken variants of the image.


def test_a_wrong_entrypoint_is_caught(image: Image, variant: Any, tmp_path: Path) -> None:
    broken = variant("entrypoint", config=("--entrypoint", '["tini", "--", "rmserve"]'))
    with pytest.raises(AssertionError, match="exited with"), serving(broken, {}, log=tmp_path / "log"):
        pass


def test_a_missing_model_is_caught(image: Image, variant: Any) -> None:
    broken = variant("no-model", run=f"rm -rf /models/{DEMO_MODEL}")
    with pytest.raises(AssertionError, match="not the demo model"):
        assert_demo_model_baked(broken)


def test_a_healthcheck_that_cannot_pass_is_caught(image: Image, variant: Any, tmp_path: Path) -> None:
    # The slim images have no curl.
    broken = variant("healthcheck", config=(
        "--healthcheck", "CMD curl -fsS http://127.0.0.1:8000/healthz", "--healthcheck-timeout", "5s",
        "--healthcheck-start-period", "300s"))
    with serving(image, {}, log=tmp_path / "log") as server:
        assert_healthcheck_passes(image, server)
        with pytest.raises(AssertionError, match="HEALTHCHECK failed"):
            assert_healthcheck_passes(broken, server)


def test_a_root_user_is_caught(image: Image, variant: Any, tmp_path: Path) -> None:
    broken = variant("root", config=("--user", "0:0"))
    with serving(broken, {}, wait=False, log=tmp_path / "log") as server:
        deadline = time.monotonic() + 30
        while server.server_pid() is None:
            assert time.monotonic() < deadline and server.process.poll() is None
            time.sleep(0.1)
        with pytest.raises(AssertionError, match="runs as"):
            assert_non_root(broken, server)
        with pytest.raises(AssertionError, match="uid"):
            assert_non_root(image, server)  # the declared user right, the process's wrong

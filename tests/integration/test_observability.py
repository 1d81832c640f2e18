"""Metrics, the Grafana dashboard, request ids and JSON logs, against the running server, and a real
Prometheus scraping it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.reference import mixed_items
from tests.integration.server import free_port, running_server

DASHBOARD = Path(__file__).parents[2] / "helm" / "rmserve" / "dashboards" / "rmserve.json"
MODELS = {"bert": "bert-right", "gpt2": "gpt2-left"}
# Grafana's variables, as Prometheus must see them: every model, and a window that holds
# several 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$model": ".*"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query in the dashboard, variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def dashboard_metric_names() -> set[str]:
    """Every metric name the dashboard's queries and variables mention."""
    return set(re.findall(r"\b(?:rmserve|process)_[a-z_]+\b", DASHBOARD.read_text()))


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def send_traffic(url: str, *, requests: int, concurrency: int = 8) -> Counter[str]:
    """A bounded mix of scoring, ranking and bad requests; returns how many of each got answered."""
    items = mixed_items(seed=21, count=12)
    bodies: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(requests):
        model = list(MODELS)[i % 2]
        kind = ("score", "score", "rank", "invalid", "unknown_model")[i % 5]
        body: dict[str, Any] = {
            "score": {"model": model, "inputs": items[i % 10 : i % 10 + 3]},
            "rank": {"model": model, "prompt": "Which is better?", "responses": ["yes", "no", "maybe"]},
            "invalid": {"model": model, "inputs": []},
            "unknown_model": {"model": "no-such-model", "inputs": items[:1]},
        }[kind]
        bodies.append((f"{kind}:{model}", "/v1/rank" if kind == "rank" else "/v1/score", body))
    answered: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(label: str, path: str, body: dict[str, Any]) -> None:
            async with gate:
                response = await client.post(path, json=body)
            answered[f"{label}:{response.status_code}"] += 1

        await asyncio.gather(*(one(*b) for b in bodies))
    return answered


class Served(NamedTuple):
    url: str
    log_file: Path
    grpc: str  # host:port


def send_grpc_traffic(target: str) -> None:
    """A few gRPC calls, one of them refused, so the dashboard sees both transports."""
    with grpc.insecure_channel(target) as channel:
        stub = rmserve_pb2_grpc.RewardServiceStub(channel)
        for i in range(5):
            stub.Score(pb.ScoreRequest(model="bert", inputs=[pb.Item(text=f"item {i}")]), timeout=30)
        with contextlib.suppress(grpc.RpcError):
            stub.Score(pb.ScoreRequest(model="bert"), timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two models, a small body limit, gRPC, logging at info to a file."""
    root = tmp_path_factory.mktemp("observability")
    args = [arg for name, tiny in MODELS.items() for arg in ("--model", f"{name}={tiny_model_dirs[tiny]}")]
    log_file = root / "server.log"
    args += ["--max-body-bytes", "4096"]
    grpc_port = free_port()
    with running_server(args, store=root / "store", log_file=log_file, grpc_port=grpc_port) as url:
        yield Served(url, log_file, f"127.0.0.1:{grpc_port}")


def test_counters_add_up_per_model_endpoint_and_code(server: Served) -> None:
    url = server.url
    before = scrape(url)
    answered = asyncio.run(send_traffic(url, requests=40))
    too_large = httpx.post(f"{url}/v1/score", content=b"{" + b" " * 5000 + b"}",
                           headers={"content-type": "application/json"})
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert too_large.status_code == 413
    assert answered == {"score:bert:200": 8, "score:gpt2:200": 8, "rank:bert:200": 4, "rank:gpt2:200": 4,
                        "invalid:bert:422": 4, "invalid:gpt2:422": 4,
                        "unknown_model:bert:404": 4, "unknown_model:gpt2:404": 4}
    for model in MODELS:
        ok = {"model": model, "version": "local", "code": "200"}
        assert delta("rmserve_requests_total", endpoint="/v1/score", **ok) == 8
        assert delta("rmserve_requests_total", endpoint="/v1/rank", **ok) == 4
        # 8 score requests of 3 items and 4 rank requests of 3 candidates.
        assert delta("rmserve_items_total", model=model) == 36
        assert delta("rmserve_tokens_total", model=model) > 36
        assert delta("rmserve_batch_size_sum", model=model) == 36
        assert delta("rmserve_request_duration_seconds_count", model=model) == 12
        assert total(after, "rmserve_model_ready", model=model) == 1
        assert total(after, "rmserve_queue_depth", model=model) == 0
    # A request that reached no model is labelled model="none", whatever name it asked for.
    none = {"model": "none", "endpoint": "/v1/score"}
    assert delta("rmserve_errors_total", type="invalid_request", **none) == 8
    assert delta("rmserve_errors_total", type="unknown_model", **none) == 8
    assert delta("rmserve_errors_total", type="body_too_large", **none) == 1
    assert delta("rmserve_requests_total", code="413", **none) == 1
    assert not any(dict(labels).get("model") == "no-such-model" for _, labels in after)
    assert total(after, "rmserve_inflight_requests", endpoint="/v1/score") == 0
    assert total(after, "rmserve_device_memory_used_bytes", device="cpu") > 0
    info = {dict(ls)["model"]: dict(ls) for n, ls in after if n == "rmserve_model_info"}
    assert {m: (i["backend"], i["device"], i["dtype"]) for m, i in info.items()} == {
        "bert": ("torch", "cpu", "float32"), "gpt2": ("torch", "cpu", "float32")}


def test_request_id_is_kept_or_made_and_each_request_logs_one_json_line(server: Served) -> None:
    url, log_file = server.url, server.log_file
    body = {"model": "gpt2", "inputs": mixed_items(seed=2, count=5)}
    kept = httpx.post(f"{url}/v1/score", json=body, headers={"X-Request-ID": "trace-42"})
    made = httpx.post(f"{url}/v1/score", json={"inputs": []}, headers={"X-Request-ID": "not a token!"})
    assert kept.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])

    requests = logged_requests(log_file, until={"trace-42", made.headers["x-request-id"]})
    ok = requests["trace-42"]
    assert (ok["level"], ok["status"], ok["endpoint"], ok["model"], ok["version"], ok["items"]) == (
        "INFO", 200, "/v1/score", "gpt2", "local", 5)
    assert ok["tokens"] == kept.json()["usage"]["tokens"]
    assert ok["compute_ms"] > 0 and ok["queue_ms"] >= 0 and ok["duration_ms"] >= ok["compute_ms"]
    failed = requests[made.headers["x-request-id"]]
    assert (failed["status"], failed["error"], failed["model"]) == (422, "invalid_request", "none")
    # Probes and scrapes stay out of the info log.
    assert not any(line["endpoint"] in ("/readyz", "/metrics") for line in requests.values())


def logged_requests(log_file: Path, until: set[str]) -> dict[str, dict[str, Any]]:
    """The request log lines by request id, once those in `until` are written (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
        requests = {line["request_id"]: line for line in lines if line["logger"] == "rmserve.requests"}
        if until <= requests.keys() or time.monotonic() > deadline:
            return requests
        time.sleep(0.1)


def test_every_metric_the_dashboard_uses_is_exported(server: Served) -> None:
    url = server.url
    asyncio.run(send_traffic(url, requests=10))
    exported = {name for name, _ in scrape(url)}
    names = dashboard_metric_names()
    assert len(names) >= 12
    assert names <= exported, f"in the dashboard, not on /metrics: {sorted(names - exported)}"


def test_dashboard_covers_what_the_team_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, model) (rate(rmserve_request_duration" in exprs
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "model"}
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row")


@contextlib.contextmanager
def running_prometheus(target: str, folder: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: `bash .ci/setup` installs Debian's prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: rmserve\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/-/ready"):
            assert process.poll() is None, (folder / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]


def wait_for(prometheus: str, expr: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not query(prometheus, expr):
        assert time.monotonic() < deadline, f"prometheus never saw {expr}"
        time.sleep(0.5)


def test_real_prometheus_answers_every_dashboard_query(server: Served, tmp_path: Path) -> None:
    url = server.url
    with running_prometheus(url.removeprefix("http://"), tmp_path) as prometheus:
        wait_for(prometheus, 'up{job="rmserve"} == 1')
        for _ in range(3):  # load spread over a few scrapes, so rates have something to see
            asyncio.run(send_traffic(url, requests=40))
            send_grpc_traffic(server.grpc)
            time.sleep(1)
        scrape_started = time.time()
        wait_for(prometheus, f'timestamp(up{{job="rmserve"}}) > {scrape_started + 1}')
        empty, blank = [], []
        for title, expr in dashboard_queries():
            result = query(prometheus, expr)
            values = [float(series["value"][1]) for series in result]
            if not result:
                empty.append(f"{title}: {expr}")
            elif not any(math.isfinite(v) for v in values):
                blank.append(f"{title}: {expr} -> {values}")
    assert not empty, "no data for:\n" + "\n".join(empty)
    assert not blank, "only NaN/inf for:\n" + "\n".join(blank)

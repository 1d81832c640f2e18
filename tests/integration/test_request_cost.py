"""What a request costs is bounded by what is cheap to check (hardening: work amplification).

Each hostile request is refused with the right status and a message that says what to fix,
within a bounded time and resident-memory growth of the server process (read from /proc), while
a health probe in another process keeps getting answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.server import free_port, server_process
from tests.integration.test_reliability import HEALTH_TIMEOUT_S, HealthProbe

MAX_SECONDS = 5.0  # each refusal, on 2 shared cores; the findings took 3 to 315 s
MAX_GROWTH_MIB = 300  # peak resident memory added by one refused request (the findings: 0.6-17 GB)


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    grpc_port = free_port()
    bert = tiny_model_dirs["bert-right"]
    args = ["--model", f"a={bert}", "--model", f"b={bert}", "--max-queue-tokens", "20000"]
    with server_process(args, store=tmp_path_factory.mktemp("store"), grpc_port=grpc_port) as (url, process):
        probe = HealthProbe(url, tmp_path_factory.mktemp("probe"))
        probe.start()
        try:
            yield {"url": url, "pid": process.pid, "grpc": f"127.0.0.1:{grpc_port}", "probe": probe}
        finally:
            probe.stop()


def _post(server: dict, path: str, body: bytes) -> tuple[httpx.Response, float, float]:
    """The answer, its seconds, and the server's peak resident memory growth in MiB."""
    before = peak_rss_mib(server["pid"])
    started = time.monotonic()
    response = httpx.post(server["url"] + path, content=body, timeout=120,
                          headers={"content-type": "application/json"})
    return response, time.monotonic() - started, peak_rss_mib(server["pid"]) - before


def _items_of_ints(n: int) -> bytes:
    return b'{"inputs": [' + b",".join([b"1"] * n) + b"]}"


@pytest.mark.parametrize(("name", "body", "status", "kind", "message"), [
    ("4M items that are not objects", _items_of_ints(4_000_000), 413, "too_many_inputs",
     "4000000 inputs in one request; the limit is 65536: split the request"),
    ("100,000 valid items", json.dumps({"inputs": [{"text": "x"}] * 100_000}).encode(), 413,
     "too_many_inputs", "100000 inputs in one request; the limit is 65536"),
    ("an item with 500,000 unknown fields",
     json.dumps({"inputs": [{"text": "x", **{f"k{i}": 1 for i in range(500_000)}}]}).encode(), 422,
     "invalid_input", "inputs[0] has 500001 fields"),
    ("a body with 500,000 unknown fields",
     json.dumps({"inputs": [{"text": "x"}], **{f"k{i}": 1 for i in range(500_000)}}).encode(), 422,
     "invalid_input", "body has 500001 fields"),
    ("800 bad items after a good one", json.dumps({"inputs": [{"text": "x"}] + [5] * 800}).encode(), 422,
     "invalid_request", "body.inputs.1: an item is an object with prompt and response, messages, or text"),
])
def test_cheap_checks_refuse_before_the_expensive_work(server, name, body, status, kind, message) -> None:
    assert len(body) <= 8 * 2**20, name
    response, seconds, growth = _post(server, "/v1/score", body)
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["type"] == kind and message in error["message"], error
    assert len(error["message"]) < 500  # error reports are capped
    assert seconds < MAX_SECONDS, f"{name}: {seconds:.1f} s"
    assert growth < MAX_GROWTH_MIB, f"{name}: +{growth:.0f} MiB"


def test_a_request_over_the_queue_bound_is_admitted_in_parts_in_bounded_memory(server) -> None:
    # 1,024 texts of 8,000 characters: each is 96 tokens once cut, 98,304 in all, against a
    # 20,000-token queue. The request enters the queue in parts as room frees, and is answered.
    body = json.dumps({"inputs": [{"text": f"{i} " + "word " * 1600} for i in range(1024)]}).encode()
    response, _, growth = _post(server, "/v1/score", body)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["rewards"]) == 1024 and all(response.json()["truncated"])
    assert growth < MAX_GROWTH_MIB


def test_grpc_counts_before_converting_and_refuses_malformed_messages(server) -> None:
    options = [("grpc.max_send_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server["grpc"], options=options) as channel:
        stub = rmserve_pb2_grpc.RewardServiceStub(channel)
        many = pb.ScoreRequest(inputs=[pb.Item(text="x")] * 1_500_000)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            stub.Score(many, timeout=60)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
        assert "1500000 inputs in one request; the limit is 65536" in failure.value.details()
        assert time.monotonic() - started < MAX_SECONDS
        raw = channel.unary_unary("/rmserve.v1.RewardService/Score")
        with pytest.raises(grpc.RpcError) as failure:
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a field whose length runs past the end
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.code()
        assert "not a valid rmserve.v1.ScoreRequest message" in failure.value.details()
        fine = stub.Score(pb.ScoreRequest(model="a", inputs=[pb.Item(text="fine")]), timeout=30)
        assert len(fine.rewards) == 1


@pytest.mark.parametrize(("path", "message"), [
    ("/v1/score?normalise=true", "unknown query parameter 'normalise'"),
    ("/get_reward?normalize=1", "normalize"),  # true or false, as the schema says: not 1, yes or on
    ("/get_reward?clip=inf", "clip must be a positive, finite number"),
])
def test_query_parameters_are_checked_like_body_fields(server, path: str, message: str) -> None:
    body = json.dumps({"query": []} if path.startswith("/get_reward") else {"inputs": [{"text": "x"}]})
    response, _, _ = _post(server, path, body.encode())
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


def test_health_was_answered_throughout(server) -> None:
    """Runs last in this module: every probe while the requests above were refused answered 200
    within a Kubernetes probe's timeout."""
    answers = server["probe"].answers()
    assert len(answers) >= 20
    assert all(status == 200 and seconds < HEALTH_TIMEOUT_S for _, status, seconds in answers), [
        a for a in answers if a[1] != 200 or a[2] >= HEALTH_TIMEOUT_S][:5]

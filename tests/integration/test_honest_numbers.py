"""The numbers and lines a server reports say what happened: an aborted upload is the client's 499,
not the server's 500; the text log carries the JSON log's fields; a gRPC call refused for its key is
counted and logged like any answered call; every bad body is 422 invalid_request, as the README says.

Against the real `rmserve serve` on loopback."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.server import free_port, metric, running_server

KEY = "honest-numbers-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
SCORE = {"inputs": [{"prompt": "How do I boil an egg?", "response": "Simmer it for nine minutes."}]}
LOG_WAIT_S = 10.0


@dataclass(frozen=True)
class Served:
    url: str
    log_file: Path
    grpc_target: str


def _serve(tiny_model_dirs: dict[str, Path], root: Path, log_format: str) -> Iterator[Served]:
    grpc_port = free_port()
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", "--log-format", log_format]
    log_file = root / "server.log"
    with running_server(args, store=root / "store", log_file=log_file, grpc_port=grpc_port,
                        env={"RMSERVE_API_KEYS": KEY}) as url:
        yield Served(url, log_file, f"127.0.0.1:{grpc_port}")


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tiny_model_dirs, tmp_path_factory.mktemp("json"), "json")


@pytest.fixture(scope="module")
def text_server(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    yield from _serve(tiny_model_dirs, tmp_path_factory.mktemp("text"), "text")


def json_line(log_file: Path, request_id: str) -> dict[str, Any]:
    """The rmserve.requests line of `request_id`, waiting for it up to LOG_WAIT_S."""
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        for line in log_file.read_text().splitlines():
            if line.startswith("{") and (record := json.loads(line)).get("request_id") == request_id:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no log line for {request_id}")


def text_line(log_file: Path, request_id: str) -> str:
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        for line in log_file.read_text().splitlines():
            if "rmserve.requests" in line and f"request_id={request_id} " in line + " ":
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line for {request_id}")


def abort_upload(url: str, head: bytes, request_id: str) -> None:
    """Send a head announcing 1000 bytes, then a part of them, then hang up."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + f"x-request-id: {request_id}\r\n".encode() + AUTH_LINE
                     + b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"inputs\": [")
        time.sleep(0.3)  # the server is reading the body when the client goes


AUTH_LINE = f"authorization: Bearer {KEY}\r\n".encode()


@pytest.mark.parametrize(("head", "endpoint"), [
    (b"POST /v1/score HTTP/1.1\r\nhost: x\r\n", "/v1/score"),
    (b"POST /v1/rank HTTP/1.1\r\nhost: x\r\n", "/v1/rank"),
    (b"POST /get_reward HTTP/1.1\r\nhost: x\r\n", "/get_reward"),
    (b"POST /v1/compare HTTP/1.1\r\nhost: x\r\n", "/v1/compare"),
    # A body on a GET is read (and bounded) too; this endpoint logs at debug, so only its count.
    (b"GET /v1/models HTTP/1.1\r\nhost: x\r\n", "/v1/models"),
])
def test_an_aborted_upload_is_counted_and_logged_as_499_not_500(
    server: Served, head: bytes, endpoint: str,
) -> None:
    before_500 = metric(server.url, "rmserve_requests_total", code="500")
    before = metric(server.url, "rmserve_requests_total", endpoint=endpoint, code="499")
    request_id = f"aborted-{endpoint.strip('/').replace('/', '-')}"
    abort_upload(server.url, head, request_id)

    deadline = time.monotonic() + LOG_WAIT_S
    while (metric(server.url, "rmserve_requests_total", endpoint=endpoint, code="499") == before
           and time.monotonic() < deadline):
        time.sleep(0.1)
    if endpoint != "/v1/models":
        line = json_line(server.log_file, request_id)
        assert (line["status"], line["error"], line["endpoint"]) == (499, "client_closed", endpoint)
    assert metric(server.url, "rmserve_requests_total", endpoint=endpoint, code="499") == before + 1
    assert metric(server.url, "rmserve_errors_total", endpoint=endpoint, type="client_closed") >= 1
    assert metric(server.url, "rmserve_requests_total", code="500") == before_500
    assert "Exception in ASGI application" not in server.log_file.read_text()


def test_the_text_log_line_carries_the_json_lines_fields(server: Served, text_server: Served) -> None:
    for served in (server, text_server):
        headers = {**AUTH, "x-request-id": "fields-1"}
        response = httpx.post(f"{served.url}/v1/score", json=SCORE, headers=headers)
        assert response.status_code == 200
    record = json_line(server.log_file, "fields-1")
    line = text_line(text_server.log_file, "fields-1")
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
    wanted = {k for k in record if k not in ("time", "level", "logger", "message")}
    assert wanted >= {"request_id", "endpoint", "status", "model", "version", "items", "tokens",
                      "queue_ms", "compute_ms", "duration_ms"}
    assert wanted <= fields.keys(), f"missing {wanted - fields.keys()} in {line!r}"
    assert (fields["status"], fields["endpoint"], fields["model"]) == ("200", "/v1/score", "bert")
    assert float(fields["duration_ms"]) > 0 and " INFO rmserve.requests request " in line


def test_a_text_log_value_with_spaces_is_quoted(text_server: Served) -> None:
    """An error line's fields: quoted where a value could be misread (none of these has spaces,
    but every value must parse back as one token)."""
    response = httpx.post(f"{text_server.url}/v1/score", content=b"[1]", headers={
        **AUTH, "x-request-id": "fields-2", "content-type": "application/json"})
    assert response.status_code == 422
    line = text_line(text_server.log_file, "fields-2")
    assert "status=422" in line and "error=invalid_request" in line


@pytest.mark.parametrize(("method", "endpoint"), [
    ("Score", "grpc:Score"), ("Rank", "grpc:Rank"), ("ListModels", "grpc:ListModels"),
])
def test_grpc_unauthenticated_calls_are_counted_and_logged(
    server: Served, method: str, endpoint: str,
) -> None:
    refusals = {"endpoint": endpoint, "code": "UNAUTHENTICATED"}
    before = metric(server.url, "rmserve_requests_total", **refusals)
    request_id = f"unauth-{method}"
    requests = {"Score": pb.ScoreRequest(), "Rank": pb.RankRequest(), "ListModels": pb.ListModelsRequest()}
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = getattr(rmserve_pb2_grpc.RewardServiceStub(channel), method)
        with pytest.raises(grpc.RpcError) as refused:
            call(requests[method], metadata=[("x-request-id", request_id)], timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    line = json_line(server.log_file, request_id)
    assert (line["status"], line["endpoint"], line["error"]) == ("UNAUTHENTICATED", endpoint, "unauthorized")
    assert metric(server.url, "rmserve_requests_total", **refusals) == before + 1
    assert metric(server.url, "rmserve_errors_total", endpoint=endpoint, type="unauthorized") >= 1


def test_grpc_unauthenticated_stream_is_counted_under_its_method(server: Served) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rmserve_pb2_grpc.RewardServiceStub(channel)
        replies = stub.ScoreStream(iter([pb.ScoreRequest()]), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            list(replies)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refusals = {"endpoint": "grpc:ScoreStream", "code": "UNAUTHENTICATED"}
    deadline = time.monotonic() + LOG_WAIT_S
    while metric(server.url, "rmserve_requests_total", **refusals) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server.url, "rmserve_requests_total", **refusals) == 1


# (what is wrong, body, content type, what the message says): one rule, 422 invalid_request.
BAD_BODIES = [
    ("not JSON", b"{inputs", "application/json", "not valid UTF-8 JSON"),
    ("not UTF-8 inside JSON", b'{"inputs": [{"text": "\xff\xfe"}]}', "application/json",
     "not valid UTF-8 JSON"),
    ("bytes that are no text", b"\xff\xfe not utf-8", "application/json", "not valid UTF-8 JSON"),
    ("an array", b"[1, 2]", "application/json", "must be a JSON object, not an array"),
    ("a string", b'"inputs"', "application/json", "must be a JSON object, not a string"),
    ("null", b"null", "application/json", "must be a JSON object, not null"),
    ("JSON as text/plain", json.dumps(SCORE).encode(), "text/plain", "content-type: application/json"),
    ("JSON as a form", json.dumps(SCORE).encode(), "application/x-www-form-urlencoded",
     "content-type: application/json"),
    ("no content type", json.dumps(SCORE).encode(), None, "content-type: application/json"),
    ("no body", b"", "application/json", "request body is missing"),
    ("wrong fields", b'{"input": []}', "application/json", "inputs"),
]


@pytest.mark.parametrize("path", ["/v1/score", "/v1/rank", "/v1/compare", "/get_reward"])
@pytest.mark.parametrize(("what", "body", "content_type", "says"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_every_bad_body_is_422_invalid_request(
    server: Served, path: str, what: str, body: bytes, content_type: str | None, says: str,
) -> None:
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers)
    assert response.status_code == 422, (what, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    if what != "wrong fields" or path == "/v1/score":
        assert says in error["message"], (what, error["message"])


def _exchange(url: str, raw: bytes) -> bytes:
    """Send `raw`, read until the server closes (bounded by the socket timeout)."""
    host, port = url.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_a_malformed_request_is_a_json_400_and_counted_as_400_not_499(server: Served) -> None:
    """A chunk that is no chunk, after the head was admitted: the connection layer answers, and
    the request is counted as what it was, not as a client that went away."""
    before = metric(server.url, "rmserve_requests_total", endpoint="/v1/score", code="400")
    head = (b"POST /v1/score HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n" + AUTH_LINE
            + b"content-type: application/json\r\nx-request-id: bad-chunk\r\n\r\n")
    answer = _exchange(server.url, head + b"zz\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    assert json.loads(body)["error"]["type"] == "bad_request"
    line = json_line(server.log_file, "bad-chunk")
    assert (line["status"], line["error"]) == (400, "bad_request")
    assert metric(server.url, "rmserve_requests_total", endpoint="/v1/score", code="400") == before + 1
    garbage = _exchange(server.url, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ") and b'"bad_request"' in garbage

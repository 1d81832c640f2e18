"""The real gRPC server beside HTTP: same results, health, reflection, status codes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import unittest.mock
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.reference import mixed_items
from tests.integration.server import free_port, metric, running_server

ROOT = Path(__file__).parents[2]
PROTO = "service/api/grpc/rmserve.proto"


def to_pb(item: dict) -> pb.Item:
    if "text" in item:
        return pb.Item(text=item["text"])
    if "messages" in item:
        return pb.Item(conversation=pb.Conversation(messages=[pb.Message(**m) for m in item["messages"]]))
    return pb.Item(pair=pb.PromptResponse(prompt=item["prompt"], response=item["response"]))


@pytest.fixture(scope="module")
def servers(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC target) of one server with an encoder and a decoder."""
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--model", f"gpt2={tiny_model_dirs['gpt2-left']}", "--max-inputs-per-request", "64"]
    port = free_port()
    with running_server(args, store=tmp_path_factory.mktemp("store"), grpc_port=port) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stub(servers: tuple[str, str]) -> Iterator[rmserve_pb2_grpc.RewardServiceStub]:
    with grpc.insecure_channel(servers[1]) as channel:
        yield rmserve_pb2_grpc.RewardServiceStub(channel)


@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_score_equals_http(
    model: str, servers: tuple[str, str], stub: rmserve_pb2_grpc.RewardServiceStub
) -> None:
    items = mixed_items(seed=31, count=24)
    body = {"model": model, "inputs": items}
    over_http = httpx.post(f"{servers[0]}/v1/score", json=body, timeout=60).json()
    over_grpc = stub.Score(pb.ScoreRequest(model=model, inputs=[to_pb(i) for i in items]), timeout=60)
    assert list(over_grpc.rewards) == over_http["rewards"]
    assert list(over_grpc.truncated) == over_http["truncated"]
    tokens = over_http["usage"]["tokens"]
    assert (over_grpc.model, over_grpc.version, over_grpc.tokens) == (model, "local", tokens)


def test_rank_equals_http(servers: tuple[str, str], stub: rmserve_pb2_grpc.RewardServiceStub) -> None:
    responses = ["Paris is the capital of France.", "no idea", "It is Paris, on the Seine.", "Lyon"]
    messages = [{"role": "user", "content": "Capital of France?"}]
    for context in ({"prompt": "Capital of France?"}, {"messages": messages}):
        over_http = httpx.post(f"{servers[0]}/v1/rank", json={"model": "gpt2", "responses": responses,
                                                                "top_k": 2, **context}).json()
        request = pb.RankRequest(model="gpt2", responses=responses, top_k=2,
                                 prompt=context.get("prompt"),
                                 messages=[pb.Message(**m) for m in context.get("messages", [])])
        over_grpc = stub.Rank(request, timeout=60)
        assert list(over_grpc.rewards) == over_http["rewards"]
        assert (list(over_grpc.ranking), over_grpc.best) == (over_http["ranking"], over_http["best"])


def test_score_stream_answers_each_chunk_in_order(servers: tuple[str, str],
                                                  stub: rmserve_pb2_grpc.RewardServiceStub) -> None:
    items = mixed_items(seed=32, count=150)
    chunks = [items[i : i + 40] for i in range(0, len(items), 40)]
    replies = list(stub.ScoreStream(iter(pb.ScoreRequest(model="bert", inputs=[to_pb(i) for i in c])
                                         for c in chunks), timeout=120))
    assert [len(r.rewards) for r in replies] == [len(c) for c in chunks]
    # Chunks share batches in the stream, so compare with the HTTP rewards to float32 rounding.
    over_http = [r for c in chunks for r in httpx.post(
        f"{servers[0]}/v1/score", json={"model": "bert", "inputs": c}, timeout=60).json()["rewards"]]
    streamed = [r for reply in replies for r in reply.rewards]
    assert max(abs(a - b) for a, b in zip(streamed, over_http, strict=True)) < 1e-5


@pytest.mark.parametrize(("request_", "code", "words"), [
    (pb.ScoreRequest(), grpc.StatusCode.INVALID_ARGUMENT, "at least one item"),
    (pb.ScoreRequest(inputs=[pb.Item(text="ok"), pb.Item()]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[1]"),
    (pb.ScoreRequest(inputs=[pb.Item(conversation=pb.Conversation())]), grpc.StatusCode.INVALID_ARGUMENT,
     "inputs[0].conversation.messages"),
    (pb.ScoreRequest(inputs=[pb.Item(text="x")] * 65), grpc.StatusCode.INVALID_ARGUMENT, "limit is 64"),
    (pb.ScoreRequest(model="nope", inputs=[pb.Item(text="x")]), grpc.StatusCode.NOT_FOUND, "bert, gpt2"),
    (pb.RankRequest(prompt="p", messages=[pb.Message(role="user", content="c")], responses=["a"]),
     grpc.StatusCode.INVALID_ARGUMENT, "exactly one of"),
    (pb.RankRequest(prompt="p"), grpc.StatusCode.INVALID_ARGUMENT, "at least one candidate"),
])
def test_bad_input_gets_a_status_code_and_a_message(
    request_: pb.ScoreRequest | pb.RankRequest, code: grpc.StatusCode, words: str,
    stub: rmserve_pb2_grpc.RewardServiceStub,
) -> None:
    call = stub.Score if isinstance(request_, pb.ScoreRequest) else stub.Rank
    with pytest.raises(grpc.RpcError) as error:
        call(request_, timeout=30)
    assert error.value.code() == code
    assert words in error.value.details()


@pytest.fixture(scope="module")
def slow_stub(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, rmserve_pb2_grpc.RewardServiceStub]]:
    """(HTTP URL, stub) of a server whose items wait 2 s in the queue for company, so a call's
    deadline passes while its items are still queued."""
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", "--max-wait-ms", "2000",
            "--max-batch-pairs", "256"]  # no batch fills up: every item waits the window out
    port = free_port()
    with (running_server(args, store=tmp_path_factory.mktemp("store"), grpc_port=port) as url,
          grpc.insecure_channel(f"127.0.0.1:{port}") as channel):
        yield url, rmserve_pb2_grpc.RewardServiceStub(channel)


def dropped_items(url: str, reason: str | None = None) -> float:
    return metric(url, "rmserve_dropped_items_total", **({"reason": reason} if reason else {}))


def test_a_passed_deadline_gets_deadline_exceeded_and_the_server_keeps_serving(
    slow_stub: tuple[str, rmserve_pb2_grpc.RewardServiceStub],
) -> None:
    url, stub = slow_stub
    items = [pb.Item(text=f"item {i} waits for company") for i in range(6)]
    passes, dropped = metric(url, "rmserve_batch_size_count"), dropped_items(url)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        stub.Score(pb.ScoreRequest(inputs=items), timeout=0.3)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    time.sleep(2.5)  # past the batching window: nothing of it may have been computed since
    assert metric(url, "rmserve_batch_size_count") == passes, "the items were computed after their deadline"
    # Counted as dropped (under which reason: see the next test).
    assert dropped_items(url) - dropped == len(items)
    assert metric(url, "rmserve_queue_depth") == 0
    assert len(stub.Score(pb.ScoreRequest(inputs=items), timeout=60).rewards) == len(items)
    assert metric(url, "rmserve_batch_size_count") > passes


def test_items_dropped_at_a_grpc_deadline_are_counted_as_deadline_drops(
    slow_stub: tuple[str, rmserve_pb2_grpc.RewardServiceStub],
) -> None:
    """gRPC itself cancels a call at its deadline, racing the scorer's own timer: either way the
    drop is a deadline's (many concurrent calls, so a race lost now and then shows)."""
    url, stub = slow_stub
    calls, per_call = 24, 2
    dropped = dropped_items(url, "deadline")
    futures = [stub.Score.future(pb.ScoreRequest(inputs=[pb.Item(text=f"call {c} item {i}")
                                                         for i in range(per_call)]), timeout=0.3)
               for c in range(calls)]
    codes = [future.exception(timeout=10) for future in futures]
    assert [c.code() if isinstance(c, grpc.RpcError) else c for c in codes] == [
        grpc.StatusCode.DEADLINE_EXCEEDED] * calls
    time.sleep(2.5)
    assert dropped_items(url, "deadline") - dropped == calls * per_call


def _health(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return {name: check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                for name in ("", "rmserve.v1.RewardService")}


def test_health_is_serving_once_ready_and_reflection_lists_the_services(servers: tuple[str, str]) -> None:
    assert set(_health(servers[1]).values()) == {health_pb2.HealthCheckResponse.SERVING}
    with grpc.insecure_channel(servers[1]) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([ask])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"rmserve.v1.RewardService", "grpc.health.v1.Health"} <= names


def test_health_is_not_serving_while_the_model_is_not_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # no weights: loading fails
    port = free_port()
    with running_server(["--model", str(broken)], store=tmp_path / "store", wait_ready=False,
                        grpc_port=port) as url:
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert set(_health(f"127.0.0.1:{port}").values()) == {health_pb2.HealthCheckResponse.NOT_SERVING}


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """The committed modules describe exactly the proto (compared as descriptors, so a newer
    grpcio-tools that words the generated code differently does not matter)."""
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
                    PROTO], cwd=ROOT, check=True)
    spec = importlib.util.spec_from_file_location("fresh_pb2", tmp_path / "service/api/grpc/rmserve_pb2.py")
    assert spec and spec.loader
    fresh = importlib.util.module_from_spec(spec)
    pool = descriptor_pool.DescriptorPool()  # a private pool: the committed module owns the default one
    with unittest.mock.patch.object(descriptor_pool, "Default", return_value=pool):
        spec.loader.exec_module(fresh)
    assert fresh.DESCRIPTOR.serialized_pb == pb.DESCRIPTOR.serialized_pb, f"regenerate the stubs: see {PROTO}"
    assert set(pb.DESCRIPTOR.services_by_name["RewardService"].methods_by_name) == {
        m for m in dir(rmserve_pb2_grpc.RewardServiceServicer) if not m.startswith("_")}


def test_list_models_reports_models_and_limits(stub: rmserve_pb2_grpc.RewardServiceStub) -> None:
    answer = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert answer.max_inputs_per_request == 64
    assert [(m.name, m.version, m.backend, m.device) for m in answer.models] == [
        ("bert", "local", "torch", "cpu"), ("gpt2", "local", "torch", "cpu")]


def test_priority_normalize_and_clip_as_over_http(servers: tuple[str, str], stub) -> None:
    dicts = mixed_items(seed=3, count=6)
    items = [to_pb(item) for item in dicts]

    def over_http(path: str, **body: object) -> httpx.Response:
        return httpx.post(f"{servers[0]}{path}", json={"model": "gpt2", **body}, timeout=30)

    raw = stub.Score(pb.ScoreRequest(model="gpt2", inputs=items, priority=-5), timeout=30)
    assert list(raw.rewards) == over_http("/v1/score", inputs=dicts, priority=-5).json()["rewards"]
    clipped = stub.Score(pb.ScoreRequest(model="gpt2", inputs=items, clip=0.01), timeout=30)
    assert list(clipped.rewards) == over_http("/v1/score", inputs=dicts, clip=0.01).json()["rewards"]
    assert any(abs(r) > 0.01 for r in raw.rewards), "no reward is outside the clip: nothing is tested"
    assert list(clipped.rewards) == pytest.approx([max(-0.01, min(0.01, r)) for r in raw.rewards], abs=1e-7)
    rank = pb.RankRequest(model="gpt2", prompt="Hi", responses=["a", "b"], priority=0)
    ranked = stub.Rank(rank, timeout=30)
    ranked_http = over_http("/v1/rank", prompt="Hi", responses=["a", "b"], priority=0).json()
    assert len(ranked.rewards) == 2
    assert (list(ranked.rewards), list(ranked.ranking), ranked.best) == (
        ranked_http["rewards"], ranked_http["ranking"], ranked_http["best"])
    with pytest.raises(grpc.RpcError) as refused:  # these test models have no statistics
        stub.Score(pb.ScoreRequest(model="gpt2", inputs=items, normalize=True), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'gpt2' has no normalisation statistics" in refused.value.details()
    refused_http = over_http("/v1/score", inputs=dicts, normalize=True)
    assert refused_http.status_code == 422
    assert refused_http.json()["error"]["message"] == refused.value.details()


@pytest.mark.parametrize("options", [{"clip": float("nan")}, {"clip": -1.0}, {"priority": 2**31 - 1}])
def test_out_of_range_options_are_invalid_arguments(stub, options: dict) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.Score(pb.ScoreRequest(model="gpt2", inputs=[pb.Item(text="x")], **options), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

"""RewardClient and AsyncRewardClient against the running server, over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rmserve_client import (
    AsyncRewardClient,
    RewardAuthError,
    RewardClient,
    RewardRequestError,
    RewardUnavailableError,
)
from rmserve_client.client import backoff_s
from tests.integration.reference import mixed_items
from tests.integration.server import free_port, running_server

LIMIT = 1000  # the server's items per request: 10,000 items take 10 chunks


@pytest.fixture(scope="module")
def server(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(http URL, grpc URL) of one server."""
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--max-inputs-per-request", str(LIMIT), "--max-queue-items", "20000"]
    port = free_port()
    with running_server(args, store=tmp_path_factory.mktemp("store"), grpc_port=port) as url:
        yield url, f"grpc://127.0.0.1:{port}"


class FlakyProxy:
    """Answers 503 (with Retry-After) to the next `fail_next` requests, then forwards to rmserve."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_next = 0
        self.seen = 0
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        self.seen += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"error": {"type": "overloaded", "message": "busy"}}, status_code=503,
                                headers={"Retry-After": "0"})
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as client:
            answer = await client.request(request.method, request.url.path, content=await request.body(),
                                          headers={"content-type": "application/json"})
        return Response(answer.content, answer.status_code, media_type="application/json")


@pytest.fixture(scope="module")
def proxy(server: tuple[str, str]) -> Iterator[tuple[FlakyProxy, str]]:
    flaky = FlakyProxy(server[0])
    port = free_port()
    config = uvicorn.Config(flaky.app, host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.05)
    yield flaky, f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def _ten_thousand() -> tuple[list[dict], list[int]]:
    """10,000 items drawn from 40 distinct ones; which one each is, so order can be checked."""
    distinct = mixed_items(seed=41, count=40)
    rng = random.Random(0)
    which = [rng.randrange(len(distinct)) for _ in range(10_000)]
    return [distinct[i] for i in which], which


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_ten_thousand_items_in_one_call_come_back_complete_and_in_order(
    transport: str, server: tuple[str, str]
) -> None:
    items, which = _ten_thousand()
    distinct = mixed_items(seed=41, count=40)
    answer = httpx.post(f"{server[0]}/v1/score", json={"inputs": distinct}, timeout=60)
    expected = answer.json()["rewards"]
    url = server[0] if transport == "http" else server[1]
    with RewardClient(url) as client:
        rewards = client.score(items)
    assert len(rewards) == 10_000
    # Batch neighbours change the float32 sums by at most a few ulps.
    assert max(abs(r - expected[w]) for r, w in zip(rewards, which, strict=True)) < 1e-5


def test_async_client_scores_and_ranks_like_the_http_api(server: tuple[str, str]) -> None:
    items = mixed_items(seed=42, count=30)
    responses = ["Paris.", "I do not know.", "It is Paris, on the Seine."]
    expected = httpx.post(f"{server[0]}/v1/score", json={"inputs": items}).json()["rewards"]
    expected_rank = httpx.post(f"{server[0]}/v1/rank",
                               json={"prompt": "Capital of France?", "responses": responses}).json()

    async def run(url: str) -> tuple[list[float], list[int]]:
        async with AsyncRewardClient(url, chunk_size=7) as client:  # 5 concurrent chunks
            rewards = await client.score([tuple(i.values()) if "prompt" in i else i for i in items])
            ranking = await client.rank(responses, prompt="Capital of France?")
            return rewards, ranking.ranking

    for url in server:
        rewards, ranking = asyncio.run(run(url))
        assert max(abs(a - b) for a, b in zip(rewards, expected, strict=True)) < 1e-5
        assert ranking == expected_rank["ranking"]


def test_503_twice_then_success_is_retried_transparently(proxy: tuple[FlakyProxy, str],
                                                         server: tuple[str, str]) -> None:
    flaky, url = proxy
    items = mixed_items(seed=43, count=5)
    expected = httpx.post(f"{server[0]}/v1/score", json={"inputs": items}).json()["rewards"]
    with RewardClient(url, chunk_size=100, backoff_base_s=0.01) as client:
        flaky.fail_next, flaky.seen = 2, 0
        assert client.score(items) == expected
    assert flaky.seen == 3


def test_a_422_is_raised_at_once_without_retrying(proxy: tuple[FlakyProxy, str]) -> None:
    flaky, url = proxy
    with RewardClient(url, chunk_size=100, backoff_base_s=0.01) as client:
        flaky.fail_next, flaky.seen = 0, 0
        with pytest.raises(RewardRequestError) as error:
            client.score([{"messages": []}])
    assert error.value.status == 422
    assert "messages" in error.value.message
    assert flaky.seen == 1


def test_a_server_that_stays_busy_raises_instead_of_returning_placeholders(
    proxy: tuple[FlakyProxy, str],
) -> None:
    flaky, url = proxy
    with RewardClient(url, chunk_size=100, max_retries=3, backoff_base_s=0.01) as client:
        flaky.fail_next, flaky.seen = 100, 0
        with pytest.raises(RewardUnavailableError, match="after 4 attempts"):
            client.score(mixed_items(seed=44, count=3))
    assert flaky.seen == 4
    flaky.fail_next = 0


def test_grpc_errors_are_typed_and_not_retried(server: tuple[str, str]) -> None:
    with RewardClient(server[1]) as client, pytest.raises(RewardRequestError) as error:
        client.score([{"text": "x"}], model="no-such-model")
    assert error.value.status == "NOT_FOUND"


def test_nothing_listening_is_retried_then_reported() -> None:
    with RewardClient(f"http://127.0.0.1:{free_port()}", max_retries=2, backoff_base_s=0.01) as client, \
            pytest.raises(RewardUnavailableError, match="after 3 attempts"):
        client.score(["x"])


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    random.seed(0)
    for attempt in range(8):
        delays = [backoff_s(attempt, 0.25, 4.0) for _ in range(200)]
        ceiling = min(4.0, 0.25 * 2**attempt)
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # spread over the whole range, not fixed



KEY = "client-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(http URL, grpc URL) of a server that wants an API key (RMSERVE_API_KEYS)."""
    port = free_port()
    with running_server(["--model", f"bert={tiny_model_dirs['bert-right']}"], grpc_port=port,
                        store=tmp_path_factory.mktemp("store"), env={"RMSERVE_API_KEYS": KEY}) as url:
        yield url, f"grpc://127.0.0.1:{port}"


def _attempts(transport: Any) -> list[int]:
    """Count the transport's score calls: each retry is one more."""
    calls: list[int] = []
    score = transport.score

    async def counted(*args: Any) -> list[float]:
        calls.append(1)
        return await score(*args)

    transport.score = counted
    return calls


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_both_clients_send_the_api_key_and_a_wrong_key_is_refused_once(
    transport: str, keyed_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = keyed_server[0] if transport == "http" else keyed_server[1]
    items = mixed_items(seed=45, count=4)
    expected = httpx.post(f"{keyed_server[0]}/v1/score", json={"inputs": items},
                          headers={"Authorization": f"Bearer {KEY}"}).json()["rewards"]
    monkeypatch.delenv("RMSERVE_API_KEY", raising=False)
    with RewardClient(url, api_key=KEY) as client:
        assert client.score(items) == pytest.approx(expected, abs=1e-5)
    monkeypatch.setenv("RMSERVE_API_KEY", KEY)  # the key from the environment
    with RewardClient(url) as client:
        assert client.score(items) == pytest.approx(expected, abs=1e-5)

    async def run(api_key: str | None) -> list[float]:
        async with AsyncRewardClient(url, api_key=api_key, chunk_size=2) as client:
            return await client.score(items)

    assert asyncio.run(run(None)) == pytest.approx(expected, abs=1e-5)  # $RMSERVE_API_KEY
    assert asyncio.run(run(KEY)) == pytest.approx(expected, abs=1e-5)

    # A wrong key (given, or none at all) is the typed error, raised at the first answer.
    monkeypatch.delenv("RMSERVE_API_KEY")
    for key in ("wrong-key-0123456789", None):
        with RewardClient(url, api_key=key, chunk_size=100, backoff_base_s=0.01) as client:
            attempts = _attempts(client._client.transport)
            with pytest.raises(RewardAuthError) as error:
                client.score(items)
        assert error.value.status == (401 if transport == "http" else "UNAUTHENTICATED")
        assert isinstance(error.value, RewardRequestError) and len(attempts) == 1

        async def refused(api_key: str | None) -> tuple[RewardAuthError, int]:
            async with AsyncRewardClient(url, api_key=api_key, chunk_size=100) as client:
                attempts = _attempts(client.transport)
                with pytest.raises(RewardAuthError) as error:
                    await client.score(items)
                return error.value, len(attempts)

        assert asyncio.run(refused(key))[1] == 1

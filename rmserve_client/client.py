"""RewardClient and AsyncRewardClient: score and rank against rmserve over HTTP or gRPC.

Large lists are split into chunks the server accepts, sent concurrently and put back in order.
Busy or unreachable servers (HTTP 429/503, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED, refused
connections) are retried with exponential backoff and full jitter, honouring Retry-After; any
other refusal is raised at once. A reward that cannot be had is an exception, never a placeholder.

A server started with API keys (RMSERVE_API_KEYS) wants one with every call: `api_key=`, or the
environment variable RMSERVE_API_KEY when that is not given (read when the client is made).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from rmserve_client.errors import Retryable, RewardUnavailableError
from rmserve_client.transports import GrpcTransport, HttpTransport, Item, Ranking, Transport

T = TypeVar("T")
ItemLike = Item | tuple[str, str] | str


def as_item(item: ItemLike) -> Item:
    """Accept the HTTP API's item dicts, (prompt, response) pairs, or pre-formatted text."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str):
        return {"text": item}
    prompt, response = item
    return {"prompt": prompt, "response": response}


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)], so retrying clients spread out."""
    return random.uniform(0, min(cap_s, base_s * 2**attempt))


class AsyncRewardClient:
    """`url`: http(s)://host:port for HTTP/JSON, grpc://host:port for gRPC. `api_key`: sent as
    `Authorization: Bearer KEY` (HTTP header or gRPC metadata); default $RMSERVE_API_KEY."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        chunk_size: int | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self.model = model
        self._max_retries = max_retries
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._chunk_size = chunk_size  # None: the server's limit, asked once
        self._gate = asyncio.Semaphore(max_concurrency)
        key = api_key if api_key is not None else os.environ.get("RMSERVE_API_KEY") or None
        self.transport: Transport
        if url.startswith("grpc://"):
            self.transport = GrpcTransport(url.removeprefix("grpc://"), timeout_s=timeout_s, api_key=key)
        elif url.startswith(("http://", "https://")):
            self.transport = HttpTransport(url, timeout_s=timeout_s, api_key=key)
        else:
            raise ValueError(f"{url!r}: use http://host:port or grpc://host:port")

    async def score(
        self, items: Sequence[ItemLike], *, model: str | None = None
    ) -> list[float]:
        """One reward per item, in order."""
        if not items:
            return []
        wanted = [as_item(i) for i in items]
        if self._chunk_size is None:
            self._chunk_size = await self._retrying(self.transport.max_inputs_per_request)
        size = self._chunk_size
        chunks = [wanted[i : i + size] for i in range(0, len(wanted), size)]

        async def one(chunk: list[Item]) -> list[float]:
            async with self._gate:
                return await self._retrying(lambda: self.transport.score(chunk, model or self.model))

        try:  # the first chunk that fails cancels the rest and is raised as itself
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(chunk)) for chunk in chunks]
        except* Exception as failures:
            raise failures.exceptions[0] from None
        return [reward for task in tasks for reward in task.result()]

    async def rank(
        self,
        responses: Sequence[str],
        *,
        prompt: str | None = None,
        messages: Sequence[dict[str, str]] | None = None,
        model: str | None = None,
        top_k: int | None = None,
    ) -> Ranking:
        """Best-of-n: the responses to one prompt (or conversation), ranked best first."""
        context: Item = {"prompt": prompt} if messages is None else {"messages": list(messages)}
        return await self._retrying(
            lambda: self.transport.rank(context, responses, model or self.model, top_k)
        )

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self._max_retries + 1):
            try:
                return await call()
            except Retryable as exc:
                if attempt == self._max_retries:
                    raise RewardUnavailableError(f"gave up after {attempt + 1} attempts: {exc}") from exc
                await asyncio.sleep(max(exc.retry_after_s or 0.0, backoff_s(attempt, *self._backoff)))
        raise AssertionError("unreachable")


class RewardClient:
    """The blocking client: an AsyncRewardClient on a private event-loop thread, so it works in
    plain scripts and inside code that already runs an event loop (notebooks, trainers)."""

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rmserve-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncRewardClient:  # built on its loop: its connections belong there
            return AsyncRewardClient(url, **options)

        self._client = self._run(make())

    def score(self, items: Sequence[ItemLike], *, model: str | None = None) -> list[float]:
        return self._run(self._client.score(items, model=model))

    def rank(self, responses: Sequence[str], **options: Any) -> Ranking:
        return self._run(self._client.rank(responses, **options))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

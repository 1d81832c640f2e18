"""How the client reaches a server: HTTP/JSON (httpx) or gRPC (grpc.aio). Both speak in plain
items and rewards, and sort failures into retryable and final."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import httpx

from rmserve_client.errors import Retryable, RewardAuthError, RewardRequestError, RewardTimeoutError

Item = dict[str, Any]  # the HTTP API's item: {"prompt", "response"}, {"messages"} or {"text"}

# Answers worth another try: the server is busy, starting or briefly gone.
_RETRY_HTTP = {429, 502, 503, 504}
_RETRY_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# Refusals of the key: typed apart so that callers can tell "fix the key" from "fix the request".
_AUTH_HTTP = {401, 403}
_AUTH_GRPC = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True)
class Ranking:
    rewards: list[float]
    ranking: list[int]  # indices into the responses, best first

    @property
    def best(self) -> int:
        return self.ranking[0]


class Transport(Protocol):
    async def score(self, items: Sequence[Item], model: str | None) -> list[float]: ...

    async def rank(self, context: Item, responses: Sequence[str], model: str | None,
                   top_k: int | None) -> Ranking: ...

    async def max_inputs_per_request(self) -> int: ...

    async def close(self) -> None: ...


def bearer(api_key: str | None) -> str | None:
    """The Authorization value for an API key (the server's `Authorization: Bearer KEY`)."""
    return f"Bearer {api_key}" if api_key else None


class HttpTransport:
    def __init__(self, url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        authorization = bearer(api_key)
        headers = {"Authorization": authorization} if authorization else None
        # One pooled connection set for every call of this client.
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers)

    async def score(self, items: Sequence[Item], model: str | None) -> list[float]:
        return (await self._post("/v1/score", {"inputs": list(items), "model": model}))["rewards"]

    async def rank(self, context: Item, responses: Sequence[str], model: str | None,
                   top_k: int | None) -> Ranking:
        body = {**context, "responses": list(responses), "model": model, "top_k": top_k}
        answer = await self._post("/v1/rank", body)
        return Ranking(answer["rewards"], answer["ranking"])

    async def max_inputs_per_request(self) -> int:
        return (await self._call("GET", "/v1/models", None))["max_inputs_per_request"]

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, {k: v for k, v in body.items() if v is not None})

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise RewardTimeoutError(f"{method} {path}: no answer within the timeout") from exc
        except httpx.TransportError as exc:  # refused, reset: the server may be restarting
            raise Retryable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response.json()
        message = _error_message(response)
        if response.status_code in _RETRY_HTTP:
            raise Retryable(f"{response.status_code}: {message}", _retry_after(response))
        if response.status_code in _AUTH_HTTP:
            raise RewardAuthError(response.status_code, message)
        raise RewardRequestError(response.status_code, message)


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


class GrpcTransport:
    def __init__(self, target: str, *, timeout_s: float, api_key: str | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024) -> None:
        from service.api.grpc import rmserve_pb2, rmserve_pb2_grpc

        self._pb = rmserve_pb2
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = rmserve_pb2_grpc.RewardServiceStub(self._channel)
        self._timeout_s = timeout_s
        # The server reads the key from the call's metadata, as HTTP reads the header.
        authorization = bearer(api_key)
        self._metadata = (("authorization", authorization),) if authorization else None

    async def score(self, items: Sequence[Item], model: str | None) -> list[float]:
        request = self._pb.ScoreRequest(inputs=[self._item(i) for i in items], model=model or "")
        return list((await self._call(self._stub.Score, request)).rewards)

    async def rank(self, context: Item, responses: Sequence[str], model: str | None,
                   top_k: int | None) -> Ranking:
        pb = self._pb
        request = pb.RankRequest(
            prompt=context.get("prompt"), messages=[pb.Message(**m) for m in context.get("messages", [])],
            responses=list(responses), model=model or "", top_k=top_k or 0,
        )
        answer = await self._call(self._stub.Rank, request)
        return Ranking(list(answer.rewards), list(answer.ranking))

    async def max_inputs_per_request(self) -> int:
        answer = await self._call(self._stub.ListModels, self._pb.ListModelsRequest())
        return answer.max_inputs_per_request

    async def close(self) -> None:
        await self._channel.close()

    def _item(self, item: Item) -> Any:
        pb = self._pb
        if "text" in item:
            return pb.Item(text=item["text"])
        if "messages" in item:
            if item.get("chat_template_kwargs"):  # not silently dropped: the reward would differ
                raise ValueError("chat_template_kwargs are sent over HTTP only: use an http:// URL")
            return pb.Item(conversation=pb.Conversation(messages=[pb.Message(**m) for m in item["messages"]]))
        return pb.Item(pair=pb.PromptResponse(prompt=item["prompt"], response=item["response"]))

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RewardTimeoutError(f"no answer within {self._timeout_s} s") from exc
            # RESOURCE_EXHAUSTED also means "message over the size limit": that never gets better.
            if code in _RETRY_GRPC and "larger than max" not in details:
                raise Retryable(f"{code.name}: {details}") from exc
            if code in _AUTH_GRPC:
                raise RewardAuthError(code.name, details) from exc
            raise RewardRequestError(code.name, details) from exc

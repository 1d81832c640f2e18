"""rmserve.v1.RewardService: protobuf in, the shared scoring core, protobuf out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from typing import Any, TypeVar

import grpc

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from service.api.grpc.handlers import Malformed
from service.api.observe import RequestObservation, error_kind, new_error_id, request_id_from
from service.metrics import Metrics
from service.scoring.errors import InvalidInputError, ScoringError, TooManyInputsError
from service.scoring.items import Conversation, Message, PromptResponse, RawText, ScoreInput
from service.scoring.options import ScoreOptions
from service.scoring.registry import ModelRegistry
from service.scoring.results import ScoreResult, Usage
from service.scoring.scorer import Scorer

logger = logging.getLogger("rmserve.grpc")

Reply = TypeVar("Reply")
# Chunks of one ScoreStream in the queue at once: enough to keep the batcher busy between them.
_STREAM_CHUNKS_IN_FLIGHT = 2


def _options(request: pb.ScoreRequest | pb.RankRequest, context: grpc.aio.ServicerContext) -> ScoreOptions:
    """The request's priority and reward options; the call's deadline, if it has one, bounds its
    wait in the queue as timeout_ms does over HTTP."""
    return ScoreOptions(
        priority=request.priority if request.HasField("priority") else None,
        timeout_s=context.time_remaining(),
        normalize=request.normalize,
        clip=request.clip or None,  # proto3's 0 means unset
    )


def _parsed(request: Any) -> Any:
    """The request, unless its bytes did not parse (handlers.py)."""
    if isinstance(request, Malformed):
        raise InvalidInputError(request.description)
    return request


def _count(items: Sized, field: str, limit: int) -> None:
    """Counted before any item becomes a Python object, as over HTTP."""
    if len(items) > limit:
        raise TooManyInputsError(
            f"{len(items)} {field} in one request; the limit is {limit}: split the request"
        )


def to_items(request: pb.ScoreRequest) -> list[ScoreInput]:
    return [_to_item(item, f"inputs[{i}]") for i, item in enumerate(request.inputs)]


def _to_item(item: pb.Item, where: str) -> ScoreInput:
    kind = item.WhichOneof("input")
    if kind == "pair":
        return PromptResponse(item.pair.prompt, item.pair.response)
    if kind == "conversation":
        return Conversation(_messages(item.conversation.messages, f"{where}.conversation"))
    if kind == "text":
        return RawText(item.text)
    raise InvalidInputError(f"{where}: set one of pair, conversation or text")


def _messages(messages: list[pb.Message], where: str) -> tuple[Message, ...]:
    if not messages:
        raise InvalidInputError(f"{where}.messages: give at least one message")
    for i, message in enumerate(messages):
        if not message.role:
            raise InvalidInputError(f"{where}.messages[{i}].role: must not be empty")
    return tuple(Message(m.role, m.content) for m in messages)


def _score_reply(result: ScoreResult) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        model=result.model, version=result.version, rewards=result.rewards,
        truncated=result.truncated, tokens=result.tokens,
    )


class RewardServicer(rmserve_pb2_grpc.RewardServiceServicer):
    def __init__(self, scorer: Scorer, registry: ModelRegistry, metrics: Metrics) -> None:
        self._scorer = scorer
        self._registry = registry
        self._metrics = metrics

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        cards = [
            pb.ModelCard(name=m.name, version=m.version, backend=m.backend.backend, device=m.backend.device,
                         dtype=m.backend.dtype, max_length=m.max_length)
            for m in self._registry.all()
        ]
        return pb.ListModelsResponse(models=cards, max_inputs_per_request=self._scorer.max_inputs_per_request)

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self._unary(context, self._run("Score", context, self._scoring(request, context)))

    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        async def rank() -> tuple[pb.RankResponse, Usage]:
            _parsed(request)
            _count(request.responses, "responses", self._scorer.max_inputs_per_request)
            if request.HasField("prompt") == bool(request.messages):
                raise InvalidInputError("give exactly one of 'prompt' or 'messages'")
            conversation = (
                (Message("user", request.prompt),) if request.HasField("prompt")
                else _messages(request.messages, "request")
            )
            result = await self._scorer.rank(
                conversation, list(request.responses), model=request.model or None,
                top_k=request.top_k or None, options=_options(request, context),
            )
            return pb.RankResponse(
                model=result.score.model, version=result.score.version, rewards=result.score.rewards,
                ranking=result.ranking, best=result.best,
            ), result.usage

        return await self._unary(context, self._run("Rank", context, rank))

    async def ScoreStream(
        self, requests: AsyncIterator[pb.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        # Chunks are scored while the next ones arrive, at most _STREAM_CHUNKS_IN_FLIGHT at once so
        # one stream cannot fill the queue; replies go back in order. A failed chunk ends the
        # stream with its status (once) and the chunks behind it are dropped.
        pending: asyncio.Queue[asyncio.Task[pb.ScoreResponse] | None] = asyncio.Queue()
        room = asyncio.Semaphore(_STREAM_CHUNKS_IN_FLIGHT)

        async def read() -> None:
            try:
                async for request in requests:
                    await room.acquire()
                    call = self._run("ScoreStream", context, self._scoring(request, context))
                    pending.put_nowait(asyncio.create_task(call))
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                try:
                    reply = await task
                except _Failed as failure:
                    await context.abort(failure.code, failure.message)
                room.release()
                yield reply
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                if (task := pending.get_nowait()) is not None:
                    task.cancel()

    def _scoring(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> Callable[[], Awaitable[tuple[pb.ScoreResponse, Usage]]]:
        async def score() -> tuple[pb.ScoreResponse, Usage]:
            _parsed(request)
            _count(request.inputs, "inputs", self._scorer.max_inputs_per_request)
            options = _options(request, context)
            result = await self._scorer.score(to_items(request), request.model or None, options)
            return _score_reply(result), result.usage

        return score

    @staticmethod
    async def _unary(context: grpc.aio.ServicerContext, call: Awaitable[Reply]) -> Reply:
        try:
            return await call
        except _Failed as failure:
            await context.abort(failure.code, failure.message)
            raise  # abort() raises; this keeps type checkers sure of it

    async def _run(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        handle: Callable[[], Awaitable[tuple[Reply, Usage]]],
    ) -> Reply:
        """One scoring call: errors turned into _Failed, then counted and logged."""
        metadata = dict(context.invocation_metadata() or ())
        observation = RequestObservation(
            self._metrics, f"grpc:{method}", request_id_from(metadata.get("x-request-id"))
        )
        context.set_trailing_metadata((("x-request-id", observation.request_id),))
        code = grpc.StatusCode.OK
        try:
            reply, usage = await handle()
            observation.served(usage)
            return reply
        except ScoringError as exc:
            kind = error_kind(exc)
            code = grpc.StatusCode[kind.grpc_code]
            observation.failed(kind.type, exc.model)
            raise _Failed(code, str(exc)) from exc
        except Exception as exc:
            error_id = new_error_id()
            logger.exception("internal error %s", error_id)
            code = grpc.StatusCode.INTERNAL
            observation.failed("internal")
            raise _Failed(code, f"internal error (id {error_id}); see the server log") from exc
        except asyncio.CancelledError:
            # gRPC cancels a call at its deadline: then it is a deadline, as over HTTP.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            observation.failed("deadline_exceeded" if expired else "cancelled")
            raise
        finally:
            observation.answered(code.name, failed=code != grpc.StatusCode.OK)


class _Failed(Exception):
    """A call's outcome as a gRPC status; aborted by whoever answers the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

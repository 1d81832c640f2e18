"""The scoring core shared by every transport: format, tokenise, batch, reassemble."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from service.batching.batcher import BatcherClosedError, QueueFullError
from service.errors import InvalidInputError, NotReadyError, OverloadedError, TooManyInputsError
from service.items import Conversation, Message, PromptResponse, ScoreInput
from service.registry import ModelRegistry
from service.request_record import RequestRecord


@dataclass(frozen=True)
class ScoreResult:
    model: str
    version: str
    rewards: list[float]
    truncated: list[bool]
    tokens: int


@dataclass(frozen=True)
class RankResult:
    score: ScoreResult
    ranking: list[int]

    @property
    def best(self) -> int:
        return self.ranking[0]


class Scorer:
    """Scores items with a named model; knows nothing of HTTP or gRPC."""

    def __init__(self, registry: ModelRegistry, *, max_inputs_per_request: int) -> None:
        self._registry = registry
        self.max_inputs_per_request = max_inputs_per_request

    async def score(
        self, items: Sequence[ScoreInput], model: str | None = None, record: RequestRecord | None = None
    ) -> ScoreResult:
        """`record`, if given, learns the model, the counts and where the time went."""
        record = record or RequestRecord("", "")
        if not items:
            raise InvalidInputError("inputs must hold at least one item")
        if len(items) > self.max_inputs_per_request:
            raise TooManyInputsError(
                f"{len(items)} inputs in one request; the limit is {self.max_inputs_per_request}: "
                "split the request"
            )
        served = self._registry.get(model)
        record.model, record.version = served.name, served.version
        # Tokenising off the event loop keeps the server answering while long inputs encode.
        formatted = await asyncio.to_thread(served.formatter.format, items)
        try:
            futures = served.batcher.submit([f.pair for f in formatted], record.timing)
        except QueueFullError as exc:
            raise OverloadedError(str(exc)) from exc
        except BatcherClosedError as exc:
            raise NotReadyError(str(exc)) from exc
        try:
            rewards = list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the caller is gone: its queued items need not run
                future.cancel()
            raise
        tokens = sum(len(f.pair) for f in formatted)
        record.items, record.tokens = len(items), tokens
        served.metrics.items.inc(len(items))
        served.metrics.tokens.inc(tokens)
        return ScoreResult(
            model=served.name,
            version=served.version,
            rewards=rewards,
            truncated=[f.truncated for f in formatted],
            tokens=tokens,
        )

    async def rank(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        record: RequestRecord | None = None,
    ) -> RankResult:
        """Best-of-n: score each response after the same conversation, best first."""
        if not responses:
            raise InvalidInputError("responses must hold at least one candidate")
        items = [_candidate(conversation, response) for response in responses]
        result = await self.score(items, model, record)
        ranking = sorted(range(len(responses)), key=lambda i: -result.rewards[i])
        return RankResult(result, ranking[:top_k] if top_k else ranking)


def _candidate(conversation: Sequence[Message], response: str) -> ScoreInput:
    if len(conversation) == 1 and conversation[0].role == "user":
        return PromptResponse(conversation[0].content, response)
    return Conversation((*conversation, Message("assistant", response)))

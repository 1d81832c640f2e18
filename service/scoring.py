"""The scoring core shared by every transport: format, tokenise, batch, reassemble."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from service.batching.batcher import BatcherClosedError, QueueFullError, TooBigForQueueError
from service.errors import (
    DeadlineExceededError,
    InternalScoringError,
    InvalidInputError,
    NotReadyError,
    OverloadedError,
    ScoringError,
    TooLargeError,
    TooManyInputsError,
)
from service.formatting import FormattedItem
from service.items import Conversation, Message, PromptResponse, ScoreInput
from service.prefix_sharing import share_prefixes
from service.registry import ModelRegistry, ServedModel
from service.request_record import RequestRecord
from service.result_cache import RewardCache, cache_key
from service.rewards import clipped, normalized, preference_probability, require_statistics, weighted_sum

logger = logging.getLogger("rmserve")


@dataclass(frozen=True)
class ScoringLimits:
    max_inputs_per_request: int = 1024
    max_chars_per_field: int = 100_000
    reject_too_long: bool = False  # else truncate
    min_shared_prefix_tokens: int | None = 32  # None: never share prompts


# Interactive best-of-n goes ahead of bulk scoring unless a request says otherwise.
SCORE_PRIORITY, RANK_PRIORITY = 0, 10
# Beyond this a priority would starve other work for hours, whatever the aging.
MAX_PRIORITY = 1000


@dataclass(frozen=True)
class ScoreOptions:
    """How one request wants to be served: `priority` (higher sooner; None: the endpoint's
    default), `timeout_s` (answered 504, its items dropped, if not computed by then), and its
    rewards `normalize`d with the model's statistics and/or `clip`ped to [-clip, clip]."""

    priority: int | None = None
    timeout_s: float | None = None
    normalize: bool = False
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.priority is not None and abs(self.priority) > MAX_PRIORITY:
            raise InvalidInputError(f"priority must be within -{MAX_PRIORITY}..{MAX_PRIORITY}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise InvalidInputError("clip must be a positive, finite number")

    def raw(self) -> ScoreOptions:
        """The same request, for rewards as the model gives them."""
        return dataclasses.replace(self, normalize=False, clip=None)


@dataclass(frozen=True)
class ScoreResult:
    model: str
    version: str
    rewards: list[float]
    truncated: list[bool]
    tokens: int


@dataclass(frozen=True)
class CombinedResult:
    """The weighted sum of several models' rewards, and each model's own (as used in the sum)."""

    rewards: list[float]
    components: dict[str, ScoreResult]
    tokens: int


@dataclass(frozen=True)
class CompareResult:
    score: ScoreResult
    probability_a: float  # P(a preferred to b) = sigmoid(r_a - r_b), from the raw rewards


@dataclass(frozen=True)
class RankResult:
    score: ScoreResult
    ranking: list[int]

    @property
    def best(self) -> int:
        return self.ranking[0]


class Scorer:
    """Scores items with a named model; knows nothing of HTTP or gRPC."""

    def __init__(
        self, registry: ModelRegistry, limits: ScoringLimits, cache: RewardCache | None = None
    ) -> None:
        self._registry = registry
        self.limits = limits
        self._cache = cache

    @property
    def max_inputs_per_request(self) -> int:
        return self.limits.max_inputs_per_request

    async def score(
        self,
        items: Sequence[ScoreInput],
        model: str | None = None,
        record: RequestRecord | None = None,
        options: ScoreOptions = ScoreOptions(),
    ) -> ScoreResult:
        """`record`, if given, learns the model, the counts and where the time went."""
        record = record or RequestRecord("", "")
        loop = asyncio.get_running_loop()
        deadline = None if options.timeout_s is None else loop.time() + options.timeout_s
        if not items:
            raise InvalidInputError("inputs must hold at least one item")
        if len(items) > self.max_inputs_per_request:
            raise TooManyInputsError(
                f"{len(items)} inputs in one request; the limit is {self.max_inputs_per_request}: "
                "split the request"
            )
        _check_field_sizes(items, self.limits.max_chars_per_field)
        served = self._served(model, options)
        record.model, record.version = served.name, served.version
        # Tokenising off the event loop keeps the server answering while long inputs encode.
        formatted = await asyncio.to_thread(served.formatter.format, items)
        if empty := [i for i, f in enumerate(formatted) if not f.pair.input_ids]:
            # A zero-length row would fail the whole batch it joins, other callers' items included.
            raise InvalidInputError(
                f"inputs[{empty[0]}] encodes to no tokens for this model: give it some text"
            )
        if self.limits.reject_too_long:
            _check_lengths(formatted, served.max_length)
        rewards: list[float | None] = [None] * len(items)
        keys: list[bytes] = []
        if self._cache is not None:
            keys = [cache_key(served.name, served.version, f.pair) for f in formatted]
            rewards = [self._cache.get(key) for key in keys]
        todo = [i for i, reward in enumerate(rewards) if reward is None]
        if self._cache is not None:
            served.metrics.cache_hits.inc(len(items) - len(todo))
            served.metrics.cache_misses.inc(len(todo))
        if todo:
            computed = await self._compute(
                served, [items[i] for i in todo], [formatted[i] for i in todo], record, options, deadline
            )
            for i, reward in zip(todo, computed, strict=True):
                rewards[i] = reward
        if not all(r is not None and math.isfinite(r) for r in rewards):
            raise _non_finite(served.name, formatted, rewards)
        if self._cache is not None:
            for i in todo:
                self._cache.put(keys[i], rewards[i])
            served.metrics.cache_bytes.set(self._cache.bytes)
        tokens = sum(len(f.pair) for f in formatted)
        record.items, record.tokens = len(items), tokens
        served.metrics.items.inc(len(items))
        served.metrics.tokens.inc(tokens)
        return ScoreResult(
            model=served.name,
            version=served.version,
            rewards=_as_asked([r for r in rewards if r is not None], served, options),
            truncated=[f.truncated for f in formatted],
            tokens=tokens,
        )

    async def _compute(
        self,
        served: ServedModel,
        items: Sequence[ScoreInput],
        formatted: Sequence[FormattedItem],
        record: RequestRecord,
        options: ScoreOptions,
        deadline: float | None,
    ) -> list[float]:
        """Queue the items (prompts shared where the backend can) and wait for their rewards."""
        pairs = [f.pair for f in formatted]
        if served.backend.shares_prefixes and self.limits.min_shared_prefix_tokens is not None:
            pairs, shared = share_prefixes(items, pairs, self.limits.min_shared_prefix_tokens)
            served.metrics.shared_prefix_tokens.inc(shared)
        priority = SCORE_PRIORITY if options.priority is None else options.priority
        try:
            futures = served.batcher.submit(pairs, record.timing, priority)
        except QueueFullError as exc:
            raise OverloadedError(str(exc)) from exc
        except TooBigForQueueError as exc:
            raise TooLargeError(str(exc)) from exc
        except BatcherClosedError as exc:
            raise NotReadyError(str(exc)) from exc
        try:
            async with asyncio.timeout_at(deadline):
                return list(await asyncio.gather(*futures))
        except BaseException as exc:
            # Out of time, the caller gone, or the batch failed: what is still queued is dropped.
            for future in futures:
                future.cancel()
            dropped = sum(future.cancelled() for future in futures)
            if isinstance(exc, TimeoutError):
                served.metrics.dropped("deadline", dropped)
                raise DeadlineExceededError(
                    f"timeout_ms passed before the items were computed ({dropped} of {len(futures)} "
                    "dropped): allow more time or retry when the server is less busy"
                ) from None
            if isinstance(exc, asyncio.CancelledError):
                served.metrics.dropped("disconnected", dropped)
                raise
            if isinstance(exc, Exception):  # the forward pass failed (e.g. out of memory)
                error_id = uuid.uuid4().hex[:12]
                logger.exception("forward pass failed", extra={"error_id": error_id, "model": served.name})
                raise InternalScoringError(
                    f"the forward pass failed (error id {error_id}); see the server log"
                ) from exc
            raise

    async def combine(
        self,
        items: Sequence[ScoreInput],
        weights: dict[str, float],
        record: RequestRecord,
        options: ScoreOptions = ScoreOptions(),
    ) -> CombinedResult:
        """sum_m weight_m * reward_m for each item: every model scores the items at once, each
        through its own batcher (normalised first if asked)."""
        if not weights:
            raise InvalidInputError("combine needs at least one model and its weight")
        for name in weights:
            self._served(name, options)  # an unknown model or missing statistics: before any work
        record.model, record.version = "combined", ""
        each = dataclasses.replace(options, clip=None)  # the sum is clipped, not its parts
        try:
            async with asyncio.TaskGroup() as group:  # one part failing stops the others' work
                tasks = [group.create_task(self.score(items, name, RequestRecord(
                    record.request_id, record.endpoint, timing=record.timing), each)) for name in weights]
        except* ScoringError as failed:
            raise failed.exceptions[0] from None
        components = dict(zip(weights, (task.result() for task in tasks), strict=True))
        record.items, record.tokens = len(items), sum(p.tokens for p in components.values())
        total = weighted_sum({name: part.rewards for name, part in components.items()}, weights)
        return CombinedResult(clipped(total, options.clip), components, record.tokens)

    async def compare(
        self,
        conversation: Sequence[Message],
        response_a: str,
        response_b: str,
        *,
        model: str | None = None,
        record: RequestRecord | None = None,
        options: ScoreOptions = ScoreOptions(),
    ) -> CompareResult:
        """Bradley-Terry: both responses scored, and the probability that a is preferred."""
        items = [_candidate(conversation, response_a), _candidate(conversation, response_b)]
        if options.priority is None:
            options = dataclasses.replace(options, priority=RANK_PRIORITY)
        served = self._served(model, options)
        raw = await self.score(items, model, record, options.raw())
        result = dataclasses.replace(raw, rewards=_as_asked(raw.rewards, served, options))
        return CompareResult(result, preference_probability(*raw.rewards))

    async def rank(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        record: RequestRecord | None = None,
        options: ScoreOptions = ScoreOptions(),
    ) -> RankResult:
        """Best-of-n: score each response after the same conversation, best first."""
        if not responses:
            raise InvalidInputError("responses must hold at least one candidate")
        items = [_candidate(conversation, response) for response in responses]
        if options.priority is None:
            options = dataclasses.replace(options, priority=RANK_PRIORITY)
        served = self._served(model, options)
        raw = await self.score(items, model, record, options.raw())
        # Ranked by the model's own rewards: clipping could tie what the model tells apart.
        ranking = sorted(range(len(responses)), key=lambda i: -raw.rewards[i])
        result = dataclasses.replace(raw, rewards=_as_asked(raw.rewards, served, options))
        return RankResult(result, ranking[:top_k] if top_k else ranking)

    def _served(self, model: str | None, options: ScoreOptions) -> ServedModel:
        """The model asked for, known to have what the options need."""
        served = self._registry.get(model)
        if options.normalize:
            require_statistics(served.normalization, served.name)
        return served


def _as_asked(rewards: list[float], served: ServedModel, options: ScoreOptions) -> list[float]:
    """Raw rewards, normalised with the model's statistics and clipped if the request asks."""
    if options.normalize:
        rewards = normalized(rewards, served.normalization, served.name)
    return clipped(rewards, options.clip)


def _fields(item: ScoreInput) -> list[tuple[str, str]]:
    if isinstance(item, PromptResponse):
        return [("prompt", item.prompt), ("response", item.response)]
    if isinstance(item, Conversation):
        return [(f"messages[{i}].content", m.content) for i, m in enumerate(item.messages)]
    return [("text", item.text)]


def _check_field_sizes(items: Sequence[ScoreInput], limit: int) -> None:
    for index, item in enumerate(items):
        for name, text in _fields(item):
            if len(text) > limit:
                raise TooLargeError(
                    f"inputs[{index}].{name} has {len(text)} characters; the limit is {limit}"
                )


def _check_lengths(formatted: Sequence[FormattedItem], max_length: int) -> None:
    too_long = [i for i, f in enumerate(formatted) if f.truncated]
    if too_long:
        shown = ", ".join(f"inputs[{i}]" for i in too_long[:5]) + (" ..." if len(too_long) > 5 else "")
        raise TooLargeError(
            f"{shown}: longer than the model's {max_length} tokens; shorten them (this server rejects "
            "rather than truncates)"
        )


def _non_finite(
    model: str, formatted: Sequence[FormattedItem], rewards: Sequence[float]
) -> InternalScoringError:
    """Never return NaN or inf: log what produced it (a hash of the inputs, not the text) and fail."""
    error_id = uuid.uuid4().hex[:12]
    digest = hashlib.sha256(repr([f.pair.input_ids for f in formatted]).encode()).hexdigest()
    bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
    logger.error("non-finite rewards", extra={"error_id": error_id, "model": model, "items": bad[:20],
                                              "inputs_sha256": digest})
    return InternalScoringError(
        f"the model returned a non-finite reward (error id {error_id}); see the server log"
    )


def _candidate(conversation: Sequence[Message], response: str) -> ScoreInput:
    if len(conversation) == 1 and conversation[0].role == "user":
        return PromptResponse(conversation[0].content, response)
    return Conversation((*conversation, Message("assistant", response)))

"""Reward functions for TRL's trainers (GRPOTrainer, RLOOTrainer...), backed by a running rmserve:

    GRPOTrainer(..., reward_funcs=[RmserveReward("http://127.0.0.1:8000")])

TRL calls them with `prompts` and `completions` (strings, or lists of chat messages when the
dataset is conversational) plus dataset columns as keyword arguments, and wants one float per
completion. Conversational pairs are sent as messages, so the server renders them with the reward
model's own chat template; plain ones as (prompt, response).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.transports import Item


def trl_items(prompts: Sequence[Any], completions: Sequence[Any]) -> list[Item]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    items: list[Item] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(prompt, str) and isinstance(completion, str):
            items.append({"prompt": prompt, "response": completion})
        else:  # conversational: a list of messages and the completion's message(s)
            completion_messages = [{"role": "assistant", "content": completion}] if isinstance(
                completion, str) else list(completion)
            items.append({"messages": [_message(m) for m in [*prompt, *completion_messages]]})
    return items


def _message(message: dict[str, Any]) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"]}


class RmserveReward:
    """A synchronous TRL reward function; `name` is what TRL logs it as."""

    def __init__(self, url: str, *, model: str | None = None, name: str = "rmserve", **options: Any) -> None:
        self.__name__ = name
        self._client = RewardClient(url, model=model, **options)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        return self._client.score(trl_items(prompts, completions))

    def close(self) -> None:
        self._client.close()


class AsyncRmserveReward:
    """The async form: TRL awaits it beside its other async reward functions. The client is made on
    the first call, on the event loop that TRL runs it in."""

    def __init__(self, url: str, *, model: str | None = None, name: str = "rmserve", **options: Any) -> None:
        self.__name__ = name
        self._url, self._options = url, {"model": model, **options}
        self._client: AsyncRewardClient | None = None

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        if self._client is None:
            self._client = AsyncRewardClient(self._url, **self._options)
        return await self._client.score(trl_items(prompts, completions))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

"""Reward functions for TRL's trainers (GRPOTrainer, RLOOTrainer...), backed by a running rmserve:

    GRPOTrainer(..., reward_funcs=[RmserveReward("http://127.0.0.1:8000")])

TRL calls them with `prompts` and `completions` (strings, or lists of chat messages when the
dataset is conversational) plus dataset columns as keyword arguments, and wants one float per
completion. Conversational pairs are sent as messages, so the server renders them with the reward
model's own chat template; plain ones as (prompt, response).

Both functions pickle (TRL's AsyncGRPOTrainer sends its reward functions to a spawned process):
the client is not part of the pickle but made on the first call in each process.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.transports import Item


def trl_items(
    prompts: Sequence[Any], completions: Sequence[Any], chat_template_kwargs: Sequence[Any] | None = None
) -> list[Item]:
    """Items for the server; `chat_template_kwargs` is the dataset column of that name (one dict
    or None per row), passed to the reward model's chat template with conversational rows."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    per_row = list(chat_template_kwargs) if chat_template_kwargs is not None else [None] * len(prompts)
    items: list[Item] = []
    for prompt, completion, kwargs in zip(prompts, completions, per_row, strict=True):
        if isinstance(prompt, str) and isinstance(completion, str):
            items.append({"prompt": prompt, "response": completion})
        else:  # conversational: a list of messages and the completion's message(s)
            completion_messages = [{"role": "assistant", "content": completion}] if isinstance(
                completion, str) else list(completion)
            item: Item = {"messages": [wire_message(m) for m in [*prompt, *completion_messages]]}
            if kwargs:
                item["chat_template_kwargs"] = dict(kwargs)
            items.append(item)
    return items


def wire_message(message: dict[str, Any]) -> dict[str, str]:
    """A chat message as the server takes it: a role and text content.

    TRL's messages may hold content as a list of parts ({"type": "text", "text": ...}) and an
    assistant turn may hold `tool_calls`; the server renders only a role and a string. Text parts
    are joined with nothing between them, as HF chat templates join them; each tool call is
    appended to the content as one line of JSON, {"name": ..., "arguments": ...}. Other fields
    (a tool message's name or tool_call_id, reasoning) are not sent.
    """
    content = text_content(message.get("content"))
    calls = message.get("tool_calls") or []
    if calls:
        lines = [json.dumps(call.get("function", call), ensure_ascii=False) for call in calls]
        content = "\n".join([content, *lines] if content else lines)
    return {"role": str(message["role"]), "content": content}


def text_content(content: Any) -> str:
    """A message's content as one string; a part that is not text is an error, not dropped,
    because the reward would then be for a conversation the model never saw."""
    if content is None:  # an assistant turn that only calls tools
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TypeError(f"message content must be a string or a list of parts, not {type(content).__name__}")
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"rmserve scores text: a {kind!r} content part cannot be sent "
                             "(remove the parts that are not text first)")
    return "".join(texts)


class RmserveReward:
    """A synchronous TRL reward function; `name` is what TRL logs it as. `options` go to
    RewardClient (api_key, timeout_s, max_retries...)."""

    def __init__(self, url: str, *, model: str | None = None, name: str = "rmserve", **options: Any) -> None:
        self.__name__ = name
        self._url, self._options = url, {"model": model, **options}
        self._client: RewardClient | None = None
        self._pid = 0  # the process the client was made in: a forked child must make its own
        self._lock = threading.Lock()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        items = trl_items(prompts, completions, columns.get("chat_template_kwargs"))
        return self._connected().score(items)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def _connected(self) -> RewardClient:
        with self._lock:  # trainers may call from worker threads: one client, not one each
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = RewardClient(self._url, **self._options), os.getpid()
            return self._client

    def __getstate__(self) -> dict[str, Any]:
        # The client's event-loop thread and the lock cannot cross processes; the next call remakes them.
        return {**self.__dict__, "_client": None, "_pid": 0, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


async def _reward_call(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """The parameters of AsyncRmserveReward.__call__, for inspect (see there); never called."""
    raise TypeError("AsyncRmserveReward's signature stand-in is not callable")


class AsyncRmserveReward:
    """The async form: TRL awaits it beside its other async reward functions. A client is made on
    the first call in each process and event loop, on the loop that TRL runs it in."""

    # TRL before 1.16 tells async reward functions apart with inspect.iscoroutinefunction(func),
    # which looks at the object, not its __call__: an async callable object would be called and
    # its coroutine never awaited ("'coroutine' object is not iterable"). inspect treats an
    # object with a function's attributes as a function (its duck typing for Cython functions),
    # so these make the check true on every Python version, and inspect.signature(instance)
    # shows __call__'s parameters (the stand-in's code has the same ones, without self).
    __code__ = _reward_call.__code__
    __defaults__ = None
    __kwdefaults__ = None

    def __init__(self, url: str, *, model: str | None = None, name: str = "rmserve", **options: Any) -> None:
        self.__name__ = name
        self._url, self._options = url, {"model": model, **options}
        self._client: AsyncRewardClient | None = None
        self._bound: tuple[int, asyncio.AbstractEventLoop] | None = None  # (pid, loop) of the client

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float]:
        items = trl_items(prompts, completions, columns.get("chat_template_kwargs"))
        return await self._connected().score(items)

    async def aclose(self) -> None:
        if self._client is not None and self._bound == (os.getpid(), asyncio.get_running_loop()):
            await self._client.close()
        self._client = self._bound = None

    def _connected(self) -> AsyncRewardClient:
        # A client's connections belong to the loop it was made on; a pickled or forked copy, or
        # a call from another loop, needs its own.
        here = (os.getpid(), asyncio.get_running_loop())
        if self._client is None or self._bound != here:
            self._client, self._bound = AsyncRewardClient(self._url, **self._options), here
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_bound": None}

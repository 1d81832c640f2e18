"""verl's custom reward function, backed by a running rmserve.

verl's config points at this file (`custom_reward_function.path`, `name: compute_score`) and passes
`custom_reward_function.reward_kwargs` (`url`, `model`, `api_key`, `timeout_s`) as keyword
arguments to every call. verl's reward managers call it once per sample with `data_source`,
`solution_str` (the decoded response), `ground_truth` and the dataset row's `extra_info`; being a
coroutine function, verl's reward loop awaits it, many samples at once. verl's older reward
managers (verl/workers/reward_manager) call the function without awaiting it: name
`compute_score_sync` for those.

verl does not pass the prompt, so it is read from `extra_info`: `prompt` (a string, or a chat as a
list of {"role", "content"} messages: put it there in your preprocessing), else `question`,
`problem` or `query` (the keys verl's example preprocessors write). The response is scored after
it as the model's formatting expects (its chat template, or a text pair).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import httpx

PROMPT_KEYS = ("prompt", "question", "problem", "query")

_Server = tuple[str, str | None]  # (base URL, API key)
# One connection pool per event loop and server: verl scores every sample of a step at once, and
# an async pool is bound to the loop that made it.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Server, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_sync_clients: dict[_Server, httpx.Client] = {}


async def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    **kwargs: Any,
) -> float:
    """The reward rmserve's model gives `solution_str` as the response to the prompt in
    `extra_info`. `data_source` and `ground_truth` are verl's, unused by a reward model; other
    keyword arguments verl adds (e.g. its reward router's address) are ignored."""
    server, body = _request(url, api_key, model, extra_info, solution_str)
    pools = _async_clients.setdefault(asyncio.get_running_loop(), {})
    if server not in pools:
        pools[server] = httpx.AsyncClient(base_url=server[0], headers=_headers(server), timeout=timeout_s)
    return _reward(await pools[server].post("/v1/score", json=body))


def compute_score_sync(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    **kwargs: Any,
) -> float:
    """compute_score for verl's reward managers that call it without awaiting (from threads)."""
    server, body = _request(url, api_key, model, extra_info, solution_str)
    if server not in _sync_clients:  # httpx.Client is safe to share between threads
        _sync_clients[server] = httpx.Client(base_url=server[0], headers=_headers(server), timeout=timeout_s)
    return _reward(_sync_clients[server].post("/v1/score", json=body))


def _request(
    url: str | None, api_key: str | None, model: str | None, extra_info: dict[str, Any] | None,
    solution_str: str,
) -> tuple[_Server, dict[str, Any]]:
    if not url:
        raise ValueError("set custom_reward_function.reward_kwargs.url to rmserve's address (http://host:8000)")
    body: dict[str, Any] = {"inputs": [_item(_prompt(extra_info), solution_str)]}
    if model:
        body["model"] = model
    return (url.rstrip("/"), api_key), body


def _headers(server: _Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server[1]}"} if server[1] else {}


def _reward(response: httpx.Response) -> float:
    if response.status_code != 200:
        raise RuntimeError(f"rmserve answered {response.status_code}: {response.text[:500]}")
    return float(response.json()["rewards"][0])


def _prompt(extra_info: dict[str, Any] | None) -> str | list[dict[str, str]]:
    for key in PROMPT_KEYS:
        value = (extra_info or {}).get(key)
        if isinstance(value, str) or (isinstance(value, list) and value):
            return value
    raise ValueError(
        f"extra_info has no prompt (looked for {', '.join(PROMPT_KEYS)}): add the prompt to each "
        "row's extra_info in your preprocessing, as a string or a list of chat messages"
    )


def _item(prompt: str | list[dict[str, str]], response: str) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {"prompt": prompt, "response": response}
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    return {"messages": [*messages, {"role": "assistant", "content": response}]}


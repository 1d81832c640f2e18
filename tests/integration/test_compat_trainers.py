"""The trainers' own requests against rmserve: OpenRLHF's /get_reward as each generation builds it
(HEAD: one sample sharded over several servers; 0.9.x: the whole batch; <= 0.8.2: padded texts),
a keyed server reached with the key in the URL, and verl's compute_score in a real call.

OpenRLHF's and verl's packages import ray, deepspeed or vllm at module level, so their request
code is rebuilt here line for line (each helper names the function it follows) rather than
imported."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import torch
from transformers import AutoTokenizer

from rmserve_client.verl import compute_score, compute_score_sync
from tests.integration.server import running_server

KEY = "rm-key-for-openrlhf-0123456789"
CHATS = [("How do I cook pasta?", "Boil it in salted water."), ("Hi", "Hello there!"),
         ("Capital of France?", "Paris."), ("Explain why the sky is blue.", "Because of scattering.")]


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--model", f"gpt2={tiny_model_dirs['gpt2-left']}",
            "--model", f"llama={tiny_model_dirs['llama-left']}",
            "--model", f"bert={tiny_model_dirs['bert-right']}"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


@pytest.fixture(scope="module")
def keyed(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--model", f"gpt2={tiny_model_dirs['gpt2-left']}"]
    with running_server(args, store=tmp_path_factory.mktemp("keyed"), env={"RMSERVE_API_KEYS": KEY},
                        probe_headers={"Authorization": f"Bearer {KEY}"}) as url:
        yield url


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dirs: dict[str, Path]) -> dict[str, Any]:
    return {name: AutoTokenizer.from_pretrained(tiny_model_dirs[f"{name}-left"])
            for name in ("gpt2", "llama")}


def v1_score_texts(url: str, texts: list[str], model: str) -> list[float]:
    answer = httpx.post(f"{url}/v1/score", json={"model": model, "inputs": [{"text": t} for t in texts]})
    assert answer.status_code == 200, answer.text
    return answer.json()["rewards"]


def close(got: list[float], expected: list[float]) -> bool:
    return len(got) == len(expected) and all(abs(a - b) <= 1e-5 for a, b in zip(got, expected, strict=True))


def rollout_ids(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """A prompt rendered with the chat template and tokenised without special tokens (as OpenRLHF
    tokenises prompts), and a response generated to its end: EOS last."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False)
    prompt_ids = tokenizer(text=text, add_special_tokens=False)["input_ids"]
    return prompt_ids, tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


async def openrlhf_head_fetch(reward_endpoints: list[str], queries: list[str], prompts: list[str],
                              labels: list[Any]) -> list[Any]:
    """SingleTurnAgentExecutor._fetch_rewards_via_http (OpenRLHF HEAD): shards the samples over the
    servers, one aiohttp session per request, raise_for_status, the JSON back."""
    num_servers = len(reward_endpoints)
    batch_size = (len(queries) + num_servers - 1) // num_servers
    timeout = aiohttp.ClientTimeout(total=180)

    async def post(url: str, data: dict[str, Any]) -> Any:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=data) as response,
        ):
            response.raise_for_status()
            return await response.json()

    tasks = []
    for i, rm in enumerate(reward_endpoints):
        start, end = i * batch_size, min((i + 1) * batch_size, len(queries))
        payload = {"query": queries[start:end], "prompts": prompts[start:end], "labels": labels[start:end]}
        tasks.append(asyncio.create_task(post(rm, payload)))
    return await asyncio.gather(*tasks)


def openrlhf_request_api_wrapper(url: str, data: dict[str, Any]) -> Any:
    """openrlhf.utils.remote_rm_utils.request_api_wrapper (0.8.x and 0.9.x): requests.post with a
    JSON content type and a 180 s timeout, raise_for_status, the JSON back (0.8.x then takes
    response["rewards"])."""
    response = requests.post(url=url, json=data, headers={"Content-Type": "application/json"}, timeout=180)
    response.raise_for_status()
    return response.json()


def test_openrlhf_head_one_sample_over_several_servers(server: str, tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["gpt2"]
    prompt, response = CHATS[0]
    prompt_ids, action_ids = rollout_ids(tokenizer, prompt, response)
    query = tokenizer.decode(prompt_ids + action_ids, skip_special_tokens=False)
    endpoints = [f"{server}/get_reward?model=gpt2"] * 3
    first, *others = asyncio.run(openrlhf_head_fetch(endpoints, [query], [prompt], [None]))
    expected = v1_score_texts(server, [query], "gpt2")
    # What HEAD reads: scores (else rewards) and extra_logs of the first answer.
    assert close(first["scores"], expected) and close(first["rewards"], expected)
    assert first["extra_logs"] == {"truncated": [0.0]}
    assert others == [{"rewards": [], "scores": [], "extra_logs": {"truncated": []}}] * 2


def test_openrlhf_0_9_whole_batch(server: str, tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["gpt2"]
    # experience_maker: batch_decode(remove_pad_token(sequences, attention_mask)), so no pads.
    rollouts = [rollout_ids(tokenizer, p, r) for p, r in CHATS]
    queries = [tokenizer.decode(p + a, skip_special_tokens=False) for p, a in rollouts]
    info = openrlhf_request_api_wrapper(f"{server}/get_reward?model=gpt2", {
        "query": queries, "prompts": [p for p, _ in CHATS], "labels": ["x"] * len(CHATS)})
    assert close(info["rewards"], v1_score_texts(server, queries, "gpt2"))
    assert info["scores"] == info["rewards"]
    # update_samples_with_rewards: every field (extra_logs too) becomes a tensor and is split per sample.
    rewards = torch.cat([torch.as_tensor(info["rewards"])]).split([2, 2])
    logs = {k: torch.cat([torch.as_tensor(v)]).split([2, 2]) for k, v in info["extra_logs"].items()}
    assert len(rewards) == 2 and logs["truncated"][0].float().mean().item() == 0.0


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_openrlhf_0_8_padded_texts_score_as_clean_ones(
    server: str, tokenizers: dict[str, Any], model: str
) -> None:
    tokenizer = tokenizers[model]
    # OpenRLHF's get_tokenizer pads with EOS where a tokenizer has no pad token (Llama's).
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rollouts = [rollout_ids(tokenizer, p, r) for p, r in CHATS]
    longest_prompt = max(len(p) for p, _ in rollouts)
    longest_action = max(len(a) for _, a in rollouts)
    # Prompts left-padded, responses right-padded, the batch decoded whole (0.8.2's experience maker).
    sequences = [[pad_id] * (longest_prompt - len(p)) + p + a + [pad_id] * (longest_action - len(a))
                 for p, a in rollouts]
    padded = tokenizer.batch_decode(sequences, skip_special_tokens=False)
    clean = [tokenizer.decode(p + a, skip_special_tokens=False) for p, a in rollouts]
    assert padded != clean
    body = {"query": padded, "prompts": [p for p, _ in CHATS], "labels": [None] * len(CHATS)}
    got = openrlhf_request_api_wrapper(f"{server}/get_reward?model={model}", body)["rewards"]
    assert close(got, v1_score_texts(server, clean, model))
    unstripped = f"{server}/get_reward?model={model}&strip_padding=false"
    as_is = openrlhf_request_api_wrapper(unstripped, body)["rewards"]
    assert close(as_is, v1_score_texts(server, padded, model)) and not close(as_is, got)


def test_get_reward_query_parameters_choose_model_normalisation_and_clip(server: str) -> None:
    texts = ["hello world", "the answer is good"]
    bert = httpx.post(f"{server}/get_reward?model=bert", json={"query": texts}).json()["rewards"]
    assert close(bert, v1_score_texts(server, texts, "bert"))
    clip = min(abs(r) for r in bert) / 2
    clipped = httpx.post(f"{server}/get_reward", params={"model": "bert", "clip": clip},
                         json={"query": texts})
    assert clipped.json()["rewards"] == [pytest.approx(clip if r > 0 else -clip) for r in bert]
    # The body's model wins over the URL's.
    assert close(httpx.post(f"{server}/get_reward?model=bert", json={"query": texts, "model": "gpt2"}).json()[
        "rewards"], v1_score_texts(server, texts, "gpt2"))
    refused = httpx.post(f"{server}/get_reward?model=bert&normalize=true", json={"query": texts})
    assert refused.status_code == 422 and "normalisation statistics" in refused.json()["error"]["message"]


def test_get_reward_logs_which_queries_were_truncated(server: str) -> None:
    long = " ".join(["word"] * 400)
    body = httpx.post(f"{server}/get_reward?model=gpt2", json={"query": ["short", long]}).json()
    assert body["extra_logs"] == {"truncated": [0.0, 1.0]}


def test_a_keyed_server_takes_the_key_from_openrlhfs_url(keyed: str) -> None:
    with_key = keyed.replace("http://", f"http://openrlhf:{KEY}@") + "/get_reward"
    first, second = asyncio.run(openrlhf_head_fetch([with_key, with_key], ["hello world"], ["hi"], [None]))
    assert len(first["rewards"]) == 1 and second["rewards"] == []
    assert len(openrlhf_request_api_wrapper(with_key, {"query": ["a", "b"], "prompts": ["a", "b"],
                                                       "labels": [None, None]})["rewards"]) == 2
    wrong = keyed.replace("http://", "http://openrlhf:not-the-key@") + "/get_reward"
    with pytest.raises(aiohttp.ClientResponseError) as refused:
        asyncio.run(openrlhf_head_fetch([wrong], ["hello world"], ["hi"], [None]))
    assert refused.value.status == 401
    assert requests.post(f"{keyed}/get_reward", json={"query": ["a"]}, timeout=30).status_code == 401


async def verl_call_with_kwargs_async(
    raw_fn: Any, extra_kwargs: dict[str, Any], *args: Any, **kwargs: Any
) -> Any:
    """verl.trainer.ppo.reward._call_with_kwargs_async: reward_kwargs merged over the call's."""
    return await raw_fn(*args, **{**kwargs, **extra_kwargs})


def test_verl_compute_score_in_a_real_call(server: str, keyed: str) -> None:
    reward_fn = partial(verl_call_with_kwargs_async, compute_score, {"url": server, "model": "gpt2"})
    extra_info = {"split": "train", "index": 0, "question": CHATS[0][0], "num_turns": None,
                  "rollout_reward_scores": {}}  # what verl's naive reward loop manager adds

    async def score_all() -> list[float]:
        # The reward loop scores a step's samples at once, with verl's keyword arguments.
        return await asyncio.gather(*(reward_fn(data_source="openai/gsm8k", solution_str=r, ground_truth="x",
                                                extra_info={**extra_info, "question": p}) for p, r in CHATS))

    got = asyncio.run(score_all())
    expected = httpx.post(f"{server}/v1/score", json={"model": "gpt2", "inputs": [
        {"prompt": p, "response": r} for p, r in CHATS]}).json()["rewards"]
    assert close(got, expected)
    chat = [{"role": "user", "content": CHATS[1][0]}]
    as_chat = asyncio.run(reward_fn(data_source="x", solution_str=CHATS[1][1], ground_truth=None,
                                    extra_info={"prompt": chat}))
    assert abs(as_chat - expected[1]) <= 1e-5
    keyed_reward = compute_score_sync("x", CHATS[1][1], None, {"question": CHATS[1][0]},
                                      url=keyed, api_key=KEY)
    assert isinstance(keyed_reward, float)
    with pytest.raises(ValueError, match="extra_info has no prompt"):
        asyncio.run(reward_fn(data_source="x", solution_str="y", ground_truth=None, extra_info={"index": 1}))

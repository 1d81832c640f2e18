"""The trainers that call rmserve: a real TRL GRPOTrainer step, and OpenRLHF's /get_reward."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from packaging.version import Version
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmserve_client import AsyncRmserveReward, RmserveReward
from rmserve_client.trl import trl_items
from tests.integration.grpo_step import grpo_step
from tests.integration.reference import reference_reward
from tests.integration.server import running_server


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--model", f"gpt2={tiny_model_dirs['gpt2-left']}",
            "--model", f"bert={tiny_model_dirs['bert-right']}"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def items_scored(url: str, model: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf'rmserve_items_total{{model="{model}",version="local"}} (\S+)', text)
    return float(found[1]) if found else 0.0


def lowest_trl() -> str:
    """The lowest TRL that pyproject.toml's train extra allows (`trl>=X`)."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pin = next(d for d in pyproject["project"]["optional-dependencies"]["train"] if d.startswith("trl"))
    return pin.removeprefix("trl>=")


@pytest.fixture(scope="module")
def trl_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """PYTHONPATH for each TRL tested: the installed one (the newest the pin allows, as .ci/setup
    installs it) and the lowest the pin allows, installed without dependencies into a folder."""
    folder = tmp_path_factory.mktemp("trl-lowest")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
         f"trl=={lowest_trl()}"], capture_output=True, text=True, timeout=300)
    return {"installed": None, "lowest": str(folder) if install.returncode == 0 else None,
            "lowest-error": install.stderr[-500:]}


def _step_in_subprocess(server: str, tokenizer_dir: Path, out: Path, pythonpath: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([pythonpath, str(Path(__file__).parents[2])])}
    done = subprocess.run([sys.executable, "-m", "tests.integration.grpo_step", server, str(tokenizer_dir),
                           str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", ["installed", "lowest"])
def test_one_grpo_training_step_with_rewards_from_rmserve(
    version: str, server: str, tiny_model_dirs: dict[str, Path], tmp_path: Path,
    trl_versions: dict[str, str | None],
) -> None:
    """Both reward functions in one GRPOTrainer step. The lowest TRL (1.0) awaits a reward function
    only if inspect.iscoroutinefunction(func) is true of the object itself."""
    before = items_scored(server, "gpt2")
    if version == "installed":
        result = grpo_step(server, tiny_model_dirs["gpt2-left"], tmp_path)
    else:
        folder = trl_versions["lowest"]
        if folder is None:
            pytest.skip(f"could not install trl=={lowest_trl()}: {trl_versions['lowest-error']}")
        result = _step_in_subprocess(server, tiny_model_dirs["gpt2-left"], tmp_path, folder)
        assert Version(result["trl"]) == Version(lowest_trl()) and result["trl_path"].startswith(folder)

    logged = result["logged"]
    for name in ("rmserve_sync", "rmserve_async"):
        assert math.isfinite(logged[f"rewards/{name}/mean"]) and logged[f"rewards/{name}/mean"] != 0
    # Both functions gave the same rewards for the same completions, and the server scored them.
    sync, async_ = logged["rewards/rmserve_sync/mean"], logged["rewards/rmserve_async/mean"]
    assert sync == pytest.approx(async_, abs=1e-5)
    assert items_scored(server, "gpt2") - before == 2 * 4


def _score_in_child(reward: Any, prompts: list[str], completions: list[str]) -> list[float]:
    """Run in a spawned process, as AsyncGRPOTrainer runs its reward functions."""
    if inspect.iscoroutinefunction(reward):
        return asyncio.run(reward(prompts=prompts, completions=completions))
    return reward(prompts=prompts, completions=completions)


@pytest.mark.parametrize("kind", [RmserveReward, AsyncRmserveReward])
def test_reward_functions_pickle_and_score_after_the_round_trip(server: str, kind: type) -> None:
    prompts, completions = ["Capital of France?", "Hi"], ["Paris.", "Hello!"]
    expected = httpx.post(f"{server}/v1/score", json={"model": "gpt2", "inputs": trl_items(
        prompts, completions)}).json()["rewards"]
    reward = kind(server, model="gpt2", name="rm", api_key=None)
    used = _score_in_child(reward, prompts, completions)  # a client exists now: it is not pickled
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "rm" and used == expected
    assert _score_in_child(copy, prompts, completions) == expected
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # pickled into a fresh interpreter
        assert pool.apply(_score_in_child, (reward, prompts, completions)) == pytest.approx(expected)
    if kind is RmserveReward:
        reward.close()
        copy.close()


def test_content_parts_and_tool_calls_are_scored_as_the_text_they_stand_for(server: str) -> None:
    """Once 422 from the server (content must be a string, no tool_calls field): now sent as
    text. A per-row chat_template_kwargs column reaches the function and is not sent."""
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
    prompts = [[{"role": "user", "content": [{"type": "text", "text": "Weather in "},
                                             {"type": "text", "text": "Paris?"}]}]]
    completions = [[{"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "name": "weather", "content": "18 C"},
                    {"role": "assistant", "content": [{"type": "text", "text": "It is 18 C."}]}]]
    got = asyncio.run(AsyncRmserveReward(server, model="gpt2")(
        prompts=prompts, completions=completions, chat_template_kwargs=[{"enable_thinking": False}]))
    as_text = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": json.dumps(call["function"])},
               {"role": "tool", "content": "18 C"}, {"role": "assistant", "content": "It is 18 C."}]
    expected = httpx.post(f"{server}/v1/score", json={"model": "gpt2", "inputs": [{"messages": as_text}]})
    assert got == expected.json()["rewards"]


def test_conversational_trl_inputs_are_scored_with_the_chat_template(
    server: str, tiny_model_dirs: dict[str, Path]
) -> None:
    """TRL's conversational prompts and completions get the rewards of the text that the reward
    model's own tokenizer.apply_chat_template renders for them."""
    prompts = [[{"role": "user", "content": "Capital of France?"}], [{"role": "user", "content": "Hi"}]]
    completions = [[{"role": "assistant", "content": "Paris."}], "Hello!"]
    items = trl_items(prompts, completions)
    hello = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert items[1] == {"messages": hello}
    reward = AsyncRmserveReward(server, model="gpt2")
    got = asyncio.run(reward(prompts=prompts, completions=completions, ground_truth=["x", "y"]))
    expected = httpx.post(f"{server}/v1/score", json={"model": "gpt2", "inputs": items}).json()["rewards"]
    assert got == expected

    folder = tiny_model_dirs["gpt2-left"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    conversations = [[*prompts[0], *completions[0]], hello]
    rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    assert rendered[1] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    def reward_of(*texts: str, **encoding: bool) -> float:  # unbatched model(**inputs).logits
        with torch.inference_mode():
            return model(**tokenizer(*texts, return_tensors="pt", **encoding)).logits[0, 0].item()

    templated = [reward_of(text, add_special_tokens=False) for text in rendered]
    plain = [reward_of(c[0]["content"], c[1]["content"]) for c in conversations]
    assert max(abs(a - b) for a, b in zip(got, templated, strict=True)) <= 1e-5, (got, templated)
    # Without the template these texts get other rewards, so the comparison can tell them apart.
    assert min(abs(a - b) for a, b in zip(plain, templated, strict=True)) > 1e-3, (plain, templated)


def test_openrlhf_get_reward_scores_each_query_as_formatted_text(
    server: str, tiny_model_dirs: dict[str, Path]
) -> None:
    chatml = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n"
    queries = [chatml.format("How do I cook pasta?", "Boil it."), chatml.format("Hi", "Hello there!")]
    body = {"query": queries, "prompts": ["How do I cook pasta?", "Hi"], "labels": [None, None],
            "model": "gpt2", "extra_key_from_a_newer_openrlhf": 1}
    answer = httpx.post(f"{server}/get_reward", json=body)
    assert answer.status_code == 200, answer.text
    folder = tiny_model_dirs["gpt2-left"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, {"text": q}) for q in queries]
    rewards = answer.json()["rewards"]
    assert max(abs(a - b) for a, b in zip(rewards, expected, strict=True)) <= 1e-4
    assert answer.json()["scores"] == rewards


def test_openrlhf_get_reward_uses_the_default_model_and_answers_empty_queries(server: str) -> None:
    assert len(httpx.post(f"{server}/get_reward", json={"query": ["some text"]}).json()["rewards"]) == 1
    # OpenRLHF sends its later reward servers an empty query when it has fewer samples than servers.
    empty = httpx.post(f"{server}/get_reward", json={"query": []})
    assert empty.status_code == 200
    assert empty.json() == {"rewards": [], "scores": [], "extra_logs": {"truncated": []}}
    missing = httpx.post(f"{server}/get_reward", json={"prompts": []})
    assert missing.status_code == 422 and "query" in missing.json()["error"]["message"]

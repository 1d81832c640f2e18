"""The trainers that call rmserve: a real TRL GRPOTrainer step, and OpenRLHF's /get_reward."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from rmserve_client import AsyncRmserveReward, RmserveReward
from rmserve_client.trl import trl_items
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


def test_one_grpo_training_step_with_rewards_from_rmserve(
    server: str, tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["gpt2-left"])
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ))
    prompts = Dataset.from_dict({"prompt": ["How do I cook pasta?", "Explain why the sky is blue.",
                                            "Write a python function.", "Travel tips for Paris?"]})
    config = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, learning_rate=1e-3, logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", bf16=False, seed=0,
    )
    rewards = [RmserveReward(server, model="gpt2", name="rmserve_sync"),
               AsyncRmserveReward(server, model="gpt2", name="rmserve_async")]
    before = items_scored(server, "gpt2")
    trainer = GRPOTrainer(model=policy, reward_funcs=rewards, args=config, train_dataset=prompts,
                          processing_class=tokenizer)
    trainer.train()
    rewards[0].close()

    logged = trainer.state.log_history[0]
    for name in ("rmserve_sync", "rmserve_async"):
        assert math.isfinite(logged[f"rewards/{name}/mean"]) and logged[f"rewards/{name}/mean"] != 0
    # Both functions gave the same rewards for the same completions, and the server scored them.
    sync, async_ = logged["rewards/rmserve_sync/mean"], logged["rewards/rmserve_async/mean"]
    assert sync == pytest.approx(async_, abs=1e-5)
    assert items_scored(server, "gpt2") - before == 2 * 4


def test_conversational_trl_inputs_are_scored_with_the_chat_template(server: str) -> None:
    prompts = [[{"role": "user", "content": "Capital of France?"}], [{"role": "user", "content": "Hi"}]]
    completions = [[{"role": "assistant", "content": "Paris."}], "Hello!"]
    items = trl_items(prompts, completions)
    hello = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert items[1] == {"messages": hello}
    reward = AsyncRmserveReward(server, model="gpt2")
    got = asyncio.run(reward(prompts=prompts, completions=completions, ground_truth=["x", "y"]))
    expected = httpx.post(f"{server}/v1/score", json={"model": "gpt2", "inputs": items}).json()["rewards"]
    assert got == expected


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


def test_openrlhf_get_reward_uses_the_default_model_and_rejects_empty_queries(server: str) -> None:
    assert len(httpx.post(f"{server}/get_reward", json={"query": ["some text"]}).json()["rewards"]) == 1
    empty = httpx.post(f"{server}/get_reward", json={"query": []})
    assert empty.status_code == 422
    assert "query" in empty.json()["error"]["message"]

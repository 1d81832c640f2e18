"""chat_template_kwargs (TRL's dataset column, vLLM's request field) reach the reward model's own
chat template: rewards equal the reference of the text that template renders with them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmserve_client.trl import trl_items
from tests.integration.reference import reference_reward
from tests.integration.server import running_server

# ChatML with a thinking switch, as Qwen3-style templates have.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if enable_thinking %}<|im_start|>think\nstep by step<|im_end|>\n{% endif %}"
)
MESSAGES = [{"role": "user", "content": "How do I boil an egg?"},
            {"role": "assistant", "content": "Simmer it for nine minutes."}]


@pytest.fixture(scope="module")
def thinking_model(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("thinking") / "gpt2"
    shutil.copytree(tiny_model_dirs["gpt2-right"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = THINKING_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def url(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(["--model", f"rm={thinking_model}"], store=tmp_path_factory.mktemp("store")) as base:
        yield base


def _score(url: str, item: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json={"inputs": [item]}, timeout=60)


def test_the_kwargs_reach_the_models_template(url: str, thinking_model: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(thinking_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    rewards = {}
    for thinking in (True, False):
        item = {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": thinking}}
        response = _score(url, item)
        assert response.status_code == 200, response.text
        rewards[thinking] = response.json()["rewards"][0]
        assert abs(rewards[thinking] - reference_reward(model, tokenizer, item)) <= 1e-5
    assert abs(rewards[True] - rewards[False]) > 1e-6  # the variable changed what the model saw


def test_trl_functions_send_the_dataset_column(url: str) -> None:
    prompts, completions = [MESSAGES[:1]] * 2, [MESSAGES[1:]] * 2
    items = trl_items(prompts, completions, [{"enable_thinking": True}, None])
    assert items[0]["chat_template_kwargs"] == {"enable_thinking": True}
    assert "chat_template_kwargs" not in items[1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"chat_template": "{{ 'forged' }}"}, "chat_template cannot be set by a request"),
    ({"tokenize": True}, "tokenize cannot be set by a request"),
    ({"not an identifier": 1}, "chat_template_kwargs"),
    ({"deep": {"nested": 1}}, "chat_template_kwargs"),
])
def test_arguments_of_the_renderer_itself_are_refused(url: str, kwargs: dict[str, Any], message: str) -> None:
    response = _score(url, {"messages": MESSAGES, "chat_template_kwargs": kwargs})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]

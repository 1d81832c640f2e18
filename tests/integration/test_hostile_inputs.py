"""Hostile but well-formed requests against a real server: each gets a bounded answer (a 4xx
saying what to fix, or a 200 with the right reward), and none takes other clients' rows down."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.fixtures.tiny_models import build_tiny_strict_chatml
from tests.integration.reference import WORDS, reference_reward
from tests.integration.server import running_server

TOLERANCE = 1e-5
MODELS = ("bert", "gpt2", "llama")


def _claims_1000_tokens(source: Path, folder: Path) -> Path:
    """A copy of a tiny model whose tokenizer says 1,000 tokens; the model has 128 positions."""
    shutil.copytree(source, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["model_max_length"] = 1000
    config_file.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def folders(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-models")
    return {
        "bert": tiny_model_dirs["bert-right"], "gpt2": tiny_model_dirs["gpt2-left"],
        "llama": tiny_model_dirs["llama-left"], "strict": build_tiny_strict_chatml(root / "strict"),
        "bert-1000": _claims_1000_tokens(tiny_model_dirs["bert-right"], root / "bert-1000"),
        "gpt2-1000": _claims_1000_tokens(tiny_model_dirs["gpt2-left"], root / "gpt2-1000"),
    }


@pytest.fixture(scope="module")
def url(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    args = [arg for name, path in folders.items() for arg in ("--model", f"{name}={path}")]
    # Small batches and a wait window: concurrent requests share passes, and a request's items
    # are spread over several.
    with running_server([*args, "--max-wait-ms", "20", "--max-batch-pairs", "3"],
                        store=tmp_path_factory.mktemp("store")) as base:
        yield base


def post_raw(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """JSON with \\uXXXX escapes (ensure_ascii), the way a client sends a lone surrogate."""
    return httpx.post(url + path, content=json.dumps(body).encode("ascii"),
                      headers={"content-type": "application/json"}, timeout=60)


def assert_invalid(response: httpx.Response, *needles: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input", error
    for needle in needles:
        assert needle in error["message"], error["message"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("item", "field"), [
    ({"prompt": "fine", "response": "bad \ud800 text"}, "inputs[1].response"),
    ({"prompt": "\udfff", "response": "fine"}, "inputs[1].prompt"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x\udbff"}]},
     "inputs[1].messages[1].content"),
    ({"messages": [{"role": "user\ud800", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "inputs[1].messages[0].role"),
    ({"text": "raw \udc00"}, "inputs[1].text"),
])
def test_a_lone_surrogate_is_a_422_naming_the_item_and_field(
    url: str, model: str, item: dict, field: str
) -> None:
    body = {"model": model, "inputs": [{"prompt": "fine", "response": "fine"}, item]}
    response = post_raw(url, "/v1/score", body)
    if field.endswith("role") and response.json()["error"]["type"] == "invalid_request":
        # The wire schema may refuse such a role first; a 422 naming the field either way.
        assert response.status_code == 422 and "role" in response.json()["error"]["message"]
        return
    assert_invalid(response, field, "lone surrogate", "valid UTF-8")


@pytest.mark.parametrize("path", ["/v1/compare", "/v1/rank"])
def test_a_lone_surrogate_in_a_candidate_is_a_422_too(url: str, path: str) -> None:
    body: dict[str, Any] = {"model": "gpt2", "prompt": "hi"}
    if path == "/v1/compare":
        body.update({"a": "fine", "b": "bad \ud800"})
    else:
        body["responses"] = ["ok", "\ud800"]
    assert_invalid(post_raw(url, path, body), "inputs[1].response", "lone surrogate")


@pytest.mark.parametrize(("messages", "reason"), [
    ([("assistant", "I speak first"), ("user", "hm")], "roles must alternate"),
    ([("system", "be nice")], "needs a user turn"),
    ([("user", "a"), ("user", "b")], "roles must alternate"),
    ([("user", "a"), ("assistant", "b"), ("assistant", "c")], "roles must alternate"),
    ([("user", "a"), ("tool", "b")], "roles must alternate"),
])
def test_a_strict_template_refusing_the_messages_is_a_422(url: str, messages: list, reason: str) -> None:
    conversation = [{"role": role, "content": content} for role, content in messages]
    body = {"model": "strict", "inputs": [{"prompt": "ok", "response": "ok"}, {"messages": conversation}]}
    assert_invalid(httpx.post(f"{url}/v1/score", json=body, timeout=60),
                   "inputs[1]", "chat template refuses these messages", reason)


def test_a_strict_template_refusal_through_rank_and_the_accepted_order_still_scores(url: str) -> None:
    refused = httpx.post(f"{url}/v1/rank", json={
        "model": "strict", "responses": ["x", "y"],
        "messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
    }, timeout=60)
    assert_invalid(refused, "inputs[0]", "chat template refuses")
    accepted = httpx.post(f"{url}/v1/score", json={"model": "strict", "inputs": [{"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"}]}]}, timeout=60)
    assert accepted.status_code == 200, accepted.text


def _pair_of_length(tokenizer: Any, tokens: int) -> dict[str, str]:
    """A prompt-response pair of exactly `tokens` tokens ([CLS] p [SEP] r [SEP], one per word)."""
    words = [WORDS[i % len(WORDS)] for i in range(tokens - 5)]
    item = {"prompt": " ".join(words), "response": "good answer"}
    assert len(tokenizer(item["prompt"], item["response"])["input_ids"]) == tokens
    return item


def test_a_model_with_fewer_positions_than_its_tokenizer_claims_serves_both_lengths(
    url: str, folders: dict[str, Path]
) -> None:
    """The repro: a tokenizer saying 1,000 tokens, a model of 128 positions, 122- and 137-token
    items at once. Both get 200: the short one its reference reward, the long one truncated to
    128 tokens (from the prompt's left) with the reference reward of what was kept."""
    tokenizer = AutoTokenizer.from_pretrained(folders["bert-1000"])
    model = AutoModelForSequenceClassification.from_pretrained(folders["bert-1000"]).eval()
    short, long = _pair_of_length(tokenizer, 122), _pair_of_length(tokenizer, 137)
    kept = {"prompt": " ".join(long["prompt"].split()[137 - 128:]), "response": long["response"]}

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(
                client.post("/v1/score", json={"model": "bert-1000", "inputs": [item]})
                for item in (short, long)
            ))

    responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    short_body, long_body = (r.json() for r in responses)
    assert short_body["truncated"] == [False] and long_body["truncated"] == [True]
    assert abs(short_body["rewards"][0] - reference_reward(model, tokenizer, short)) <= TOLERANCE
    assert abs(long_body["rewards"][0] - reference_reward(model, tokenizer, kept)) <= TOLERANCE
    listed = {m["name"]: m for m in httpx.get(f"{url}/v1/models", timeout=10).json()["models"]}
    assert listed["bert-1000"]["max_length"] == 128 and listed["gpt2-1000"]["max_length"] == 128


def test_a_decoder_with_fewer_positions_truncates_rather_than_failing_its_batch(url: str) -> None:
    long_text = " ".join(WORDS * 4)

    async def mixed() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(
                client.post("/v1/score", json={"model": "gpt2-1000", "inputs": [{"text": long_text}]}),
                client.post("/v1/score", json={"model": "gpt2-1000", "inputs": [{"text": "hello world"}]}),
            )

    long, short = asyncio.run(mixed())
    assert long.status_code == 200 and short.status_code == 200, (long.text, short.text)
    assert long.json()["truncated"] == [True] and short.json()["truncated"] == [False]


@pytest.mark.parametrize("model", MODELS)
def test_compare_of_identical_responses_is_an_exact_tie_preferring_a(url: str, model: str) -> None:
    """a == b: the same reward to the last bit, so probability 0.5 and the documented tie rule,
    even while other requests share (and split) the batches."""
    answer = "because the pasta is good and you should cook it " * 2

    async def compare_under_load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            noise = [client.post("/v1/score", json={"model": model, "inputs": [
                {"prompt": "why", "response": " ".join(WORDS[i : i + 9])} for i in range(3)]})
                for _ in range(4)]
            tie = {"model": model, "prompt": "why", "a": answer, "b": answer}
            compares = [client.post("/v1/compare", json=tie) for _ in range(4)]
            return (await asyncio.gather(*noise, *compares))[4:]

    for response in asyncio.run(compare_under_load()):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rewards"][0] == body["rewards"][1]
        assert body["probability_a"] == 0.5 and body["preferred"] == "a"


@pytest.mark.parametrize("model", MODELS)
def test_identical_items_of_one_request_get_identical_rewards(url: str, model: str) -> None:
    same = {"prompt": "tell me why", "response": "because it is good"}
    others = [{"prompt": "tell me why", "response": " ".join(WORDS[i : i + 7])} for i in range(5)]
    inputs = [same, *others[:2], same, *others[2:], same]
    response = httpx.post(f"{url}/v1/score", json={"model": model, "inputs": inputs}, timeout=60)
    assert response.status_code == 200, response.text
    rewards = response.json()["rewards"]
    assert rewards[0] == rewards[3] == rewards[-1]

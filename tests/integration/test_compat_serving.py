"""vLLM's and TEI's APIs on rmserve: each request built as those projects' clients build it, each
answer checked field by field against what they document, each reward against /v1/score's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.server import running_server

PROMPT = "How do I cook pasta?"
RESPONSES = ["Boil it in salted water.", "sorry cannot help", "python code function explain"]
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # bert first: the default model, which TEI's routes (they name none) score with.
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--model", f"gpt2={tiny_model_dirs['gpt2-left']}", "--max-inputs-per-request", "8"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30)


def rewards(url: str, inputs: list[dict[str, Any]], model: str = "bert") -> list[float]:
    """What rmserve's own /v1/score gives (checked against an unbatched reference elsewhere)."""
    answer = post(url, "/v1/score", {"model": model, "inputs": inputs})
    assert answer.status_code == 200, answer.text
    return answer.json()["rewards"]


def pairs(prompt: str, responses: list[str]) -> list[dict[str, str]]:
    return [{"prompt": prompt, "response": r} for r in responses]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def close(got: list[float], expected: list[float]) -> bool:
    return len(got) == len(expected) and all(abs(a - b) <= 1e-5 for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_vllm_classify_answers_vllms_fields_with_the_reward_as_its_one_logit(server: str, model: str) -> None:
    texts = ["hello world", "the answer is good"]
    answer = post(server, "/classify", {"model": model, "input": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["id"].startswith("classify-") and body["object"] == "list" and body["model"] == model
    assert isinstance(body["created"], int)
    for index, item in enumerate(body["data"]):
        assert item.keys() == {"index", "label", "probs", "num_classes"}
        assert item["index"] == index and item["label"] == "LABEL_0" and item["num_classes"] == 1
    expected = rewards(server, [{"text": t} for t in texts], model)
    assert close([item["probs"][0] for item in body["data"]], expected)
    tokens = post(server, "/v1/score", {"model": model, "inputs": [{"text": t} for t in texts]}).json()
    used = tokens["usage"]["tokens"]
    assert body["usage"] == {"prompt_tokens": used, "total_tokens": used, "completion_tokens": 0,
                             "prompt_tokens_details": None}
    # One string is one item; use_activation gives the sigmoid.
    single = post(server, "/classify", {"model": model, "input": texts[0], "use_activation": True}).json()
    assert close(single["data"][0]["probs"], [sigmoid(expected[0])])


def test_vllm_classify_scores_a_chat_with_the_models_template(server: str) -> None:
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": RESPONSES[0]}]
    body = post(server, "/classify", {"model": "gpt2", "messages": messages}).json()
    assert close(body["data"][0]["probs"], rewards(server, [{"messages": messages}], "gpt2"))


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize(("first", "second"), [("text_1", "text_2"), ("queries", "documents")])
def test_vllm_score_gives_the_reward_of_each_prompt_response_pair(
    server: str, path: str, first: str, second: str
) -> None:
    # 1:N, as vLLM pairs one text_1 with each text_2.
    answer = post(server, path, {"model": "gpt2", first: PROMPT, second: RESPONSES})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["object"] == "list" and body["model"] == "gpt2"
    assert [item.keys() for item in body["data"]] == [{"index", "object", "score"}] * 3
    assert [item["object"] for item in body["data"]] == ["score"] * 3
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert close([item["score"] for item in body["data"]], rewards(server, pairs(PROMPT, RESPONSES), "gpt2"))
    # N:N, pairwise.
    prompts = ["Hi", "Capital of France?"]
    both = post(server, path, {"model": "gpt2", first: prompts, second: ["Hello!", "Paris."]}).json()
    expected = rewards(server, [{"prompt": "Hi", "response": "Hello!"},
                                {"prompt": "Capital of France?", "response": "Paris."}], "gpt2")
    assert close([item["score"] for item in both["data"]], expected)


def test_v1_score_keeps_rmserves_own_shape_and_openapi(server: str) -> None:
    body = post(server, "/v1/score", {"inputs": [{"text": "hello"}]}).json()
    assert set(body) == {"model", "version", "rewards", "truncated", "usage"}
    refused = post(server, "/v1/score", {"inputs": [{"txt": "hello"}]})
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "invalid_request"
    schema = httpx.get(f"{server}/openapi.json").json()["paths"]["/v1/score"]["post"]
    assert schema["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScoreRequest")
    # A vLLM body with one side missing is vLLM's bad request, in vLLM's shape.
    bad = post(server, "/v1/score", {"text_1": PROMPT})
    assert bad.status_code == 400 and bad.json()["error"].keys() == OPENAI_ERROR_KEYS
    assert bad.json()["error"]["type"] == "BadRequestError" and bad.json()["error"]["code"] == 400


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_vllm_rerank_orders_documents_by_reward(server: str, path: str) -> None:
    answer = post(server, path, {"model": "gpt2", "query": PROMPT, "documents": RESPONSES, "top_n": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "model", "usage", "results"} and body["model"] == "gpt2"
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    expected = rewards(server, pairs(PROMPT, RESPONSES), "gpt2")
    best = sorted(range(3), key=lambda i: -expected[i])[:2]
    assert [r["index"] for r in body["results"]] == best
    for result in body["results"]:
        assert set(result) == {"index", "document", "relevance_score"}
        assert result["document"] == {"text": RESPONSES[result["index"]]}
        assert abs(result["relevance_score"] - expected[result["index"]]) <= 1e-5


def test_vllm_errors_are_openai_shaped(server: str) -> None:
    unknown = post(server, "/classify", {"model": "nope", "input": "hi"})
    assert unknown.status_code == 404
    message = unknown.json()["error"]["message"]
    expected = {"message": message, "type": "NotFoundError", "param": None, "code": 404}
    assert unknown.json() == {"error": expected}
    wrong = post(server, "/rerank", {"query": PROMPT, "documents": "not a list"})
    assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "BadRequestError"
    too_many = post(server, "/score", {"text_1": PROMPT, "text_2": ["x"] * 9})
    assert too_many.status_code == 400 and "limit is 8" in too_many.json()["error"]["message"]


def test_v1_models_is_openais_list_with_rmserves_fields_alongside(server: str) -> None:
    body = httpx.get(f"{server}/v1/models").json()
    assert body["object"] == "list" and [card["id"] for card in body["data"]] == ["bert", "gpt2"]
    for card in body["data"]:
        assert card["object"] == "model" and card["owned_by"] == "rmserve"
        assert isinstance(card["created"], int)
        assert card["max_model_len"] > 0
    assert [m["name"] for m in body["models"]] == ["bert", "gpt2"] and body["max_inputs_per_request"] == 8


def test_tei_predict_answers_one_prediction_per_sequence(server: str) -> None:
    expected = rewards(server, [{"text": "hello world"}, {"prompt": PROMPT, "response": RESPONSES[0]}])
    single = post(server, "/predict", {"inputs": "hello world"})
    assert single.status_code == 200, single.text
    assert single.json() == [{"score": pytest.approx(sigmoid(expected[0]), abs=1e-5), "label": "LABEL_0"}]
    raw = post(server, "/predict", {"inputs": "hello world", "raw_scores": True}).json()
    assert raw[0]["score"] == pytest.approx(expected[0], abs=1e-5)
    pair = post(server, "/predict", {"inputs": [PROMPT, RESPONSES[0]], "raw_scores": True}).json()
    assert pair[0]["score"] == pytest.approx(expected[1], abs=1e-5)
    batch = post(server, "/predict", {"inputs": [["hello world"], [PROMPT, RESPONSES[0]]], "raw_scores": True,
                                      "truncate": True, "truncation_direction": "Right"}).json()
    assert [[set(p) for p in one] for one in batch] == [[{"score", "label"}]] * 2
    assert close([one[0]["score"] for one in batch], expected)


def test_tei_rerank_answers_index_and_score_best_first(server: str) -> None:
    expected = rewards(server, pairs(PROMPT, RESPONSES))
    order = sorted(range(3), key=lambda i: -expected[i])
    body = post(server, "/rerank", {"query": PROMPT, "texts": RESPONSES}).json()
    assert [set(rank) for rank in body] == [{"index", "score"}] * 3
    assert [rank["index"] for rank in body] == order
    assert close([rank["score"] for rank in body], [sigmoid(expected[i]) for i in order])
    raw = post(server, "/rerank", {"query": PROMPT, "texts": RESPONSES, "raw_scores": True,
                                   "return_text": True}).json()
    assert [rank["text"] for rank in raw] == [RESPONSES[i] for i in order]
    assert close([rank["score"] for rank in raw], [expected[i] for i in order])


def test_tei_errors_info_and_health_are_teis(server: str) -> None:
    empty = post(server, "/rerank", {"query": PROMPT, "texts": []})
    assert (empty.status_code, empty.json()) == (400, {"error": "batch is empty", "error_type": "Empty"})
    bad = post(server, "/predict", {"inputs": ["a", "b", "c"]})
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation" and set(bad.json()) == {
        "error", "error_type"}
    too_many = post(server, "/rerank", {"query": PROMPT, "texts": ["x"] * 9})
    assert too_many.status_code == 422 and too_many.json()["error_type"] == "Validation"
    info = httpx.get(f"{server}/info").json()
    assert info["model_id"] == "bert" and info["served_model_name"] == "bert"
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert info["max_client_batch_size"] == 8 and info["max_input_length"] > 0
    expected = {"model_dtype", "max_batch_tokens", "auto_truncate", "tokenization_workers", "version"}
    assert expected <= set(info)
    health = httpx.get(f"{server}/health")
    assert health.status_code == 200 and health.content == b""

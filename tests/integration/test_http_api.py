"""The HTTP API over the wire: shapes, errors with status codes, readiness, metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.server import running_server


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--model", f"llama={tiny_model_dirs['llama-left']}",
            "--max-inputs-per-request", "50", "--max-body-bytes", "65536"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30)


def test_score_returns_one_reward_per_input_from_the_default_model(server: str) -> None:
    inputs = [{"prompt": "hello", "response": "world"}, {"text": "hello world"},
              {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    body = post(server, "/v1/score", {"inputs": inputs}).json()
    assert body["model"] == "bert" and body["version"] == "local"
    assert len(body["rewards"]) == 3 and body["truncated"] == [False] * 3
    assert body["usage"]["tokens"] > 0


def test_rank_orders_candidates_best_first(server: str) -> None:
    responses = ["good answer", "sorry cannot help", "python code function explain"]
    body = post(server, "/v1/rank", {"prompt": "explain python", "responses": responses,
                                     "model": "llama"}).json()
    rewards = body["rewards"]
    assert sorted(range(3), key=lambda i: -rewards[i]) == body["ranking"]
    assert body["best"] == body["ranking"][0]
    scored = post(server, "/v1/score", {"model": "llama", "inputs": [
        {"prompt": "explain python", "response": r} for r in responses]}).json()
    assert scored["rewards"] == pytest.approx(rewards, abs=1e-5)
    top = post(server, "/v1/rank", {"prompt": "x", "responses": responses, "top_k": 1}).json()
    assert len(top["ranking"]) == 1


def test_long_inputs_are_truncated_from_the_left_of_the_prompt(server: str) -> None:
    long_prompt = " ".join(["question"] * 400)
    body = post(server, "/v1/score", {"model": "llama", "inputs": [
        {"prompt": long_prompt, "response": "short answer"},
        {"prompt": "the end of the question", "response": "short answer"},
    ]}).json()
    assert body["truncated"] == [True, False]


def test_models_lists_every_loaded_model(server: str) -> None:
    cards = httpx.get(f"{server}/v1/models").json()["models"]
    assert {c["name"] for c in cards} == {"bert", "llama"}
    assert all(c["device"] == "cpu" and c["dtype"] == "float32" and c["backend"] == "torch"
               for c in cards)


def test_health_and_readiness(server: str) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize(("body", "field"), [
    ({"inputs": [{"prompt": "x"}]}, "inputs.0"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"prompt": "x", "response": "y", "extra": 1}]}, "inputs.0"),
    ({"input": [{"text": "x"}]}, "inputs"),
    ({"inputs": [{"text": 5}]}, "inputs.0"),
])
def test_invalid_bodies_get_422_naming_the_field(server: str, body: object, field: str) -> None:
    response = post(server, "/v1/score", body)
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


def test_rank_needs_exactly_one_of_prompt_or_messages(server: str) -> None:
    response = post(server, "/v1/rank", {"responses": ["a"]})
    assert response.status_code == 422
    assert "prompt" in response.json()["error"]["message"]


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"{not json"])
def test_undecodable_bodies_get_422(server: str, content: bytes) -> None:
    response = httpx.post(f"{server}/v1/score", content=content,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not valid UTF-8 JSON" in response.json()["error"]["message"]


def test_unknown_model_gets_404_naming_loaded_models(server: str) -> None:
    response = post(server, "/v1/score", {"model": "nope", "inputs": [{"text": "x"}]})
    assert response.status_code == 404
    assert "bert" in response.json()["error"]["message"]


def test_too_many_inputs_gets_413_with_the_limit(server: str) -> None:
    response = post(server, "/v1/score", {"inputs": [{"text": "x"}] * 51})
    assert response.status_code == 413
    assert "50" in response.json()["error"]["message"]


def test_body_over_the_limit_gets_413(server: str) -> None:
    response = post(server, "/v1/score", {"inputs": [{"text": "x" * 70000}]})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"


def test_metrics_expose_requests_latency_batches_and_queue(server: str) -> None:
    post(server, "/v1/score", {"inputs": [{"text": "x"}]})
    text = httpx.get(f"{server}/metrics").text
    for name in ("rmserve_requests_total", "rmserve_request_duration_seconds_bucket",
                 "rmserve_batch_size_bucket", "rmserve_queue_depth", "rmserve_model_info"):
        assert name in text, name
    assert 'rmserve_requests_total{code="200",endpoint="/v1/score",model="bert",version="local"}' in text


def test_openapi_docs_are_served(server: str) -> None:
    assert httpx.get(f"{server}/docs").status_code == 200
    assert "/v1/score" in httpx.get(f"{server}/openapi.json").json()["paths"]


def test_a_model_that_fails_to_load_is_not_ready_and_says_why(tmp_path: Path,
                                                              tiny_model_dirs: dict[str, Path]) -> None:
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dirs["bert-right"], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with running_server(["--model", str(broken)], store=tmp_path / "store", wait_ready=False) as url:
        for _ in range(100):
            ready = httpx.get(f"{url}/readyz")
            if "failed" in ready.text:
                break
            import time
            time.sleep(0.1)
        assert ready.status_code == 503 and "failed" in ready.json()["error"]["message"]
        scored = post(url, "/v1/score", {"inputs": [{"text": "x"}]})
        assert scored.status_code == 503 and scored.headers["retry-after"]


def test_a_full_queue_answers_429_with_retry_after_and_loses_nothing(
    tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    import asyncio

    args = ["--model", str(tiny_model_dirs["bert-right"]), "--max-queue-items", "2",
            "--max-wait-ms", "50"]

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/v1/score", json={"inputs": [{"text": f"item {i}"}]}) for i in range(40)
            ))

    with running_server(args, store=tmp_path / "store") as url:
        responses = asyncio.run(burst(url))
        assert httpx.get(f"{url}/healthz").status_code == 200
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 429} and len(codes) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "queue is full" in refused.json()["error"]["message"]

"""Best-of-n over the wire: shared prompts computed once, deadlines, disconnects, result cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.integration.reference import reference_reward
from tests.integration.server import metric, running_server

PROMPT = ("explain why the water in paris is hot and how you cook pasta with good python code "
          "because the answer to this question is helpful")
RESPONSES = ["sorry", "the water is hot because", "cook the pasta in hot water and you can help",
             "no", "because the code is good", "I cannot help with that question"]


def forward_passes(url: str) -> float:
    return metric(url, "rmserve_batch_size_count")


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--model", f"llama={tiny_model_dirs['llama-left']}", "--min-shared-prefix-tokens", "8",
            "--result-cache-mb", "1"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


@pytest.fixture(scope="module")
def slow_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every item waits 2 s in the queue for company, so deadlines and disconnects come first."""
    args = ["--model", str(tiny_model_dirs["llama-left"]), "--max-wait-ms", "2000"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def test_rank_computes_the_prompt_once_and_equals_full_sequences(
    server: str, tiny_model_dirs: dict[str, Path]
) -> None:
    folder = tiny_model_dirs["llama-left"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, {"prompt": PROMPT, "response": r}) for r in RESPONSES]
    shared_before = metric(server, "rmserve_shared_prefix_tokens_total")

    ranked = httpx.post(f"{server}/v1/rank", json={"prompt": PROMPT, "responses": RESPONSES}).json()

    assert max(abs(a - b) for a, b in zip(ranked["rewards"], expected, strict=True)) <= 1e-4
    assert ranked["ranking"] == sorted(range(len(RESPONSES)), key=lambda i: -expected[i])
    prompt_tokens = len(tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}]))
    saved = metric(server, "rmserve_shared_prefix_tokens_total") - shared_before
    assert saved >= (len(RESPONSES) - 1) * prompt_tokens


def test_cache_hits_return_identical_rewards_without_a_forward_pass(server: str) -> None:
    body = {"inputs": [{"prompt": "cache me", "response": r} for r in RESPONSES]}
    # The cache is the engines', shared by every API process (test_engine_processes.py).
    with httpx.Client(base_url=server) as client:
        first = client.post("/v1/score", json=body).json()
        passes, hits = forward_passes(server), metric(server, "rmserve_cache_hits_total")

        again = client.post("/v1/score", json=body).json()

    assert again["rewards"] == first["rewards"]  # bit for bit
    assert forward_passes(server) == passes
    assert metric(server, "rmserve_cache_hits_total") - hits == len(RESPONSES)
    assert metric(server, "rmserve_cache_bytes") > 0


def test_an_expired_deadline_answers_504_without_running_the_model(slow_server: str) -> None:
    passes = forward_passes(slow_server)
    started = time.monotonic()
    response = httpx.post(f"{slow_server}/v1/rank", json={
        "prompt": PROMPT, "responses": RESPONSES, "timeout_ms": 200})
    assert response.status_code == 504 and time.monotonic() - started < 1.5
    assert response.json()["error"]["type"] == "deadline_exceeded"
    time.sleep(2.5)  # past the batching window: nothing of it may have been computed since
    assert forward_passes(slow_server) == passes
    assert metric(slow_server, "rmserve_dropped_items_total", reason="deadline") == len(RESPONSES)
    assert metric(slow_server, "rmserve_queue_depth") == 0  # the gauge follows the drop


def test_a_disconnected_clients_queued_items_are_dropped(slow_server: str) -> None:
    passes = forward_passes(slow_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{slow_server}/v1/score", json={"inputs": [{"text": "gone"}] * 3}, timeout=0.3)
    time.sleep(2.5)
    assert forward_passes(slow_server) == passes
    assert metric(slow_server, "rmserve_dropped_items_total", reason="disconnected") == 3
    assert metric(slow_server, "rmserve_requests_total", code="499") == 1


def test_priority_and_timeout_are_validated(server: str) -> None:
    for field, value in [("priority", 10_000), ("timeout_ms", 0), ("timeout_ms", "soon")]:
        response = httpx.post(f"{server}/v1/score", json={"inputs": [{"text": "x"}], field: value})
        assert response.status_code == 422 and field in response.json()["error"]["message"]

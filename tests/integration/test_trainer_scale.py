"""Trainer-scale scoring (issue 18): a whole rollout batch in one call.

OpenRLHF posts a step's rollouts to /get_reward at once (over 8 MiB at 1,024+ long queries); a
GRPO step may send 20,000 items to /v1/score or to gRPC Score. With the default limits (no limit
flags) the server must answer each in one call, every reward equal to the same text scored in small
requests and to the unbatched `model(**inputs).logits` reference; and a /v1/rank call, or a small
client, must not wait behind such a call, which still answers every one of its items exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.reference import WORDS, reference_reward
from tests.integration.server import free_port, metric, running_server

MIB = 1024 * 1024
BIG = 20_000  # items in one /v1/score or gRPC call
QUERIES = 1_100  # OpenRLHF queries in one /get_reward call
SAMPLE = 50  # big-call rewards checked against small requests
TOLERANCE = 1e-5  # fp32 on CPU: batching and padding move a reward by float rounding only
TIMEOUT_S = 300
# The pass in flight, the rank's own, slack for the two metric reads. At /v1/score's priority the
# rank would wait for the half-full queue instead: about 10 passes on the long-pass server.
MAX_RANK_PASSES = 4
# Words that are one token each for the tiny GPT-2's tokenizer: many bytes per token, so a
# message passes 8 MiB at fewer tokens (each token costs forward-pass time, each byte costs none).
LONG_WORDS = tuple("question response function helpful explain because travel reward python prompt "
                   "answer cannot".split())
SMALL_ITEMS = [{"text": "a small request beside a big one"}, {"text": "hello world"}]
RANK = {"prompt": "which answer is helpful?", "responses": ["the code is good", "sorry", "cook pasta"]}


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default server: a model and a port, no other flags."""
    args = ["--model", f"gpt2={tiny_model_dirs['gpt2-left']}"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


@pytest.fixture(scope="module")
def long_pass_server(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC target) of a server with the default limits (inputs, body, gRPC message,
    queue) but forward passes of up to 256 rows. A tiny model's pass is mostly Python holding the
    GIL, about as long as an HTTP round trip: longer passes make a count of passes measure time
    spent queued, not the event loop's share of two cores, and 20,000 items take fewer of them."""
    grpc_port = free_port()
    args = ["--model", f"gpt2={tiny_model_dirs['gpt2-left']}",
            "--max-batch-pairs", "256", "--max-batch-tokens", "16384"]
    with running_server(args, store=tmp_path_factory.mktemp("store"), grpc_port=grpc_port) as url:
        yield url, f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def reference(tiny_model_dirs: dict[str, Path]) -> tuple[Any, Any]:
    folder = tiny_model_dirs["gpt2-left"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def words(rng: random.Random, count: int, vocabulary: Sequence[str] = WORDS) -> str:
    return " ".join(rng.choices(vocabulary, k=count))


def texts(seed: int, count: int, words_each: int, vocabulary: Sequence[str] = WORDS) -> list[str]:
    """Distinct texts (each numbered), so a reward given to the wrong item shows."""
    rng = random.Random(seed)
    return [f"item {i}: {words(rng, words_each, vocabulary)}" for i in range(count)]


def picked(count: int, seed: int) -> list[int]:
    """SAMPLE indices of `count`, the first and the last among them."""
    return sorted({0, count - 1, *random.Random(seed).sample(range(count), SAMPLE - 2)})


def assert_close(got: Sequence[float], expected: Sequence[float]) -> None:
    assert len(got) == len(expected)
    worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    assert worst <= TOLERANCE, f"largest difference {worst}"


async def _post_all(url: str, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        answers = await asyncio.gather(*(client.post(path, json=body) for body in bodies))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return [answer.json() for answer in answers]


def small_request_rewards(url: str, path: str, field: str, values: list[Any]) -> list[float]:
    """The rewards of `values` (queries or items) sent in requests of 1 to 4, all at once, in order."""
    rng = random.Random(5)
    chunks: list[list[Any]] = []
    while sum(map(len, chunks)) < len(values):
        start = sum(map(len, chunks))
        chunks.append(values[start : start + rng.randint(1, 4)])
    answers = asyncio.run(_post_all(url, path, [{field: chunk} for chunk in chunks]))
    return [reward for answer in answers for reward in answer["rewards"]]


def openrlhf_queries() -> list[str]:
    """Every tenth query fits the model (so the reference can score it whole); the others are
    ~9,000 characters (~1,750 tokens), which the server truncates to the model's 96."""
    rng = random.Random(18)
    return [f"query {i}: {words(rng, 20 if i % 10 == 0 else 1_700)}"[: 9_000] for i in range(QUERIES)]


def test_openrlhf_rollout_batch_over_8_mib_in_one_call(server: str, reference: tuple[Any, Any]) -> None:
    url = server
    queries = openrlhf_queries()
    # OpenRLHF 0.9's request_api_wrapper: the whole batch, with its prompts and labels.
    body = json.dumps({"query": queries, "prompts": [f"prompt {i}" for i in range(QUERIES)],
                       "labels": [None] * QUERIES}).encode()
    assert len(body) > 8 * MIB

    answer = httpx.post(f"{url}/get_reward", content=body, headers={"Content-Type": "application/json"},
                        timeout=TIMEOUT_S)

    assert answer.status_code == 200, answer.text[:500]
    info = answer.json()
    assert len(info["rewards"]) == QUERIES and info["scores"] == info["rewards"]
    assert info["extra_logs"]["truncated"] == [0.0 if i % 10 == 0 else 1.0 for i in range(QUERIES)]
    sample = picked(QUERIES, seed=1)
    small = small_request_rewards(url, "/get_reward", "query", [queries[i] for i in sample])
    assert_close([info["rewards"][i] for i in sample], small)
    model, tokenizer = reference
    whole = range(0, 200, 10)
    assert_close([info["rewards"][i] for i in whole],
                 [reference_reward(model, tokenizer, {"text": queries[i]}) for i in whole])


def small_client(url: str, call: Future[httpx.Response], most: int = 100) -> tuple[list[list[float]], int]:
    """A small client hammering the server while `call` runs: SMALL_ITEMS again and again, a
    request every 50 ms or so (at most `most`). Their rewards, and how many 429s were retried."""
    answers: list[list[float]] = []
    refused, deadline = 0, time.monotonic() + TIMEOUT_S
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        while not call.done() and len(answers) + refused < most and time.monotonic() < deadline:
            answer = client.post("/v1/score", json={"inputs": SMALL_ITEMS})
            time.sleep(0.05)
            if answer.status_code == 429:  # a client retries these; counted, so the test can tell
                refused += 1
                continue
            assert answer.status_code == 200, answer.text
            answers.append(answer.json()["rewards"])
    return answers, refused


def test_v1_score_20000_items_in_one_call_beside_a_small_client(
    server: str, reference: tuple[Any, Any]
) -> None:
    url = server
    items = [{"text": text} for text in texts(seed=2, count=BIG, words_each=3)]
    scored_before = metric(url, "rmserve_items_total")
    with ThreadPoolExecutor(max_workers=1) as pool:
        big = pool.submit(httpx.post, f"{url}/v1/score", json={"inputs": items}, timeout=TIMEOUT_S)
        beside, refused = small_client(url, big)
        answer = big.result(timeout=TIMEOUT_S)

    assert answer.status_code == 200, answer.text[:500]
    body = answer.json()
    assert len(body["rewards"]) == BIG and body["truncated"] == [False] * BIG
    # The big call's first part fills the queue; what it holds back waits for half of it free.
    assert beside and refused == 0, f"{len(beside)} small requests answered beside it, {refused} refused"
    scored = metric(url, "rmserve_items_total") - scored_before
    assert scored == BIG + len(beside) * len(SMALL_ITEMS)
    alone = small_request_rewards(url, "/v1/score", "inputs", SMALL_ITEMS)
    for rewards in beside:
        assert_close(rewards, alone)
    sample = picked(BIG, seed=2)
    small = small_request_rewards(url, "/v1/score", "inputs", [items[i] for i in sample])
    assert_close([body["rewards"][i] for i in sample], small)
    model, tokenizer = reference
    assert_close([body["rewards"][i] for i in sample[:5]],
                 [reference_reward(model, tokenizer, items[i]) for i in sample[:5]])


def test_grpc_score_20000_items_over_8_mib_in_one_call(long_pass_server: tuple[str, str]) -> None:
    url, target = long_pass_server
    items = texts(seed=3, count=BIG, words_each=54, vocabulary=LONG_WORDS)  # ~60 tokens each
    request = pb.ScoreRequest(inputs=[pb.Item(text=text) for text in items])
    assert request.ByteSize() > 8 * MIB  # over the old limit (the old body limit, 8 MiB)
    # The client's own limits, raised too (gRPC's default receive limit is 4 MiB).
    limits = [("grpc.max_send_message_length", 256 * MIB), ("grpc.max_receive_message_length", 256 * MIB)]

    with grpc.insecure_channel(target, options=limits) as channel:
        reply = rmserve_pb2_grpc.RewardServiceStub(channel).Score(request, timeout=TIMEOUT_S)

    assert len(reply.rewards) == BIG and len(reply.truncated) == BIG
    sample = picked(BIG, seed=3)
    small = small_request_rewards(url, "/v1/score", "inputs", [{"text": items[i]} for i in sample])
    assert_close([reply.rewards[i] for i in sample], small)


def forward_passes(url: str) -> float:
    return metric(url, "rmserve_batch_size_count")


def wait_for_passes(url: str, count: float, call: Future[httpx.Response], timeout_s: float = 120) -> None:
    """Until the server has run `count` forward passes, or the call ended, or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not call.done() and forward_passes(url) < count:
        time.sleep(0.05)


def test_rank_is_not_kept_waiting_by_a_20000_item_call(long_pass_server: tuple[str, str]) -> None:
    url, _ = long_pass_server
    items = [{"text": text} for text in texts(seed=4, count=BIG, words_each=40)]  # ~45 tokens each
    scored_before, passes_at_start = metric(url, "rmserve_items_total"), forward_passes(url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        big = pool.submit(httpx.post, f"{url}/v1/score", json={"inputs": items}, timeout=TIMEOUT_S)
        wait_for_passes(url, passes_at_start + 5, big)  # the big call's items are in the queue
        passes_before, started = forward_passes(url), time.monotonic()
        ranked = httpx.post(f"{url}/v1/rank", json=RANK, timeout=TIMEOUT_S)
        rank_s, passes_during = time.monotonic() - started, forward_passes(url) - passes_before
        big_was_running = not big.done()
        answer = big.result(timeout=TIMEOUT_S)

    assert ranked.status_code == 200, ranked.text
    assert answer.status_code == 200, answer.text[:500]
    assert big_was_running, "the 20,000-item call ended before the rank call: make its items longer"
    assert passes_during <= MAX_RANK_PASSES, f"{passes_during:.0f} passes in the rank's {rank_s:.3f} s"
    rewards = answer.json()["rewards"]
    assert len(rewards) == BIG
    assert metric(url, "rmserve_items_total") - scored_before == BIG + len(RANK["responses"])
    sample = picked(BIG, seed=4)
    small = small_request_rewards(url, "/v1/score", "inputs", [items[i] for i in sample])
    assert_close([rewards[i] for i in sample], small)
    alone = httpx.post(f"{url}/v1/rank", json=RANK, timeout=TIMEOUT_S).json()
    assert_close(ranked.json()["rewards"], alone["rewards"])

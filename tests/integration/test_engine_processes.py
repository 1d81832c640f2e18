"""A server of several processes (`--api-workers 2 --device cpu,cpu`): two engines share the
work and agree with the unbatched reference, /metrics from any API process shows the whole
server, SIGTERM drains every process (even while they start), and a killed engine costs no
request an answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.integration.reference import reference_reward
from tests.integration.server import free_port, metric, serve_command, server_process

SPLIT = ["--api-workers", "2", "--device", "cpu,cpu", "--threads", "1"]
ANSWER_BOUND_S = 30.0  # no request may wait longer than this once an engine is gone


def _children(log_file: Path) -> dict[str, int]:
    """name -> pid of the supervisor's processes, from its log lines."""
    pids = {}
    for line in log_file.read_text().splitlines():
        with_fields = json.loads(line) if line.startswith("{") else {}
        if "child_pid" in with_fields:
            pids[with_fields["child"]] = with_fields["child_pid"]
    return pids


class SplitServer(NamedTuple):
    url: str
    process: subprocess.Popen[str]
    children: dict[str, int]  # name -> pid
    log: Path


@pytest.fixture
def split_server(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> Iterator[SplitServer]:
    """A BERT model served by two API processes and two CPU engines, logging at info level."""
    log = tmp_path / "server.log"
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", *SPLIT]
    with server_process(args, store=tmp_path / "store", log_file=log) as (url, process):
        yield SplitServer(url, process, _children(log), log)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _items(count: int, words: int = 6) -> list[dict[str, str]]:
    return [{"prompt": f"Question {i}: how far is the moon?", "response": " ".join(["far"] * (words + i % 7))}
            for i in range(count)]


def test_two_engines_share_the_work_and_agree_with_the_reference(
    split_server: SplitServer, tiny_model_dirs: dict[str, Path]
) -> None:
    url = split_server.url
    engines = [pid for name, pid in split_server.children.items() if name.startswith("engine")]
    before = [_cpu_s(pid) for pid in engines]
    items = _items(600)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda part: httpx.post(f"{url}/v1/score", json={"inputs": part},
                                                         timeout=60).json()["rewards"],
                                [items[i:i + 75] for i in range(0, 600, 75)]))
    rewards = [reward for answer in answers for reward in answer]
    busy = [_cpu_s(pid) - was for pid, was in zip(engines, before, strict=True)]
    model = tiny_model_dirs["bert-right"]
    network, tokenizer = AutoModelForSequenceClassification.from_pretrained(model).eval(), \
        AutoTokenizer.from_pretrained(model)
    expected = [reference_reward(network, tokenizer, item) for item in items]
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert len(engines) == 2
    assert min(busy) > 0.1 * max(busy), f"engine CPU seconds {busy}: one engine did the work"


def test_metrics_from_either_api_process_count_every_request(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", *SPLIT]
    with server_process(args, store=tmp_path / "store") as (url, _):
        # Ready from one process is ready from all: they turn ready together.
        assert {httpx.get(f"{url}/readyz").status_code for _ in range(20)} == {200}
        for _ in range(20):  # a new connection each: the kernel spreads them over both processes
            assert httpx.post(f"{url}/v1/score", json={"inputs": _items(3)}).status_code == 200
        seen = {metric(url, "rmserve_requests_total", endpoint="/v1/score") for _ in range(10)}
        items = metric(url, "rmserve_items_total")
        batched = metric(url, "rmserve_batch_size_sum")
    assert seen == {20.0}
    assert items == 60 and batched == 60


def test_the_result_cache_is_shared_by_every_api_process(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", "--api-workers", "2",
            "--result-cache-mb", "8"]
    body = {"inputs": _items(5)}
    with server_process(args, store=tmp_path / "store") as (url, _):
        first = httpx.post(f"{url}/v1/score", json=body).json()["rewards"]
        passes = metric(url, "rmserve_batch_size_count")
        # A new connection each: the kernel spreads them over both API processes.
        again = [httpx.post(f"{url}/v1/score", json=body).json()["rewards"] for _ in range(10)]
        assert metric(url, "rmserve_batch_size_count") == passes
        assert metric(url, "rmserve_cache_hits_total") == 50
    assert again == [first] * 10


def test_sigterm_drains_every_process_and_exits_zero(split_server: SplitServer) -> None:
    url, process = split_server.url, split_server.process
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(httpx.post, f"{url}/v1/score", json={"inputs": _items(400)}, timeout=60)
                   for _ in range(4)]
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        codes = [future.result().status_code for future in pending]
    process.wait(timeout=60)
    assert codes == [200] * 4, "admitted work completes through the drain"
    assert process.returncode == 0
    assert not [name for name, pid in split_server.children.items() if Path(f"/proc/{pid}").exists()]


def test_sigterm_while_the_processes_still_import_is_a_clean_stop(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    command = serve_command("--model", f"bert={tiny_model_dirs['bert-right']}", *SPLIT, port=free_port(),
                            store=tmp_path / "store", log_level="info")
    with log.open("w") as output, subprocess.Popen(command, stderr=output, text=True,
                                                   env={**os.environ, "HF_HUB_OFFLINE": "1"}) as process:
        deadline = time.monotonic() + 60
        while "serving with" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        # Every process is started; none has got as far as its signal handler (seconds of imports).
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 0, log.read_text()
    assert "while draining" not in log.read_text()


def test_a_killed_engine_answers_every_waiting_request_and_the_server_exits_non_zero(
    split_server: SplitServer,
) -> None:
    url, process = split_server.url, split_server.process
    engine = split_server.children["engine-1"]
    answers: list[tuple[int | str, float]] = []

    def ask() -> None:
        started = time.monotonic()
        try:
            # Six parts of 256 items each: every request has parts on both engines.
            status: int | str = httpx.post(f"{url}/v1/score", json={"inputs": _items(1500)},
                                           timeout=ANSWER_BOUND_S).status_code
        except httpx.TransportError as exc:  # only a connection made after the server left
            status = type(exc).__name__
        answers.append((status, time.monotonic() - started))

    clients = [threading.Thread(target=ask) for _ in range(12)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 20
    while metric(url, "rmserve_queue_depth") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # every request has arrived and holds parts in both engines' queues
    os.kill(engine, signal.SIGKILL)
    readiness = _readiness(url)
    for client in clients:
        client.join(ANSWER_BOUND_S + 5)
    process.wait(timeout=60)
    statuses = [status for status, _ in answers]
    assert len(answers) == 12, "every request got an answer"
    assert set(statuses) <= {200, 503, "ConnectError"}, statuses
    assert 503 in statuses, "requests waiting on the killed engine are answered 503"
    assert max(seconds for _, seconds in answers) < ANSWER_BOUND_S
    assert readiness in (503, "gone"), f"/readyz after the kill: {readiness}"
    assert process.returncode == 1, "exits non-zero, for the orchestrator to restart it"
    assert "engine-1 exited" in split_server.log.read_text()


def _readiness(url: str, within_s: float = 2.0) -> int | str:
    """/readyz once it stops answering 200 (the front ends hear of the engine in milliseconds)."""
    deadline = time.monotonic() + within_s
    status: int | str = 200
    while status == 200 and time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/readyz", timeout=5).status_code
        except httpx.TransportError:
            status = "gone"
    return status

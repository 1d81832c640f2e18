"""Overload and shutdown over the wire: every request gets exactly one answer, none is lost."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.integration.reference import reference_reward
from tests.integration.server import free_port, metric, server_process

BURST, CONCURRENCY, DISTINCT_TEXTS = 2_000, 256, 20
HEALTH_TIMEOUT_S = 1.0  # a Kubernetes liveness probe's default timeout


def scored_requests(url: str) -> Counter[int]:
    """rmserve_requests_total for /v1/score, by status code."""
    counts: Counter[int] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "rmserve_requests_total" and sample.labels["endpoint"] == "/v1/score":
                counts[int(sample.labels["code"])] += int(sample.value)
    return counts


def probe_health(url: str, log: str, stop: str, interval_s: float, timeout_s: float, max_s: float) -> None:
    """Poll URL/healthz until the file `stop` exists (or `max_s` passed), appending one line per
    probe to `log`: system-wide monotonic time, status (0: no answer in time) and seconds taken.
    Run in its own process (see HealthProbe), so it shares neither the GIL nor an event loop with
    the load generator; it needs only the standard library and httpx."""
    import os
    import time

    import httpx

    give_up = time.monotonic() + max_s
    with httpx.Client(timeout=timeout_s) as client, open(log, "a", buffering=1) as out:
        while not os.path.exists(stop) and time.monotonic() < give_up:
            start = time.monotonic()
            try:
                status = client.get(f"{url}/healthz").status_code
            except httpx.TransportError:
                status = 0
            out.write(f"{start:.6f} {status} {time.monotonic() - start:.6f}\n")
            time.sleep(interval_s)


class HealthProbe:
    """Polls /healthz from a separate process and connection, as the kubelet would."""

    MAX_S = 300  # the probe stops by itself even if the test dies without stopping it

    def __init__(self, url: str, folder: Path) -> None:
        self._url, self._log, self._stop = url, folder / "probe.log", folder / "probe.stop"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the probe process and wait for its first answer."""
        source = inspect.getsource(probe_health)
        call = (f"probe_health({self._url!r}, {str(self._log)!r}, {str(self._stop)!r}, 0.05, "
                f"{HEALTH_TIMEOUT_S}, {self.MAX_S})")
        self._process = subprocess.Popen([sys.executable, "-c", f"{source}\n{call}\n"], text=True)
        deadline = time.monotonic() + 30
        while not self.answers() and time.monotonic() < deadline and self._process.poll() is None:
            time.sleep(0.05)
        assert self.answers(), f"the health probe process did not start (exit code {self._process.poll()})"

    def stop(self) -> None:
        self._stop.touch()
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def answers(self) -> list[tuple[float, int, float]]:
        """(monotonic time sent, status or 0 for no answer, seconds) for each probe so far."""
        if not self._log.exists():
            return []
        rows = [line.split() for line in self._log.read_text().splitlines()]
        # The probe may be writing its last line right now: only whole lines count.
        return [(float(row[0]), int(row[1]), float(row[2])) for row in rows if len(row) == 3]


async def burst(url: str) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> httpx.Response:
            async with gate:
                body = {"inputs": [{"text": f"request {i % DISTINCT_TEXTS} of the burst"}]}
                return await client.post("/v1/score", json=body)

        return await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(BURST)), return_exceptions=True), timeout=240
        )


@pytest.mark.slow
def test_a_burst_beyond_the_queue_gets_one_answer_each_and_the_server_keeps_serving(
    tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    folder = tiny_model_dirs["bert-right"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, {"text": f"request {i} of the burst"})
                for i in range(DISTINCT_TEXTS)]
    args = ["--model", str(folder), "--max-queue-items", "16", "--max-wait-ms", "5"]

    with server_process(args, store=tmp_path / "store") as (url, _):
        probe = HealthProbe(url, tmp_path)
        probe.start()
        try:
            burst_started = time.monotonic()
            answers = asyncio.run(burst(url))
            burst_ended = time.monotonic()
        finally:
            probe.stop()
        counted = scored_requests(url)
        after = httpx.post(f"{url}/v1/score", json={"inputs": [{"text": "request 3 of the burst"}]})

    lost = [a for a in answers if isinstance(a, BaseException)]
    assert not lost, f"{len(lost)} requests got no answer, e.g. {lost[0]!r}"
    codes = Counter(a.status_code for a in answers if isinstance(a, httpx.Response))
    assert sum(codes.values()) == BURST and set(codes) <= {200, 429, 503}, codes
    assert codes[200] > 0 and codes[429] > 0, f"the queue was never full: {codes}"
    assert counted == codes, "the server counted other answers than the clients received"
    for i, answer in enumerate(answers):
        assert isinstance(answer, httpx.Response)
        if answer.status_code == 200:
            assert abs(answer.json()["rewards"][0] - expected[i % DISTINCT_TEXTS]) <= 1e-5
        else:
            assert answer.headers["retry-after"] and answer.json()["error"]["message"]

    during = [(status, seconds) for sent, status, seconds in probe.answers()
              if burst_started <= sent <= burst_ended]
    assert len(during) >= 5, f"the health probe ran {len(during)} times during the burst"
    slow = [(status, seconds) for status, seconds in during if status != 200 or seconds > HEALTH_TIMEOUT_S]
    assert not slow, f"/healthz failed or took over {HEALTH_TIMEOUT_S}s during the burst: {slow[:5]}"
    assert after.status_code == 200 and abs(after.json()["rewards"][0] - expected[3]) <= 1e-5


def _send_or_refused(url: str) -> int:
    """A new request's status code, or 0 when the connection is refused."""
    try:
        return httpx.post(f"{url}/v1/score", json={"inputs": [{"text": "late"}]}, timeout=10).status_code
    except httpx.ConnectError:
        return 0


@pytest.mark.slow
def test_sigterm_finishes_admitted_work_refuses_new_work_and_exits_zero_in_time(
    tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    grace_s, in_flight = 15.0, 8
    # A long batching window keeps the admitted requests queued when the signal arrives.
    args = ["--model", str(tiny_model_dirs["bert-right"]), "--max-wait-ms", "3000",
            "--shutdown-grace-s", str(grace_s)]

    async def admitted_then_late(url: str, process: subprocess.Popen[str]) -> tuple[list, list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            admitted = [asyncio.create_task(client.post(
                "/v1/score", json={"inputs": [{"text": f"admitted {i}"}]})) for i in range(in_flight)]
            deadline = time.monotonic() + 10
            while metric(url, "rmserve_queue_depth") < in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert metric(url, "rmserve_queue_depth") == in_flight, "the requests were not queued in time"
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)  # the signal handler runs in the server's own loop
            late = [await asyncio.to_thread(_send_or_refused, url) for _ in range(3)]
            return await asyncio.gather(*admitted, return_exceptions=True), late

    with server_process(args, store=tmp_path / "store", grpc_port=free_port()) as (url, process):
        signalled = time.monotonic()
        admitted, late = asyncio.run(admitted_then_late(url, process))
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s + 5)
        exited_after_s = time.monotonic() - signalled

    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in admitted), admitted
    assert set(late) <= {0, 503}, f"new work after SIGTERM got {late}"
    assert process.returncode == 0, f"exit code {process.returncode}"
    assert exited_after_s <= grace_s + 5, f"exited {exited_after_s:.1f}s after SIGTERM"

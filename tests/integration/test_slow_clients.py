"""Slow and half-open clients cannot hold the server: 500 of them (heads or bodies dripped, half a
request then silence, silence after connecting, ...) are each closed by the server within their
phase's timeout, while normal clients keep getting 200s and the probes answer within a second;
past --max-connections slow connections are displaced and, when every connection is busy, new ones
are answered 503 (the probes still 200). gRPC: the same kinds of connection against its timeouts.

Everything on loopback, bounded in count and time; the figures are printed (pytest -s)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.server import free_port, running_server

KEY = "slow-clients-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
KEEP_ALIVE_TIMEOUT_S = 2.0
BODY_BACKSTOP_S = 1.0  # service.serving.BODY_BACKSTOP_S: the socket closes this long after a 408
MARGIN_S = 1.5  # scheduling on 2 shared cores; a socket held forever would blow it by far
SLOW_CONNECTIONS = 500
DRIP_EVERY_S = 0.25
READ_CAP_S = 12.0  # a socket the server never closes is given up on (and fails the test) here
SCORE = {"inputs": [{"prompt": "How do I boil an egg?", "response": "Simmer it for nine minutes."}]}

HEAD = b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
AUTHORIZED = HEAD + f"authorization: Bearer {KEY}\r\n".encode()
Drip = bytes | None  # what a slow client sends after its opening, a byte at a time; None: nothing


@dataclass(frozen=True)
class SlowKind:
    """One way of being slow: what is sent at once, what is then dripped, and by when (from
    connecting) the server must have closed the socket."""

    opening: bytes
    drip: Drip
    closed_within_s: float


KINDS = {
    "idle after connect": SlowKind(b"", None, HEADER_TIMEOUT_S),
    "half a head, then silence": SlowKind(HEAD, None, HEADER_TIMEOUT_S),
    "head dripped": SlowKind(b"POST /v1/score HTTP/1.1\r\n", b"x-drip: " + b"a" * 200, HEADER_TIMEOUT_S),
    "half a body, then silence": SlowKind(AUTHORIZED + b"content-length: 400\r\n\r\n{\"inp", None,
                                          BODY_TIMEOUT_S),
    "body dripped": SlowKind(AUTHORIZED + b"content-length: 400\r\n\r\n", b" " * 400, BODY_TIMEOUT_S),
    "GET with a dripped body": SlowKind(b"GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 400\r\n\r\n",
                                        b"a" * 400, BODY_TIMEOUT_S),
    # Answered 401 before its body is read, then the body dripped: only the connection layer sees it.
    "401, then its body dripped": SlowKind(HEAD + b"content-length: 400\r\n\r\n", b" " * 400,
                                           BODY_TIMEOUT_S + BODY_BACKSTOP_S),
    # uvicorn's keep-alive timer is cancelled by any byte: the next head dripped after an answer.
    "answered, then the next head dripped": SlowKind(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /",
                                                     b"healthz" * 40, HEADER_TIMEOUT_S),
}


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _raise_fd_limit(SLOW_CONNECTIONS * 2 + 256)
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S),
            "--keep-alive-timeout-s", str(KEEP_ALIVE_TIMEOUT_S)]
    with running_server(args, store=tmp_path_factory.mktemp("store"),
                        env={"RMSERVE_API_KEYS": KEY}) as url:
        yield url


async def slow_client(port: int, kind: SlowKind, cap_s: float = READ_CAP_S) -> tuple[float, str]:
    """Open, send the opening, drip; return (seconds until the server closed it, how)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(kind.opening)
    dripper = asyncio.create_task(_drip(writer, kind.drip))
    how = "still open"
    try:
        async with asyncio.timeout(cap_s):
            while await reader.read(4096):
                pass
            how = "eof"
    except ConnectionError:
        how = "reset"
    except TimeoutError:
        pass
    finally:
        lived_s = time.monotonic() - started
        dripper.cancel()
        writer.transport.abort()
    return lived_s, how


async def _drip(writer: asyncio.StreamWriter, drip: Drip) -> None:
    for byte in (drip or b""):
        await asyncio.sleep(DRIP_EVERY_S)
        with contextlib.suppress(ConnectionError):
            writer.write(bytes([byte]))


@dataclass
class Traffic:
    """What well-behaved clients saw while the slow ones were connected."""

    statuses: list[int]
    probe_s: list[float]


async def normal_traffic(url: str, until: Callable[[], bool]) -> Traffic:
    """Scoring requests on a kept-alive connection and probes on fresh connections (as kubelet
    makes them), until `until()`; bounded by READ_CAP_S."""
    traffic = Traffic([], [])
    deadline = time.monotonic() + READ_CAP_S

    async def score() -> None:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=5) as client:
            while not until() and time.monotonic() < deadline:
                traffic.statuses.append((await client.post("/v1/score", json=SCORE)).status_code)

    async def probe() -> None:
        while not until() and time.monotonic() < deadline:
            for path in ("/healthz", "/readyz"):
                async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                    started = time.monotonic()
                    response = await client.get(path)
                    traffic.probe_s.append(time.monotonic() - started)
                    traffic.statuses.append(response.status_code)
            await asyncio.sleep(0.1)

    await asyncio.gather(score(), score(), probe())
    return traffic


async def attack(url: str, kinds: list[SlowKind]) -> tuple[list[tuple[float, str]], Traffic]:
    port = int(url.rsplit(":", 1)[1])
    slow = [asyncio.create_task(slow_client(port, kind)) for kind in kinds]
    traffic = await normal_traffic(url, until=lambda: all(task.done() for task in slow))
    return [task.result() for task in slow], traffic


def report(name: str, lived: list[float], traffic: Traffic) -> None:
    probes = sorted(traffic.probe_s)
    print(f"\n{name}: {len(lived)} slow sockets lived {min(lived):.2f}-{max(lived):.2f} s "
          f"(median {statistics.median(lived):.2f}); {len(traffic.statuses)} normal answers; probes "
          f"p50 {statistics.median(probes) * 1e3:.0f} ms, max {probes[-1] * 1e3:.0f} ms")


def test_500_slow_connections_are_closed_in_time_while_normal_clients_are_served(server: str) -> None:
    names = [list(KINDS)[i % len(KINDS)] for i in range(SLOW_CONNECTIONS)]
    results, traffic = asyncio.run(attack(server, [KINDS[name] for name in names]))

    for name in KINDS:
        mine = [result for n, result in zip(names, results, strict=True) if n == name]
        bound_s = KINDS[name].closed_within_s
        assert all(how in ("eof", "reset") for _, how in mine), f"{name}: the server left some open"
        lived = [seconds for seconds, _ in mine]
        assert max(lived) <= bound_s + MARGIN_S, f"{name}: lived {max(lived):.2f} s, bound {bound_s} s"
        # Closed by the phase's timer, not by chance earlier (e.g. a parse error).
        assert min(lived) >= bound_s - 0.5, f"{name}: closed after {min(lived):.2f} s, before its timeout"
    assert traffic.statuses and set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
    assert max(traffic.probe_s) < 1.0
    report("slowloris", [seconds for seconds, _ in results], traffic)


def test_answers_say_why_a_slow_request_ended(server: str) -> None:
    """A half head gets 408 as it is closed; a body not in within the deadline gets the JSON 408."""

    async def answer(opening: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(server.rsplit(":", 1)[1]))
        writer.write(opening)
        async with asyncio.timeout(BODY_TIMEOUT_S + MARGIN_S):
            data = await reader.read()
        writer.close()
        return data

    head = asyncio.run(answer(HEAD))
    body = asyncio.run(answer(AUTHORIZED + b"content-length: 9\r\n\r\n{"))
    assert head.startswith(b"HTTP/1.1 408 ")
    assert body.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in body and b"connection: close" in body


@pytest.fixture(scope="module")
def small_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """At most 20 connections; a lone item waits 3 s for company, so a request stays busy that long.
    One API process: --max-connections is each process's bound, and the kernel spreads connections
    over several by a hash, so only one process's table can be filled exactly."""
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}", "--max-connections", "20",
            "--max-wait-ms", "3000", "--header-timeout-s", "30", "--api-workers", "1"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def test_past_max_connections_slow_ones_are_displaced_not_good_clients(small_server: str) -> None:
    """200 silent connections against a limit of 20 (and a header timeout of 30 s): each new
    connection displaces the longest-waiting slow one, so good clients and probes are served."""
    port = int(small_server.rsplit(":", 1)[1])
    kinds = [KINDS["idle after connect"], KINDS["half a head, then silence"]] * 100
    cap_s = 6.0

    async def run() -> tuple[list[tuple[float, str]], Traffic]:
        slow = [asyncio.create_task(slow_client(port, kind, cap_s=cap_s)) for kind in kinds]
        await asyncio.sleep(1.0)  # all connected: ten times the limit
        stop_at = time.monotonic() + 3.0
        traffic = await normal_traffic(small_server, until=lambda: time.monotonic() > stop_at)
        return [await task for task in slow], traffic

    results, traffic = asyncio.run(run())
    assert set(traffic.statuses) == {200} and len(traffic.statuses) >= 3
    assert max(traffic.probe_s) < 1.0
    # Long before their 30 s header timeout, all but the last few were displaced.
    displaced = [seconds for seconds, how in results if how in ("eof", "reset")]
    assert len(displaced) >= len(kinds) - 20
    report("displacement", displaced, traffic)


def test_when_every_connection_is_busy_new_ones_get_503_and_probes_200(small_server: str) -> None:
    async def run() -> tuple[list[int], httpx.Response, httpx.Response]:
        limits = httpx.Limits(max_connections=30, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=small_server, timeout=15, limits=limits) as client:
            busy = [asyncio.create_task(client.post("/v1/score", json=SCORE)) for _ in range(20)]
            await asyncio.sleep(1.0)  # twenty requests waiting for company: the server is full
            shed = await client.post("/v1/score", json=SCORE)
            probe = await client.get("/readyz")
            return [(await task).status_code for task in busy], shed, probe

    busy, shed, probe = asyncio.run(run())
    assert busy == [200] * 20
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert shed.json()["error"]["type"] == "too_many_connections"
    assert probe.status_code == 200


# gRPC: raw HTTP/2 over TCP, so each phase can be left unfinished.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
GRPC_HANDSHAKE_S, GRPC_IDLE_S, GRPC_AGE_S = 2.0, 3.0, 4.0


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _headers_block(path: str) -> bytes:
    """HPACK literals without indexing or Huffman coding: enough for a server to decode."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
              ("content-type", "application/grpc"), ("te", "trailers")]
    return b"".join(b"\x00" + bytes([len(k)]) + k.encode() + bytes([len(v)]) + v.encode() for k, v in fields)


GRPC_CHECK = _headers_block("/grpc.health.v1.Health/Check")
GRPC_KINDS = {
    "idle after connect": SlowKind(b"", None, GRPC_HANDSHAKE_S),
    "half the preface": SlowKind(PREFACE[:10], None, GRPC_HANDSHAKE_S),
    "settings never acknowledged": SlowKind(PREFACE + SETTINGS, None, GRPC_HANDSHAKE_S),
    "half a HEADERS frame": SlowKind(PREFACE + SETTINGS + SETTINGS_ACK + _frame(1, 4, 1, GRPC_CHECK)[:20],
                                     None, GRPC_IDLE_S),
    # A call whose message never completes: bounded by the connection's age and the grace.
    "half a message": SlowKind(PREFACE + SETTINGS + SETTINGS_ACK + _frame(1, 4, 1, GRPC_CHECK)
                               + _frame(0, 0, 1, b"\x00\x00\x00\x00\x0a\x01"), None,
                               GRPC_AGE_S * 1.1 + BODY_TIMEOUT_S),
}


def test_grpc_slow_connections_are_closed_in_time_while_health_answers(
    tiny_model_dirs: dict[str, Path], tmp_path: Path,
) -> None:
    grpc_port = free_port()
    args = ["--model", f"bert={tiny_model_dirs['bert-right']}",
            "--header-timeout-s", str(GRPC_HANDSHAKE_S), "--grpc-idle-timeout-s", str(GRPC_IDLE_S),
            "--grpc-max-connection-age-s", str(GRPC_AGE_S), "--body-timeout-s", str(BODY_TIMEOUT_S)]
    names = [list(GRPC_KINDS)[i % len(GRPC_KINDS)] for i in range(100)]
    with running_server(args, store=tmp_path / "store", grpc_port=grpc_port):
        async def run() -> tuple[list[tuple[float, str]], list[float]]:
            slow = [asyncio.create_task(slow_client(grpc_port, GRPC_KINDS[n])) for n in names]
            checks = await _health_checks(grpc_port, until=lambda: all(t.done() for t in slow))
            return [t.result() for t in slow], checks

        results, checks = asyncio.run(run())
    for name, kind in GRPC_KINDS.items():
        mine = [result for n, result in zip(names, results, strict=True) if n == name]
        assert all(how in ("eof", "reset") for _, how in mine), f"{name}: the server left some open"
        assert max(s for s, _ in mine) <= kind.closed_within_s + MARGIN_S, name
    assert checks and max(checks) < 1.0
    report("gRPC", [s for s, _ in results], Traffic([], checks))


async def _health_checks(port: int, until: Callable[[], bool]) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + READ_CAP_S
    while not until() and time.monotonic() < deadline:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            started = time.monotonic()
            reply: Awaitable[health_pb2.HealthCheckResponse] = stub.Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert (await reply).status == health_pb2.HealthCheckResponse.SERVING
            latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.2)
    return latencies

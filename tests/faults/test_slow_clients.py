"""Slow and stalled HTTP clients cannot starve real ones (issue 14, docs/security.md).

A real ``streamfeat serve`` process; hundreds of hostile connections from other loopback
addresses (tests/faults/slow_clients_support.py, its own process) that connect and send nothing,
stall or trickle their headers or their body. Real requests from 127.0.0.1 are measured
in rounds alternating without and with the hostile clients: never a 503, and the median
of the rounds' p99 under attack within 2x of the median unloaded p99, or within
``SLACK_MS`` of it when the unloaded p99 is so small (under a millisecond) that answering
the hostile connections' own timeouts between two real requests is already a doubling.
Starvation, the failure this guards against, costs a real request a whole read timeout
(1.5 s here), far above either bound.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.faults.faults_support import Served, applied_data_dir, serve

REPO_ROOT = Path(__file__).resolve().parents[2]
BODY = orjson.dumps({"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}})
HOSTILE_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PER_SOURCE = 100  # 300 hostile connections, 60 of each kind
MAX_PER_CLIENT = 80  # so 20 per source are refused with 503 too_many_connections
TIMEOUT_MS = 1_500
ROUNDS = 5
SLACK_MS = 3.0  # the server answers ~700 hostile events/s in between: 408s, 503s, closes
REQUESTS_PER_ROUND = 600  # p99 is then the 6th-worst request, not the 3rd: steadier rounds


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = applied_data_dir(tmp_path_factory.mktemp("slow"))
    env = {
        "STREAMFEAT_HEADER_TIMEOUT_MS": str(TIMEOUT_MS),
        "STREAMFEAT_BODY_TIMEOUT_MS": str(TIMEOUT_MS),
        "STREAMFEAT_MAX_CONNECTIONS_PER_CLIENT": str(MAX_PER_CLIENT),
        "STREAMFEAT_MAX_IN_FLIGHT": "16",
    }
    with serve(data, env=env) as process:
        yield process


def _address(served: Served) -> tuple[str, int]:
    host, port = served.url.removeprefix("http://").split(":")
    return host, int(port)


def _read_answer(conn: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError("the server closed a real client's connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length")
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError("the server closed a real client's connection mid-answer")
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split(" ")[1]), rest[:length]


def _real_round(served: Served) -> tuple[list[float], list[int]]:
    """Sequential keep-alive requests, as a real caller sends them; latency of each (s) and statuses."""
    host, port = _address(served)
    request = (
        f"POST /v1/features/fraud_scoring HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    latencies: list[float] = []
    statuses: list[int] = []
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        for _ in range(REQUESTS_PER_ROUND):
            start = time.perf_counter()
            conn.sendall(request)
            status, _body = _read_answer(conn, buffer)
            latencies.append(time.perf_counter() - start)
            statuses.append(status)
    return latencies, statuses


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


def _start_hostile(served: Served, seconds: float) -> subprocess.Popen[str]:
    host, port = _address(served)
    # Attackers run on their own machines: on this 2-core box the hostile process runs at the
    # lowest CPU priority, so the ratio measures the server's starvation, not the load
    # generator's own CPU use.
    proc = subprocess.Popen(
        [
            "nice",
            "-n",
            "19",
            sys.executable,
            "-m",
            "tests.faults.slow_clients_support",
            host,
            str(port),
            ",".join(HOSTILE_SOURCES),
            str(PER_SOURCE),
            str(seconds),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    assert ready == "ready", f"hostile clients did not start: {ready!r} {proc.stderr.read() if proc.stderr else ''}"
    time.sleep(TIMEOUT_MS / 1000)  # every kind has reached its stalled state; the first timeouts fired
    return proc


def _hostile_answers(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    answers: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return answers


@pytest.mark.slow
def test_stalled_and_trickling_clients_never_cause_503_nor_double_p99(served: Served) -> None:
    unloaded: list[float] = []
    loaded: list[float] = []
    answers: dict[str, int] = {}
    for _ in range(ROUNDS):
        latencies, statuses = _real_round(served)
        assert set(statuses) == {200}, sorted(set(statuses))
        unloaded.append(_p99(latencies))
        hostile = _start_hostile(served, seconds=TIMEOUT_MS / 1000 * 4)
        try:
            latencies, statuses = _real_round(served)
        finally:
            round_answers = _hostile_answers(hostile)
        assert set(statuses) == {200}, f"real requests answered {sorted(set(statuses))} under slow clients"
        loaded.append(_p99(latencies))
        for status, count in round_answers.items():
            answers[status] = answers.get(status, 0) + count
    # The hostile connections were cut by the read timeouts (408) and the per-client cap (503).
    assert answers.get("408", 0) > 0 and answers.get("503", 0) > 0, answers
    assert served.process.poll() is None
    ratio = statistics.median(loaded) / statistics.median(unloaded)
    print(
        f"slow clients: {len(HOSTILE_SOURCES) * PER_SOURCE} hostile connections; real p99 per round "
        f"unloaded {[round(x * 1000, 2) for x in unloaded]} ms, under attack "
        f"{[round(x * 1000, 2) for x in loaded]} ms; median ratio {ratio:.2f}; hostile answers {answers}"
    )
    added_ms = (statistics.median(loaded) - statistics.median(unloaded)) * 1000
    assert ratio <= 2.0 or added_ms <= SLACK_MS, (
        f"p99 under slow clients is {ratio:.2f}x the unloaded p99 (+{added_ms:.2f} ms, allowed 2x or +{SLACK_MS} ms)"
    )


def _answer_to(served: Served, raw: bytes, source: str = "127.0.0.6") -> tuple[int, dict[str, object]]:
    """Send ``raw`` on a fresh connection and read the server's answer (waiting out timeouts)."""
    host, port = _address(served)
    with socket.create_connection((host, port), timeout=30, source_address=(source, 0)) as conn:
        conn.sendall(raw)
        status, body = _read_answer(conn, bytearray())
        with contextlib.suppress(ConnectionResetError):  # closed with unread request bytes: also closed
            assert conn.recv(1) == b"", "the server keeps a refused connection open"
    error: dict[str, object] = orjson.loads(body)["error"]
    return status, error


def test_refusals_use_the_error_shape_and_close(served: Served) -> None:
    host, _ = _address(served)
    head = (
        f"POST /v1/features/fraud_scoring HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    ).encode()
    assert _answer_to(served, b"NOT HTTP AT ALL\r\n\r\n")[1]["code"] == "malformed_request"
    status, error = _answer_to(served, b"GET /healthz HTTP/1.1\r\nx-pad: " + b"a" * 70_000)
    assert (status, error["code"]) == (431, "headers_too_large")
    status, error = _answer_to(served, head[:30])
    assert (status, error["code"]) == (408, "request_timeout") and "headers" in str(error["message"])
    status, error = _answer_to(served, head + BODY[:5])
    assert (status, error["code"]) == (408, "request_timeout") and "body" in str(error["message"])
    port = _address(served)[1]
    with socket.create_connection((host, port), timeout=30, source_address=("127.0.0.7", 0)) as idle:
        assert idle.recv(1) == b"", "an idle connection is closed after the header timeout"


def test_connections_over_the_per_client_cap_are_refused(served: Served) -> None:
    host, port = _address(served)
    source = "127.0.0.8"
    held = [
        socket.create_connection((host, port), timeout=30, source_address=(source, 0)) for _ in range(MAX_PER_CLIENT)
    ]
    try:
        status, error = _answer_to(served, b"", source=source)  # refused at once, before any request
        assert (status, error["code"], error["reason"]) == (503, "too_many_connections", "too_many_connections")
        # Another address is unaffected.
        assert _real_round_ok(served)
    finally:
        for conn in held:
            conn.close()


def _real_round_ok(served: Served) -> bool:
    host, port = _address(served)
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        return _read_answer(conn, bytearray())[0] == 200


@pytest.mark.parametrize("path", ["/v1/features/fraud_scoring", "/get-online-features"])
def test_a_declared_length_over_the_limit_is_refused_before_the_body(served: Served, path: str) -> None:
    """The load-shedding middleware read the body before any route checked Content-Length:
    a client declaring 1 GB held its connection until the body timeout (408). Now 413 at
    once, naming the declared size and the limit."""
    with socket.create_connection(_address(served), timeout=10) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            'content-length: 999999999\r\n\r\n{"ent'.encode("ascii")
        )
        started = time.monotonic()
        status, body = _read_answer(conn, bytearray())
        waited = time.monotonic() - started
    assert status == 413, body
    assert waited < TIMEOUT_MS / 1000, waited  # not the body timeout
    assert b"999999999 bytes declared" in body, body

"""Serving under faults, as real processes: overload shedding and a Redis outage."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_lib

from engine.definitions import load_repo
from tests.faults.faults_support import applied_data_dir, serve, trials
from tests.fixtures.redis import RedisServer
from tests.serving.serving_support import REPO_DIR, make_events, write_redis

GOOD = {"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _timed(reader: asyncio.StreamReader, start: float) -> tuple[int, float, dict[str, Any], str | None]:
    status, headers, body = await _read_response(reader)
    return status, time.perf_counter() - start, orjson.loads(body), headers.get("retry-after")


async def _burst(url: str, concurrency: int, rounds: int) -> list[tuple[int, float, dict[str, Any], str | None]]:
    """Raw keep-alive connections that all send at the same instant: a real burst.

    An httpx client in one Python process is slower than the server, so it cannot overload it.
    """
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(GOOD)
    request = (
        f"POST /v1/features/fraud_scoring HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    out: list[tuple[int, float, dict[str, Any], str | None]] = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            for _reader, writer in conns:
                writer.write(request)

            out.extend(await asyncio.gather(*(_timed(reader, start) for reader, _ in conns)))
    finally:
        for _reader, writer in conns:
            writer.close()
    return out


@pytest.mark.slow
def test_overload_is_shed_fast_and_admitted_latency_stays_bounded(tmp_path: Path) -> None:
    data = applied_data_dir(tmp_path)
    max_in_flight = 8
    with serve(data, env={"STREAMFEAT_MAX_IN_FLIGHT": str(max_in_flight)}) as served:
        results = asyncio.run(_burst(served.url, concurrency=128, rounds=trials(5, 20)))
        health = httpx.get(served.url + "/healthz", timeout=5.0)
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    shed = [r for r in results if r[0] == 503]
    served_ok = [r for r in results if r[0] == 200]
    assert shed, "128 concurrent requests against max_in_flight=8 should shed some"
    assert served_ok, "shedding must not refuse everything"
    for _status, _latency, body, retry_after in shed:
        assert body["error"]["code"] == "overloaded" and body["error"]["reason"] == "overloaded"
        assert retry_after == "1"
    for _status, _latency, body, _ in served_ok:
        assert body["service"] == "fraud_scoring" and len(body["features"]) == 1
    # Admitted requests wait behind at most max_in_flight others, not behind the whole burst.
    ok_latencies = sorted(r[1] for r in served_ok)
    p99 = ok_latencies[int(0.99 * (len(ok_latencies) - 1))]
    assert p99 < 2.0, f"admitted p99 {p99:.3f} s"
    assert statistics.median(r[1] for r in shed) < 2.0
    assert health.status_code == 200
    print(
        f"overload: {len(results)} requests, {len(shed)} shed (503), {len(served_ok)} served, "
        f"admitted p50 {statistics.median(ok_latencies) * 1000:.1f} ms p99 {p99 * 1000:.1f} ms"
    )


@pytest.mark.redis
@pytest.mark.slow
def test_redis_outage_is_503_with_reason_and_serving_recovers_by_itself(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, persistent=True)
    redis.start()
    try:
        write_redis(redis.url, load_repo(REPO_DIR).views, make_events(), meta_for=("user_spend",))
        data = applied_data_dir(tmp_path)
        with serve(data, "--online", "redis", "--redis-url", redis.url) as served:
            url = served.url + "/v1/features/fraud_scoring"
            before = httpx.post(url, json=GOOD, timeout=10.0)
            assert before.status_code == 200, before.text
            outages = trials(2, 5)
            for _ in range(outages):
                redis.stop()
                down = httpx.post(url, json=GOOD, timeout=10.0)
                assert down.status_code == 503, down.text
                error = down.json()["error"]
                assert error["code"] == "online_table_unavailable" and error["reason"], error
                not_ready = httpx.get(served.url + "/readyz", timeout=10.0)
                assert not_ready.status_code == 503
                reason = not_ready.json()["error"]["reason"]
                assert reason.count("Connection refused") == 1, reason  # the cause is said once
                assert httpx.get(served.url + "/healthz", timeout=10.0).status_code == 200
                redis.start()
                deadline = time.monotonic() + 15.0
                while (after := httpx.post(url, json=GOOD, timeout=10.0)).status_code != 200:
                    assert time.monotonic() < deadline, f"serving did not recover: {after.text}"
                    time.sleep(0.2)
                # Same data, same process: the answer is what it was before the outage.
                assert after.json()["features"] == before.json()["features"]
            # A Redis that comes back empty (flushed, or restarted without persistence) is not
            # answered as NOT_FOUND for everyone: 503 naming the lost copy until it is refilled.
            admin: redis_lib.Redis[bytes] = redis_lib.Redis.from_url(redis.url)
            admin.flushall()
            admin.close()
            lost = httpx.post(url, json=GOOD, timeout=10.0)
            assert lost.status_code == 503, lost.text
            assert "lacks the online copy" in lost.json()["error"]["reason"], lost.text
            assert httpx.get(served.url + "/readyz", timeout=10.0).status_code == 503
            write_redis(redis.url, load_repo(REPO_DIR).views, make_events(), meta_for=("user_spend",))
            deadline = time.monotonic() + 15.0
            while (refilled := httpx.post(url, json=GOOD, timeout=10.0)).status_code != 200:
                assert time.monotonic() < deadline, f"serving did not recover: {refilled.text}"
                time.sleep(0.2)
            assert refilled.json()["features"] == before.json()["features"]
            assert served.process.poll() is None, "serving must not have restarted"
    finally:
        redis.stop()

"""Losing a host for real: a three-"host" cluster (each its own process group, data
directory and loopback address) writes Redis; one host is SIGKILLed mid-stream and its
disk deleted; a replacement with an empty data directory restores that host's shards
from the changelog. A feature server reading Redis then serves the reference values,
with every record applied exactly once (counts and sums would show a loss or a double)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.definitions import load_repo
from engine.metrics import kafka_end_offsets
from engine.processes import stop_process_group
from engine.state.online_redis import RedisOnlineTable
from tests.engine.cluster_support import SHARDS, cluster_addresses, produce, run_cluster, start_host
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    check_online_values,
    copy_repo,
    expected_values,
    is_purchase,
    read_topic,
    reference_events,
)
from tests.faults.faults_support import serve, trials

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

PARTITIONS = 3
LATENESS_MS = 300_000
PROGRESS_WAIT_S = 120.0


def _wait_until_applying(redis_url: str, topic: str) -> None:
    """Until some shard has applied records of ``topic`` (the kill then lands mid-stream)."""
    table = RedisOnlineTable(redis_url)
    try:
        deadline = time.monotonic() + PROGRESS_WAIT_S
        while not any(r.applied_offset >= 0 for shard in table.read_offsets(topic) or [] for r in shard.values()):
            assert time.monotonic() < deadline, f"no shard applied anything of {topic!r} in {PROGRESS_WAIT_S} s"
            time.sleep(0.05)
    finally:
        table.close()


def _behind_the_end(redis_url: str, topic: str, bootstrap: str) -> int:
    """1 when some shard has not yet applied the topic's last records (the usual case)."""
    ends = kafka_end_offsets(bootstrap, topic)
    table = RedisOnlineTable(redis_url)
    try:
        offsets = table.read_offsets(topic) or []
    finally:
        table.close()
    done = len(offsets) == SHARDS and all(
        shard.get(p) is not None and shard[p].applied_offset >= end - 1 for shard in offsets for p, end in ends.items()
    )
    return 0 if done else 1


def _served_rows(url: str, pairs: list[tuple[str, str]], t: int) -> list[dict[str, Any]]:
    body = {
        "entities": {"user_id": [u for u, _ in pairs], "merchant_id": [m for _, m in pairs]},
        "request_data": {"amount": [10.0] * len(pairs)},
        "as_of": t,
    }
    answer = httpx.post(f"{url}/v1/features/fraud_scoring", json=body, timeout=30.0)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["features"]
    return rows


def test_killed_host_replaced_with_an_empty_disk_serves_reference_values(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], redis_server: str
) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    repo = copy_repo(tmp_path, topic)
    online = ("--online", "redis", "--redis-url", redis_server)
    hosts = [tmp_path / f"host-{i}" for i in range(3)]
    rounds = trials(1, 3)  # STREAMFEAT_FAULTS=long: three hosts lost in a row
    killed_mid_stream = 0
    for round_ in range(rounds):
        produce(kafka_bootstrap, topic, seed=50 + round_, offset_ms=round_ * 250_000, events=6_000)
        cluster = cluster_addresses(len(hosts))
        procs = [
            start_host(repo, d, kafka_bootstrap, cluster, i, *online, until_caught_up=False)
            for i, d in enumerate(hosts)
        ]
        try:
            try:
                _wait_until_applying(redis_server, topic)
            except AssertionError as exc:  # say what each host said: a stuck cluster is otherwise opaque
                said = [
                    f"host {i} (exit {proc.poll()}): {(d / 'run.stderr').read_text(errors='replace')[-1500:]}"
                    for i, (proc, d) in enumerate(zip(procs, hosts, strict=True))
                ]
                raise AssertionError("\n".join([str(exc), *said])) from exc
            killed_mid_stream += _behind_the_end(redis_server, topic, kafka_bootstrap)
            os.killpg(procs[1].pid, signal.SIGKILL)  # the host is gone, mid-stream ...
            procs[1].wait(timeout=30)
        finally:
            for proc in procs:  # ... and the survivors stop with it: the cluster restarts
                stop_process_group(proc, signal.SIGINT, timeout_s=10, kill_timeout_s=10)
        shutil.rmtree(hosts[1])  # ... with its disk
    produce(kafka_bootstrap, topic, seed=60, offset_ms=rounds * 250_000, events=2_000)
    run_cluster(repo, hosts, kafka_bootstrap, *online)  # host 1 is the replacement

    records = read_topic(kafka_bootstrap, topic, PARTITIONS)
    applied = applied_events(reference_events(records), LATENESS_MS)
    views = {v.name: v for v in load_repo(repo).views}
    table = RedisOnlineTable(redis_server)
    try:
        assert check_online_values(table, views, applied) > 100  # every entity of every view
        ends = {p: max(r.offset for r in records if r.partition == p) for p in range(PARTITIONS)}
        offsets = table.read_offsets(topic) or []
        assert len(offsets) == SHARDS  # every shard applied every record, the replacement's too
        assert all(shard[p].applied_offset == end for shard in offsets for p, end in ends.items())
    finally:
        table.close()

    # The feature server reading Redis answers as the reference, as of the last event.
    t_end = max(e["e"] for e in applied)
    pairs = list(dict.fromkeys(e["pair"] for e in applied if is_purchase(e)))[:40]
    with serve(hosts[0], *online, repo=repo) as served:
        rows = _served_rows(served.url, pairs, t_end)
    compared = 0
    for (user, merchant), row in zip(pairs, rows, strict=True):
        want = {
            **expected_values(views["user_spend"], applied, user, t_end),
            **expected_values(views["merchant_activity"], applied, merchant, t_end, key_field="merchant"),
            **expected_values(views["user_merchant_spend"], applied, (user, merchant), t_end, key_field="pair"),
            **expected_values(views["user_lifetime"], applied, user, t_end),
            **expected_values(views["user_amount_profile"], applied, user, t_end),
        }
        # Every served stream feature (the on-demand ones are checked by the serving tests),
        # with the suite's one comparison rule: exact, within 1e-9, a list, or a sketch's bound.
        served_stream = {name: value for name, value in row.items() if name in want}
        assert_close(served_stream, {name: want[name] for name in served_stream}, f"{user} x {merchant}")
        compared += len(served_stream)
    assert compared >= len(pairs) * 10
    print(f"host loss: {rounds} host(s) killed, {killed_mid_stream} of them with records still unapplied")

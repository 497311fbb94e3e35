"""Future-dated events among real traffic, through a real broker (issue 14, item 1).

Each of 3 partitions carries 20 minutes of real traffic up to the wall clock, one event 4
minutes ahead (inside max_future_skew) and a few 20 hours ahead. On the previous rules the
20-hour events were accepted (skew 1 day) and moved their partition's watermark, so every
later real event of the partition went to the dead-letter topic as late_event. Now the far
ones are refused as timestamp_in_future, the near one is applied but cannot move the
watermark on its own, no real event is refused, and every value equals the reference. The
run is split in two with a restart between, so the ranked watermark is restored from the
offset records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.clock import wall_clock_ms
from engine.io.dead_letters import read_dead_letters
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    check_online_values,
    example_views,
    make_job,
    read_topic,
    reference_events,
)
from tests.reference import apply_watermark

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
PER_PARTITION = 400
STEP_MS = 3_000  # 400 events over 20 minutes per partition
NEAR_FUTURE_MS = 4 * 60_000
FAR_FUTURE_MS = 20 * 3_600_000


def _event(i: int, partition: int, ts: int, user: str) -> dict[str, Any]:
    return {
        "transaction_id": f"t{partition}-{i}",
        "user_id": user,
        "merchant_id": f"m{i % 5}",
        "card_id": f"c{i % 7}",
        "amount": float(1 + (i * 7 + partition) % 90),
        "currency": "EUR",
        "event_type": "PURCHASE" if i % 5 else "REFUND",
        "ts": ts,
    }


def _records(now: int, part: int) -> list[list[bytes]]:
    """Per partition, the values of one half of the run (index ``part``)."""
    out: list[list[bytes]] = []
    for p in range(PARTITIONS):
        start = now - PER_PARTITION * STEP_MS
        values: list[bytes] = []
        for i in range(part * PER_PARTITION // 2, (part + 1) * PER_PARTITION // 2):
            values.append(orjson.dumps(_event(i, p, start + i * STEP_MS, f"u{(i + p) % 30}")))
            if i == 61 + 40 * p:  # one near-future purchase per partition, in the first half
                values.append(orjson.dumps(_event(10_000 + i, p, now + NEAR_FUTURE_MS, f"ahead{p}")))
            if i % 50 == 7:  # far-future events in both halves
                values.append(orjson.dumps(_event(20_000 + i, p, now + FAR_FUTURE_MS, f"u{i % 30}")))
        out.append(values)
    return out


def _produce(bootstrap: str, topic: str, per_partition: list[list[bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True})
    for partition, values in enumerate(per_partition):
        for value in values:
            producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_future_dated_events_do_not_make_real_traffic_late(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    now = wall_clock_ms()
    job = make_job(tmp_path, topic, kafka_bootstrap)
    for part in (0, 1):  # a restart between the halves restores the watermark from state
        _produce(kafka_bootstrap, topic, _records(now, part))
        run_main(build_flow(job))  # type: ignore[no-untyped-call]

    records = read_topic(kafka_bootstrap, topic, PARTITIONS)
    far = {r.value for r in records if orjson.loads(r.value)["ts"] >= now + FAR_FUTURE_MS}
    assert len(far) == PARTITIONS * (PER_PARTITION // 50)
    events = [{**e, "valid": e["e"] < now + FAR_FUTURE_MS} for e in reference_events(records)]
    applied = apply_watermark(events, job.source.allowed_lateness_ms)
    # The reference agrees that no real (or near-future) event is late.
    assert len(applied) == len(records) - len(far)

    letters = read_dead_letters(kafka_bootstrap, job.source.dlq_topic)
    assert Counter(str(getattr(d.reason, "value", d.reason)) for d in letters) == {"timestamp_in_future": len(far)}
    assert {d.value for d in letters} == far

    _, views = example_views(topic)
    table = RocksDBOnlineTable(job.state_dir, job.shards, tmp_path / "secondary", background=False)
    try:
        # As of the last applied event (a near-future one): every entity of both views.
        checked = check_online_values(table, {v.name: v for v in views}, applied)
    finally:
        table.close()
    purchase_pairs = {e["pair"] for e in applied if e["event_type"] == "PURCHASE"}
    # the users and "ahead" users in every user-keyed view of the repo, merchants m1-m4 (m0
    # only refunds), user x merchant pairs
    user_views = sum(1 for v in views if tuple(v.join_keys) == ("user_id",))
    assert user_views >= 1
    assert checked == user_views * (30 + PARTITIONS) + 4 + len(purchase_pairs)

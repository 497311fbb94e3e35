"""Values a sketch cannot hash or measure, through a real broker (issue #16 item 4).

The example repo's distinct counts read merchant_id and card_id, its percentiles read
amount. A record whose value for one of them is not a number (NaN, Infinity, a string,
an object), not a hashable scalar (an array, an object, null) or not Unicode text goes
to the dead-letter topic with a reason naming the field; the dataflow neither crashes
nor drops or counts it, and the served sketch values equal the reference over the
good records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    check_online_values,
    example_transaction,
    make_job,
    read_topic,
    reference_event,
    refused_reference_event,
    with_raw_field,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000
SHARDS = 2


def _good(i: int) -> dict[str, Any]:
    return example_transaction(
        i,
        START_MS + i * 20_000,
        user=f"u{i % 4}",
        merchant=f"m{(i * 7) % 11}",
        card=f"c{i % 5}",
        amount=round(3.5 + (i * 37 % 101) * 1.25, 2),
    )


# (field, raw JSON value, dead-letter reason, words its detail must hold)
BAD_VALUES: tuple[tuple[str, bytes, str, str], ...] = (
    ("amount", b"NaN", "wrong_type", "field 'amount': expected float"),
    ("amount", b"Infinity", "wrong_type", "field 'amount': expected float"),
    ("amount", b"-1e999", "wrong_type", "field 'amount': expected float"),
    ("amount", b'"12.5"', "wrong_type", "field 'amount': expected float"),
    ("amount", b'{"value": 12.5}', "wrong_type", "field 'amount': expected float"),
    ("merchant_id", b"[1, 2]", "wrong_type", "field 'merchant_id': expected string"),
    ("merchant_id", b'{"id": "m1"}', "wrong_type", "field 'merchant_id': expected string"),
    ("merchant_id", b"17", "wrong_type", "field 'merchant_id': expected string"),
    ("card_id", b"null", "missing_field", "field 'card_id' is null"),
    ("card_id", b"true", "wrong_type", "field 'card_id': expected string"),
)


def test_unhashable_and_unmeasurable_values_go_to_the_dlq_and_the_sketches_stay_exact(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    values: list[bytes] = []
    expected_letters: dict[int, tuple[str, str]] = {}
    for i in range(120):
        values.append(orjson.dumps(_good(i)))
        if i % 10 == 5:
            field, literal, reason, detail = BAD_VALUES[(i // 10) % len(BAD_VALUES)]
            expected_letters[len(values)] = (reason, detail)
            values.append(with_raw_field(_good(1000 + i), field, literal))
    # A lone surrogate in a distinct-count column, beside a non-finite number elsewhere.
    expected_letters[len(values)] = ("invalid_json", "lone UTF-16 surrogate")
    values.append(with_raw_field(_good(2000), "merchant_id", b'"m\\ud800"')[:-1] + b', "note": NaN}')
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "log_level": 0, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0

    job = make_job(tmp_path, topic, kafka_bootstrap, shards=SHARDS)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    letters = {letter.offset: letter for letter in read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))}
    assert sorted(letters) == sorted(expected_letters), "exactly the bad records are dead letters"
    for offset, (reason, detail) in expected_letters.items():
        assert letters[offset].reason == reason, (offset, letters[offset])
        assert detail in letters[offset].detail, letters[offset].detail

    records = read_topic(kafka_bootstrap, topic, 1)
    assert len(records) == len(values)
    events = [
        refused_reference_event(r.partition, r.offset)
        if r.offset in expected_letters
        else reference_event(orjson.loads(r.value), r.partition, r.offset)
        for r in records
    ]
    applied = applied_events(events, job.source.allowed_lateness_ms)
    assert len(applied) == len(values) - len(expected_letters)
    table = RocksDBOnlineTable(job.state_dir, SHARDS, tmp_path / "secondary", background=False)
    try:
        # Every example view, sketches included, equals the reference over the good records.
        assert check_online_values(table, {v.name: v for v in job.views}, applied) >= 4
    finally:
        table.close()

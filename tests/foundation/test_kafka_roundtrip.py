"""Generated events through a real broker: nothing lost, nothing duplicated, bytes intact."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from cli import main
from engine.exceptions import GenerateError
from engine.generate import GeneratorConfig, generate, produce_events

pytestmark = pytest.mark.kafka


def _unpack(message: Message) -> tuple[int, int, bytes | None, bytes]:
    error = message.error()
    assert error is None, f"consumer error: {error}"
    partition, offset, value = message.partition(), message.offset(), message.value()
    assert partition is not None and offset is not None and isinstance(value, bytes)
    key = message.key()
    assert key is None or isinstance(key, bytes)
    return partition, offset, key, value


def _consume_all(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> list[tuple[int, int, bytes | None, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"roundtrip-{uuid.uuid4().hex}",
            "log_level": 0,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[tuple[int, int, bytes | None, bytes]] = []
    deadline = time.monotonic() + 90
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(_unpack(m) for m in consumer.consume(num_messages=10_000, timeout=1.0))
        # Anything beyond the expected count would be a duplicate: look briefly.
        records.extend(_unpack(m) for m in consumer.consume(num_messages=10_000, timeout=2.0))
    finally:
        consumer.close()
    return records


def test_hundred_thousand_events_round_trip(kafka_topic: Callable[..., str], kafka_bootstrap: str) -> None:
    config = GeneratorConfig(events=100_000, users=5_000, seed=21, jitter_ms=200, malformed_fraction=0.01)
    topic = kafka_topic(3)
    report = produce_events(config, topic, kafka_bootstrap)
    assert report.events == 100_000
    sent = generate(config)
    assert report.malformed == int((sent.malformed >= 0).sum())

    received = _consume_all(kafka_bootstrap, topic, 3, config.events)
    assert len(received) == config.events

    # Each (partition, offset) exactly once, offsets dense from 0: nothing duplicated.
    per_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _, _ in received:
        per_partition[partition].append(offset)
    assert set(per_partition) == {0, 1, 2}
    for offsets in per_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))

    # The same multiset of (key, value) byte strings: nothing lost, nothing altered.
    assert Counter((k, v) for _, _, k, v in received) == Counter(zip(sent.keys, sent.values, strict=True))

    # Keyed by user: one user never spans partitions, and its events keep producer order.
    by_key: dict[bytes | None, list[tuple[int, int, bytes]]] = defaultdict(list)
    for partition, offset, key, value in received:
        by_key[key].append((partition, offset, value))
    sent_by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in zip(sent.keys, sent.values, strict=True):
        sent_by_key[key].append(value)
    for key, rows in by_key.items():
        assert key is not None
        assert len({p for p, _, _ in rows}) == 1
        assert [v for _, _, v in sorted(rows)] == sent_by_key[key]


def test_undelivered_records_raise_with_the_count(kafka_topic: Callable[..., str], kafka_bootstrap: str) -> None:
    # The broker refuses every batch bigger than 100 bytes: each record must be reported.
    topic = kafka_topic(1, config={"max.message.bytes": "100"})
    config = GeneratorConfig(events=500, seed=1)
    with pytest.raises(GenerateError, match=r"500 of 500 records") as caught:
        produce_events(config, topic, kafka_bootstrap, flush_timeout_s=60)
    assert topic in str(caught.value)


def test_cli_produces_to_a_topic(
    kafka_topic: Callable[..., str], kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = kafka_topic(3)
    # An explicit start and rate: the bytes must equal the library's defaults.
    argv = [
        "generate",
        "--events",
        "2000",
        "--seed",
        "3",
        "--malformed-fraction",
        "0.05",
        "--start",
        "2026-01-01T00:00:00Z",
        "--rate",
        "1000",
    ]
    assert main([*argv, "--topic", topic, "--bootstrap", kafka_bootstrap]) == 0
    out, err = capsys.readouterr()
    assert "produced 2,000 events" in out and "all delivered" in out
    assert "is not on the broker" not in err, err
    received = _consume_all(kafka_bootstrap, topic, 3, 2000)
    sent = generate(GeneratorConfig(events=2000, seed=3, malformed_fraction=0.05))
    assert sorted(v for _, _, _, v in received) == sorted(sent.values)


def test_cli_says_when_it_creates_the_topic(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"typo-{uuid.uuid4().hex[:8]}"
    assert main(["generate", "--events", "5", "--topic", topic, "--bootstrap", kafka_bootstrap]) == 0
    out, err = capsys.readouterr()
    assert f"note: topic '{topic}' is not on the broker at {kafka_bootstrap}: producing creates it" in err, err
    assert "produced 5 events" in out


def test_cli_reports_a_missing_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--events", "10", "--topic", "t", "--bootstrap", "127.0.0.1:1"]) == 1
    assert "no Kafka broker answers at 127.0.0.1:1" in capsys.readouterr().err

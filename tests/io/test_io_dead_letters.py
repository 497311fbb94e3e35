"""Dead-letter producer and reader against a real broker."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.io.batches import DeadLetter, dlq_topic_for
from engine.io.dead_letters import (
    DeadLetterProducer,
    SentDeadLetters,
    read_dead_letters,
    sent_dead_letters,
)
from engine.io.decoder import Decoder
from engine.io.exceptions import DeadLetterDeliveryError
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import NOW_MS, FakeSource, TopicFactory, dumps, good_event, raw_batch

pytestmark = pytest.mark.kafka


def _letters(topic: str) -> tuple[DeadLetter, ...]:
    values: list[bytes | None] = [
        dumps(good_event(0)),
        b"{broken",
        None,
        dumps({**good_event(3), "amount": "abc"}),
        dumps([1, 2]),
        dumps({**good_event(5), "user_id": "z" * 300}),
    ]
    keys: list[bytes | None] = [b"k0", b"k1", None, b"k3", b"k4", b"k5"]
    decoder = Decoder(FakeSource(topic=topic, max_payload_bytes=200), now_ms=lambda: NOW_MS, dlq_payload_cap=64)
    raw = raw_batch(values, partition=1, first_offset=40, keys=keys, topic=topic)
    out = decoder.decode(raw, PartitionWatermarks())
    assert len(out.dead_letters) == 5
    return out.dead_letters


def test_round_trip_with_headers_and_dedup(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = kafka_topic(partitions=1)
    dlq = dlq_topic_for(topic)
    # Two partitions, explicitly: the reader must merge and deduplicate across partitions.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(dlq, num_partitions=2, replication_factor=1)])[dlq].result(30)
    letters = _letters(topic)
    producer = DeadLetterProducer(kafka_bootstrap, topic)
    assert producer.dlq_topic == dlq

    assert producer.send(letters) == 5
    assert producer.send(letters[:2]) == 2  # a re-sent batch after a crash: duplicates on the wire
    assert producer.send([]) == 0
    producer.close()

    assert producer.counts == Counter({"invalid_json": 4, "wrong_type": 1, "not_an_object": 1, "payload_too_large": 1})
    back = read_dead_letters(kafka_bootstrap, dlq)
    assert back == list(letters)  # original key and (capped) bytes, reason, detail, position
    assert back[1].key is None and back[1].value is None  # the tombstone stays a tombstone
    assert "value truncated to 64 of" in back[-1].detail

    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "log_level": 0, "group.id": "t", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(dlq, p, 0) for p in (0, 1)])
    raw: list[Message] = []
    deadline = time.monotonic() + 30
    while len(raw) < 7 and time.monotonic() < deadline:
        raw += [m for m in consumer.consume(num_messages=7, timeout=0.2) if m.error() is None]
    consumer.close()
    assert len(raw) == 7
    first = next(m for m in raw if m.key() == b"k3")
    assert dict(first.headers() or []) == {
        "reason": b"wrong_type",
        "detail": b"field 'amount': expected float, got str 'abc'; value truncated to 64 of 97 bytes",
        "source_topic": topic.encode(),
        "source_partition": b"1",
        "source_offset": b"43",
    }


def test_undeliverable_letters_raise_and_name_the_count() -> None:
    letters = _letters("transactions")
    producer = DeadLetterProducer(
        "127.0.0.1:1",
        "transactions",
        flush_timeout_s=3.0,
        producer_config={"message.timeout.ms": 1000, "log_level": 0},
    )
    with pytest.raises(DeadLetterDeliveryError, match="5 of 5 dead letters") as info:
        producer.send(letters)
    assert info.value.failed == 5
    assert producer.counts == Counter()


def test_sent_dead_letters_reads_back_what_a_restart_must_not_resend(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = kafka_topic(partitions=1)
    dlq = dlq_topic_for(topic)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(dlq, num_partitions=2, replication_factor=1)])[dlq].result(30)
    assert sent_dead_letters(kafka_bootstrap, dlq_topic_for(kafka_topic(partitions=1)), {1: 3}) == (
        SentDeadLetters({1: 3})
    )  # no dead-letter topic yet: only what the state says
    letters = _letters(topic)  # partition 1, offsets 41-45
    producer = DeadLetterProducer(kafka_bootstrap, topic)
    producer.send(letters)
    producer.close()

    # The state applied partition 1 through 42: 43-45 were sent for a batch not applied yet.
    sent = sent_dead_letters(kafka_bootstrap, dlq, {1: 42})
    assert sent.above == {(1, 43), (1, 44), (1, 45)}
    assert all(sent.contains(1, o) for o in range(0, 46))
    assert not sent.contains(1, 46) and not sent.contains(0, 41)
    # A partition the state never applied: every letter found counts, wherever it is.
    fresh = sent_dead_letters(kafka_bootstrap, dlq, {})
    assert fresh.above == {(1, o) for o in range(41, 46)}
    # The read-back limit bounds a restart's work (and says so in a warning).
    assert len(sent_dead_letters(kafka_bootstrap, dlq, {}, limit=2).above) <= 2

"""KafkaBatchSource against a real broker, inside real Bytewax dataflows."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Producer

from engine.io.batches import DecodedBatch, RawBatch
from engine.io.decoder import Decoder
from engine.io.exceptions import IoValueError, KafkaSourceError, TopicNotFoundError
from engine.io.kafka_source import KafkaBatchPartition, KafkaBatchSource, next_on_grid
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import NOW_MS, FakeSource, TopicFactory, dumps, good_event

pytestmark = pytest.mark.kafka


def _produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> dict[int, list[bytes]]:
    """Writes ``count`` records to each partition; returns the values per partition in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "linger.ms": 5, "enable.idempotence": True})
    written: dict[int, list[bytes]] = {}
    for partition, count in per_partition.items():
        values = [f'{{"p":{partition},"i":{i}}}'.encode() for i in range(count)]
        for i, value in enumerate(values):
            key = None if i % 10 == 0 else f"key-{partition}-{i}".encode()
            producer.produce(topic, key=key, value=value, partition=partition)
            producer.poll(0)
        written[partition] = values
    assert producer.flush(30) == 0
    return written


def _run(source: KafkaBatchSource) -> list[RawBatch]:
    out: list[RawBatch] = []
    flow = Dataflow("kafka_batch_source_test")
    stream = op.input("in", flow, source)
    op.output("out", stream, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    return out


def _by_partition(batches: list[RawBatch]) -> dict[int, tuple[list[int], list[bytes | None]]]:
    seen: dict[int, tuple[list[int], list[bytes | None]]] = {}
    for batch in batches:
        offsets, values = seen.setdefault(batch.partition, ([], []))
        offsets.extend(batch.offsets.tolist())
        values.extend(batch.values)
    return seen


def test_reads_every_record_once_then_resume_reads_exactly_the_rest(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = kafka_topic(partitions=3)
    counts = {0: 1200, 1: 700, 2: 0}  # an empty partition must end too
    written = _produce(kafka_bootstrap, topic, counts)

    batches = _run(KafkaBatchSource(kafka_bootstrap, topic, batch_size=256, tail=False))

    assert all(0 < len(b) <= 256 for b in batches)
    assert all(b.topic == topic for b in batches)
    seen = _by_partition(batches)
    assert set(seen) == {0, 1}
    for partition in (0, 1):
        offsets, values = seen[partition]
        assert offsets == list(range(counts[partition]))
        assert values == written[partition]
    keys = [k for b in batches if b.partition == 0 for k in b.keys]
    assert keys[:2] == [None, b"key-0-1"]

    resume = {0: 1000, 1: 700}  # partition 1 fully applied; partition 2 absent: from the start
    more = _produce(kafka_bootstrap, topic, {2: 5})
    rest = _by_partition(_run(KafkaBatchSource(kafka_bootstrap, topic, resume=resume, batch_size=64, tail=False)))
    assert set(rest) == {0, 2}
    assert rest[0] == (list(range(1000, 1200)), written[0][1000:])
    assert rest[2] == (list(range(5)), more[2])


def test_tail_false_stops_at_the_high_watermark_seen_at_build(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = kafka_topic(partitions=1)
    _produce(kafka_bootstrap, topic, {0: 30})
    source = KafkaBatchSource(kafka_bootstrap, topic, batch_size=7, tail=False)
    assert source.list_parts() == ["0"]
    part = source.build_part("step", "0", None)
    _produce(kafka_bootstrap, topic, {0: 10})  # arrives after the build: not part of this run
    offsets: list[int] = []
    deadline = time.monotonic() + 30
    with pytest.raises(StopIteration):
        while time.monotonic() < deadline:
            for batch in part.next_batch():
                offsets.extend(batch.offsets.tolist())
    part.close()
    assert offsets == list(range(30))


def test_tail_true_keeps_reading_new_records(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = kafka_topic(partitions=1)
    part = KafkaBatchSource(kafka_bootstrap, topic, resume={0: 0}).build_part("s", "0", None)
    try:
        _produce(kafka_bootstrap, topic, {0: 3})
        offsets: list[int] = []
        deadline = time.monotonic() + 30
        while len(offsets) < 3 and time.monotonic() < deadline:
            offsets.extend(o for b in part.next_batch() for o in b.offsets.tolist())
        assert offsets == [0, 1, 2]
        assert part.next_batch() == []  # caught up: empty, no error, no end
    finally:
        part.close()


def _wake_after_read(part: KafkaBatchPartition) -> tuple[list[RawBatch], datetime | None, datetime]:
    """One read, the wake-up it asked Bytewax for, and the clock just before asking."""
    batches = part.next_batch()
    before = datetime.now(UTC)
    return batches, part.next_awake(), before


def _waits_on_grid(awake: datetime | None, before: datetime, step_ms: int) -> bool:
    """``awake`` ends a wait of ``step_ms``: on that step's grid, at most one step ahead."""
    step = timedelta(milliseconds=step_ms)
    return (
        awake is not None
        and (awake - datetime(1970, 1, 1, tzinfo=UTC)) % step == timedelta(0)
        and timedelta(0) < awake - before <= step
    )


def test_waits_end_on_a_shared_grid() -> None:
    step = timedelta(milliseconds=20)
    at = datetime(2026, 12, 6, 3, 0, 0, 7_000, tzinfo=UTC)
    assert next_on_grid(at, step) == datetime(2026, 12, 6, 3, 0, 0, 20_000, tzinfo=UTC)
    # On a mark already: the next one, never a wait of zero.
    assert next_on_grid(at.replace(microsecond=20_000), step) == at.replace(microsecond=40_000)
    # Two partitions reading a few milliseconds apart wake together.
    assert next_on_grid(at, step) == next_on_grid(at + timedelta(milliseconds=12), step)
    assert next_on_grid(at, timedelta(0)) == at


def test_idle_partition_backs_off_to_the_cap_and_resets_when_records_come(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = kafka_topic(partitions=1)
    part = KafkaBatchSource(kafka_bootstrap, topic, resume={0: 0}, idle_wait_s=0.005, idle_wait_max_s=0.04).build_part(
        "s", "0", None
    )
    try:
        reads = [_wake_after_read(part) for _ in range(6)]
        assert all(batches == [] for batches, _, _ in reads)
        for (_, awake, before), want_ms in zip(reads, (5, 10, 20, 40, 40, 40), strict=True):
            assert _waits_on_grid(awake, before, want_ms), (awake, before, want_ms)
        _produce(kafka_bootstrap, topic, {0: 3})
        offsets: list[int] = []
        deadline = time.monotonic() + 30
        while len(offsets) < 3 and time.monotonic() < deadline:
            batches, _, _ = _wake_after_read(part)
            offsets.extend(o for b in batches for o in b.offsets.tolist())
        assert offsets == [0, 1, 2]
        # Records came: the next empty read waits the short idle wait again.
        batches, awake, before = _wake_after_read(part)
        while batches:  # (only if the broker split the three records over more reads)
            batches, awake, before = _wake_after_read(part)
        assert _waits_on_grid(awake, before, 5), (awake, before)
    finally:
        part.close()


def test_missing_topic_is_a_clear_error(kafka_bootstrap: str) -> None:
    source = KafkaBatchSource(kafka_bootstrap, "no-such-topic-streamfeat-io")
    with pytest.raises(TopicNotFoundError, match="'no-such-topic-streamfeat-io' does not exist"):
        source.list_parts()


def test_resume_offset_beyond_the_log_is_fatal_not_skipped(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = kafka_topic(partitions=1)
    _produce(kafka_bootstrap, topic, {0: 5})
    part: KafkaBatchPartition = KafkaBatchSource(kafka_bootstrap, topic, resume={0: 1_000_000}).build_part(
        "s", "0", None
    )
    try:
        deadline = time.monotonic() + 30
        with pytest.raises(KafkaSourceError, match=r"partition 0: error _AUTO_OFFSET_RESET"):
            while time.monotonic() < deadline:
                part.next_batch()
    finally:
        part.close()


def test_unreachable_broker_is_a_clear_error() -> None:
    source = KafkaBatchSource("127.0.0.1:1", "t", metadata_timeout_s=1.0)
    with pytest.raises(KafkaSourceError, match=r"127\.0\.0\.1:1: cannot read topic metadata"):
        source.list_parts()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(IoValueError, match="field 'resume'"):
        KafkaBatchSource("127.0.0.1:1", "t", resume={0: -5})
    with pytest.raises(IoValueError, match="field 'batch_size'"):
        KafkaBatchSource("127.0.0.1:1", "t", batch_size=0)
    with pytest.raises(IoValueError, match="field 'idle_wait_max_s'"):
        KafkaBatchSource("127.0.0.1:1", "t", idle_wait_s=0.01, idle_wait_max_s=0.005)


def test_unreachable_broker_while_tailing_is_retried_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As when the broker restarts under a running dataflow: reads come back empty, no error.
    part = KafkaBatchSource("127.0.0.1:1", "t", resume={0: 0}, consumer_config={"log_level": 0}).build_part(
        "s", "0", None
    )
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert part.next_batch() == []
    finally:
        part.close()
    assert any("transient error" in r.getMessage() for r in caplog.records)


def test_source_feeds_the_decoder_in_a_dataflow(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = kafka_topic(partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "log_level": 0, "linger.ms": 5, "enable.idempotence": True}
    )
    sent = 0
    for i in range(900):
        value = dumps(good_event(i)) if i % 30 else b"not json"
        producer.produce(topic, value=value, partition=i % 3)
        sent += 1
    assert producer.flush(30) == 0

    decoder = Decoder(FakeSource(topic=topic), now_ms=lambda: NOW_MS)
    marks = PartitionWatermarks()  # one worker: every partition is decoded on this thread
    out: list[DecodedBatch] = []
    flow = Dataflow("source_to_decoder")
    raw = op.input("in", flow, KafkaBatchSource(kafka_bootstrap, topic, batch_size=100, tail=False))
    decoded = op.map("decode", raw, lambda batch: decoder.decode(batch, marks))
    op.output("out", decoded, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]

    assert sum(b.raw_count for b in out) == sent
    assert sum(len(b) for b in out) == 870
    assert Counter(d.reason for b in out for d in b.dead_letters) == {"invalid_json": 30}
    assert marks.snapshot() == {p: (max(good_event(i)["ts"] for i in range(p, 900, 3) if i % 30),) for p in range(3)}

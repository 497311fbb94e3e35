"""Reading one changelog or progress partition to its committed end (``read_committed``:
records of aborted transactions never show). Owned here for both readers, the shard
restorer (engine/state/changelog.py) and the progress reader (engine/state/progress.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from engine.kafka_clients import logged_client_settings
from engine.state.exceptions import ChangelogUnavailable

if TYPE_CHECKING:  # imported where used at run time: a process that never reads Kafka skips it
    from confluent_kafka import Consumer, KafkaError, Message

READ_BATCH = 10_000
TIMEOUT_S = 30.0
#: A read that gets neither a record nor the partition's end for this long has lost its
#: broker without being told (librdkafka keeps reconnecting quietly).
STALL_S = 30.0
#: The most a reader holds fetched ahead of its caller (librdkafka's default, 64 MB).
#: Measured side by side on a 0.2 GB restore: 8 MB (the source reader's bound) made the
#: restore 2x slower (20 s against 10 s), so a restore keeps the default.
PREFETCH_KBYTES = 65_536
_LOG = logging.getLogger("streamfeat.state")
_RETRY_HINT = (
    "check the broker is reachable; a shard restore retries from the last batch it wrote "
    "(engine/state/restore_retry.py), other reads apply nothing and are retried on restart"
)


def committed_consumer(bootstrap: str, group: str) -> Consumer:
    """A consumer that never commits offsets, reports each partition's end and keeps the
    client's errors (a broker going away) for :func:`read_to_end`."""
    from confluent_kafka import Consumer

    class _Reader(Consumer):
        client_errors: list[tuple[float, str]]

    errors: list[tuple[float, str]] = []

    def on_error(err: KafkaError) -> None:
        # Without an error callback librdkafka only logs these and keeps reconnecting,
        # so a read would wait silently for as long as the broker is away.
        errors[:] = [(time.monotonic(), str(err))]  # the last one is all a read asks about

    consumer = _Reader(
        logged_client_settings(
            bootstrap,
            {
                "error_cb": on_error,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "queued.max.messages.kbytes": PREFETCH_KBYTES,
                # librdkafka's 1 MB per fetch, or less when the prefetch bound is lower
                "max.partition.fetch.bytes": min(1_048_576, PREFETCH_KBYTES * 1024),
            },
        )
    )
    consumer.client_errors = errors
    return consumer


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """Low and high watermark of one partition. A topic another host has just created
    may take a moment to reach this client's metadata and to get a partition leader, so
    an unknown partition or a missing leader is asked again for a while."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    transient = {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in transient or time.monotonic() > deadline:
                raise ChangelogUnavailable(
                    f"topic {topic!r} partition {partition}: could not read its end offsets: {exc}",
                    hint="check the broker is reachable; nothing was restored or resumed, restart to retry",
                ) from exc
            _LOG.info("topic %r partition %d: %s, asking again", topic, partition, exc.args[0].name())
            time.sleep(0.2)


def read_to_end(consumer: Consumer, topic: str, partition: int, start: int) -> Iterator[list[Message]]:
    """The partition's committed records from ``start`` to its end, in batches."""
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, start)])
    done = False
    began = heard = time.monotonic()
    while not done:
        batch: list[Message] = []
        for msg in consumer.consume(READ_BATCH, 1.0):
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.code() == err._PARTITION_EOF:
                done = True
            else:
                raise ChangelogUnavailable(
                    f"topic {topic!r} partition {partition}: read failed: {err}",
                    hint=_RETRY_HINT,
                )
        if batch or done:
            heard = time.monotonic()
        # An idle read that has not reached the end is waiting on the broker. Any error
        # since the read began counts, not only since the last batch: the client reports
        # a lost broker at once but still hands out what it had fetched before, so the
        # error is often older than the last batch.
        elif (failed := _error_since(consumer, began)) is not None:
            raise ChangelogUnavailable(
                f"topic {topic!r} partition {partition}: the read stopped: {failed}",
                hint=_RETRY_HINT,
            )
        elif time.monotonic() - heard > STALL_S:
            raise ChangelogUnavailable(
                f"topic {topic!r} partition {partition}: no record and no end of the partition for {STALL_S:.0f} s",
                hint=_RETRY_HINT,
            )
        if batch:
            yield batch


def _error_since(consumer: Consumer, since: float) -> str | None:
    """The last client error reported after ``since`` (monotonic), if any."""
    errors: list[tuple[float, str]] = getattr(consumer, "client_errors", [])
    return errors[-1][1] if errors and errors[-1][0] > since else None

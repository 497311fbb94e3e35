"""Reading one changelog or progress partition to its committed end (``read_committed``:
records of aborted transactions never show). Owned here for both readers, the shard
restorer (engine/state/changelog.py) and the progress reader (engine/state/progress.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from engine.state.exceptions import ChangelogError

READ_BATCH = 10_000
TIMEOUT_S = 30.0
_LOG = logging.getLogger("streamfeat.kafka.client")


def committed_consumer(bootstrap: str, group: str) -> Any:
    """A consumer that never commits offsets and reports each partition's end."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "logger": _LOG,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )


def watermarks(consumer: Any, topic: str, partition: int) -> tuple[int, int]:
    """Low and high watermark of one partition. A topic another host has just created
    may take a moment to reach this client's metadata, so an unknown partition is
    asked again for a while."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._UNKNOWN_PARTITION or time.monotonic() > deadline:
                raise ChangelogError(
                    f"topic {topic!r} partition {partition}: could not read its end offsets: {exc}",
                    hint="check the broker is reachable; nothing was restored or resumed, restart to retry",
                ) from exc
            _LOG.info("topic %r: not in the metadata yet, asking again", topic)
            time.sleep(0.2)


def read_to_end(consumer: Any, topic: str, partition: int, start: int) -> Iterator[list[Any]]:
    """The partition's committed records from ``start`` to its end, in batches."""
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, start)])
    done = False
    while not done:
        batch: list[Any] = []
        for msg in consumer.consume(READ_BATCH, 1.0):
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.code() == err._PARTITION_EOF:
                done = True
            else:
                raise ChangelogError(
                    f"topic {topic!r} partition {partition}: read failed: {err}",
                    hint="nothing of the failed read was applied; restart to retry",
                )
        if batch:
            yield batch

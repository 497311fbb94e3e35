"""Durable, movable shards: a compacted Kafka changelog of every committed WriteBatch.

One topic per source, ``<topic>.changelog``, compacted, with one partition per state
shard (partition N is shard N's copy). A shard commit (engine/state/rocksdb_store.py):

1. produces every changed key of the batch (tile, offset, freshness records; a delete is
   a tombstone) to the shard's partition inside ONE Kafka transaction, with the shard's
   own ``transactional.id`` (a second owner of the same shard fences the first);
2. after the transaction commits, writes the batch to RocksDB together with the
   changelog position (offset of its last record, ``engine/state/records.py``).

A crash between 1 and 2 leaves the changelog ahead of the local copy: the next open
replays the missing tail. Aborted transactions are never read (``read_committed``), so
a half-produced batch never reaches a restored shard. Restored state carries its own
offset records, so Kafka resumes exactly where the restored state stands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rocksdict

from engine.state.exceptions import ChangelogError
from engine.state.records import (
    CHANGELOG_POSITION_KEY,
    decode_changelog_position,
    encode_changelog_position,
)

_TIMEOUT_S = 30.0
_RESTORE_BATCH = 10_000
_LOG = logging.getLogger("streamfeat.kafka.client")


def changelog_topic(source_topic: str) -> str:
    return f"{source_topic}.changelog"


def _client_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _LOG}


def ensure_changelog_topic(bootstrap: str, source_topic: str, n_shards: int) -> str:
    """Create the compacted changelog topic (one partition per shard) if it is missing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = changelog_topic(source_topic)
    admin = AdminClient(_client_config(bootstrap))
    existing = admin.list_topics(timeout=_TIMEOUT_S).topics.get(topic)
    if existing is None:
        futures = admin.create_topics(
            [NewTopic(topic, n_shards, 1, config={"cleanup.policy": "compact"})],
            operation_timeout=_TIMEOUT_S,
        )
        try:
            futures[topic].result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another host created it first
                raise ChangelogError(
                    f"changelog topic {topic!r}: could not create it: {exc}",
                    hint="check the broker is reachable and allows topic creation",
                ) from exc
        existing = admin.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
    partitions = len(existing.partitions) if existing is not None else 0
    if partitions != n_shards:
        raise ChangelogError(
            f"changelog topic {topic!r}: expected {n_shards} partitions (one per state shard), found {partitions}",
            hint="the topic belongs to a state directory with another shard count; delete it or use a new source topic",
        )
    return topic


@dataclass(frozen=True)
class RestoreStats:
    shard: int
    records: int
    bytes: int
    seconds: float
    position: int | None


class ShardChangelog:
    """The changelog partition of one shard: transactional writer and restorer."""

    def __init__(self, bootstrap: str, source_topic: str, shard: int) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.topic = changelog_topic(source_topic)
        self.shard = shard
        self._producer = Producer(
            {
                **_client_config(bootstrap),
                "transactional.id": f"streamfeat.{self.topic}.shard-{shard:03d}",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        try:
            # Aborts whatever a previous owner of this shard left open, and fences it.
            self._producer.init_transactions(_TIMEOUT_S)
        except Exception as exc:
            raise ChangelogError(
                f"changelog {self.topic!r} shard {shard}: init_transactions failed: {exc}",
                hint="the broker must support transactions (transaction.state.log settings)",
            ) from exc

    def publish(self, changes: Mapping[bytes, bytes | None]) -> int:
        """Produce ``changes`` in one committed transaction; the offset of its last record."""
        last = -1
        failures: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            nonlocal last
            if err is not None:
                failures.append(str(err))
            else:
                last = max(last, int(msg.offset()))

        producer = self._producer
        try:
            producer.begin_transaction()
            for key, value in changes.items():
                while True:
                    try:
                        producer.produce(self.topic, value, key, partition=self.shard, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.flush(_TIMEOUT_S)
            if failures or last < 0:
                producer.abort_transaction(_TIMEOUT_S)
                raise ChangelogError(
                    f"changelog {self.topic!r} shard {self.shard}: "
                    f"{len(failures)} of {len(changes)} records not delivered: "
                    f"{failures[:1] or ['no delivery report']}",
                    hint="the batch was not committed; it is retried from Kafka on restart",
                )
            producer.commit_transaction(_TIMEOUT_S)
        except ChangelogError:
            raise
        except Exception as exc:
            raise ChangelogError(
                f"changelog {self.topic!r} shard {self.shard}: transaction failed: {exc}",
                hint="the batch was not committed; it is retried from Kafka on restart",
            ) from exc
        return last

    def close(self) -> None:
        self._producer.flush(_TIMEOUT_S)


class ShardRestorer:
    """Reads one shard's changelog partition into its RocksDB (no producer: never fences)."""

    def __init__(self, bootstrap: str, source_topic: str, shard: int) -> None:
        self.bootstrap = bootstrap
        self.topic = changelog_topic(source_topic)
        self.shard = shard

    def catch_up(self, db: rocksdict.Rdict) -> RestoreStats:
        """Bring ``db`` up to the changelog's committed end; refuse a copy ahead of it."""
        from confluent_kafka import Consumer, TopicPartition

        started = time.perf_counter()
        position = decode_changelog_position(db.get(CHANGELOG_POSITION_KEY))
        consumer = Consumer(
            {
                **_client_config(self.bootstrap),
                "group.id": f"streamfeat-restore-{self.topic}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        records = size = 0
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, self.shard), timeout=_TIMEOUT_S)
            if position is not None and position >= high:
                raise ChangelogError(
                    f"shard {self.shard}: local copy is at changelog offset {position}, "
                    f"but {self.topic!r} partition {self.shard} ends at {high - 1}",
                    hint="the shard directory is stale or belongs to another deployment: "
                    "delete it and restart to restore it from the changelog",
                )
            start = low if position is None else position + 1
            if start >= high:
                return RestoreStats(self.shard, 0, 0, time.perf_counter() - started, position)
            consumer.assign([TopicPartition(self.topic, self.shard, start)])
            done = False
            while not done:
                batch = rocksdict.WriteBatch(raw_mode=True)
                for msg in consumer.consume(_RESTORE_BATCH, 1.0):
                    err = msg.error()
                    if err is not None:
                        if err.code() == err._PARTITION_EOF:
                            done = True
                            continue
                        raise ChangelogError(
                            f"changelog {self.topic!r} shard {self.shard}: read failed: {err}",
                            hint="nothing of the failed read was applied; restart to retry",
                        )
                    key, value, offset = msg.key(), msg.value(), msg.offset()
                    if not isinstance(key, bytes) or offset is None:
                        raise ChangelogError(
                            f"changelog {self.topic!r} shard {self.shard}: record at offset "
                            f"{offset} has no key: expected a state key, got {key!r}",
                            hint="only streamfeat may write to the changelog topic",
                        )
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
                        size += len(value)
                    size += len(key)
                    records += 1
                    position = offset
                if position is not None and not batch.is_empty():
                    batch.put(CHANGELOG_POSITION_KEY, encode_changelog_position(position))
                    db.write(batch)
        finally:
            consumer.close()
        return RestoreStats(self.shard, records, size, time.perf_counter() - started, position)

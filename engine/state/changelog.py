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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import rocksdict

from engine.kafka_clients import logged_client_settings
from engine.state.committed_reader import committed_consumer, read_to_end, watermarks
from engine.state.exceptions import ChangelogError, ChangelogUnavailable
from engine.state.progress import PROGRESS_TOPIC_CONFIG, ShardOwner, owner_record, progress_records, progress_topic
from engine.state.records import (
    CHANGELOG_IDENTITY_KEY,
    CHANGELOG_POSITION_KEY,
    decode_changelog_position,
    encode_changelog_identity,
    encode_changelog_position,
)
from engine.wording import counted

_TIMEOUT_S = 30.0
_RESTORE_BATCH = 10_000
_LOG = logging.getLogger("streamfeat.restore")


if TYPE_CHECKING:  # imported where used at run time: a process that never writes a changelog skips it
    from confluent_kafka import KafkaError, Message, Producer
    from confluent_kafka.admin import AdminClient

#: The delivery report librdkafka calls once per produced record: (error or None, message).
DeliveryReport = Callable[["KafkaError | None", "Message"], None]


def changelog_topic(source_topic: str) -> str:
    return f"{source_topic}.changelog"


def ensure_changelog_topic(bootstrap: str, source_topic: str, n_shards: int) -> str:
    """Create the compacted changelog topic (one partition per shard) and its progress
    topic (engine/state/progress.py) if they are missing."""
    from confluent_kafka.admin import AdminClient

    topic = changelog_topic(source_topic)
    admin = AdminClient(logged_client_settings(bootstrap))
    partitions = _ensure_topic(admin, topic, n_shards, {"cleanup.policy": "compact"})
    if partitions != n_shards:
        raise ChangelogError(
            f"changelog topic {topic!r}: expected {n_shards} partitions (one per state shard), found {partitions}",
            hint="the topic belongs to a state directory with another shard count; delete it or use a new source topic",
        )
    _ensure_topic(admin, progress_topic(source_topic), 1, PROGRESS_TOPIC_CONFIG)
    return topic


def _ensure_topic(admin: AdminClient, topic: str, partitions: int, config: dict[str, str]) -> int:
    """Create ``topic`` unless it exists; the number of partitions it has."""
    from confluent_kafka import KafkaException
    from confluent_kafka.cimpl import NewTopic

    existing = admin.list_topics(timeout=_TIMEOUT_S).topics.get(topic)
    if existing is None:
        futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config)], operation_timeout=_TIMEOUT_S)
        try:
            futures[topic].result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another host created it first
                raise ChangelogError(
                    f"changelog topic {topic!r}: could not create it: {exc}",
                    hint="check the broker is reachable and allows topic creation",
                ) from exc
        # A topic just created reaches the metadata of every broker a moment later.
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            existing = admin.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
            found = existing is not None and existing.error is None and len(existing.partitions) > 0
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    return len(existing.partitions) if existing is not None else 0


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
        self.source_topic = source_topic
        self.progress_topic = progress_topic(source_topic)
        self.shard = shard
        producer = Producer(
            {
                **logged_client_settings(bootstrap),
                "transactional.id": f"streamfeat.{self.topic}.shard-{shard:03d}",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        # Aborts whatever a previous owner of this shard left open, and fences it.
        failed = _init_transactions(producer)
        if failed is not None:
            # A timed-out init goes on inside the client and would fence the producer of
            # the next attempt (engine/state/restore_retry.py) when it completes: drop the
            # last reference now, which destroys the client.
            del producer
            raise ChangelogUnavailable(
                f"changelog {self.topic!r} shard {shard}: init_transactions failed: {failed}",
                hint="check the broker is reachable; it must support transactions (transaction.state.log settings)",
            )
        self._producer = producer

    def publish(self, changes: Mapping[bytes, bytes | None]) -> int:
        """Produce ``changes`` and their progress records in one committed transaction;
        the offset of its last changelog record."""
        records = [(self.topic, self.shard, key, value) for key, value in changes.items()]
        records += [(self.progress_topic, 0, k, v) for k, v in progress_records(self.shard, self.source_topic, changes)]
        return self._transaction(records, len(changes), "the batch")

    def announce(self, owner: ShardOwner) -> None:
        """Record in the progress topic who owns this shard and whether it is restoring
        (``streamfeat status`` shows it; nothing reads it to decide anything)."""
        key, value = owner_record(self.shard, owner)
        self._transaction([(self.progress_topic, 0, key, value)], 0, "the owner record")

    def _transaction(
        self, records: list[tuple[str, int, bytes, bytes | None]], changelog_records: int, what: str
    ) -> int:
        """Produce ``records`` in one committed transaction; the offset of the last of its
        ``changelog_records`` changelog records (-1 when it has none)."""
        last = -1
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            nonlocal last
            if err is not None:
                failures.append(str(err))
            elif msg.topic() == self.topic and (offset := msg.offset()) is not None:  # set once delivered
                last = max(last, offset)

        producer = self._producer
        try:
            producer.begin_transaction()
            for topic, partition, key, value in records:
                self._produce(topic, partition, key, value, on_delivery)
            producer.flush(_TIMEOUT_S)
            if failures or (changelog_records and last < 0):
                producer.abort_transaction(_TIMEOUT_S)
                raise ChangelogUnavailable(
                    f"changelog {self.topic!r} shard {self.shard}: "
                    f"{len(failures)} of {counted(len(records), 'record')} not delivered: "
                    f"{failures[:1] or ['no delivery report']}",
                    hint=f"{what} was not committed; it is retried from Kafka on restart",
                )
            producer.commit_transaction(_TIMEOUT_S)
        except ChangelogError:
            raise
        except Exception as exc:
            raise ChangelogUnavailable(
                f"changelog {self.topic!r} shard {self.shard}: transaction failed: {exc}",
                hint=f"{what} was not committed; it is retried from Kafka on restart",
            ) from exc
        return last

    def _produce(
        self, topic: str, partition: int, key: bytes, value: bytes | None, on_delivery: DeliveryReport
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def close(self) -> None:
        self._producer.flush(_TIMEOUT_S)


class ShardRestorer:
    """Reads one shard's changelog partition into its RocksDB (no producer: never fences)."""

    def __init__(self, bootstrap: str, source_topic: str, shard: int) -> None:
        self.bootstrap = bootstrap
        self.topic = changelog_topic(source_topic)
        self.shard = shard
        #: Records removed from a stale or foreign local copy by the last catch_up.
        self.wiped = 0

    def catch_up(self, db: rocksdict.Rdict) -> RestoreStats:
        """Bring ``db`` up to the changelog's committed end.

        A local copy that cannot be a prefix of this changelog partition (written from
        another changelog, another shard or a re-created topic; or further than the
        partition's end) is wiped and restored from the beginning instead of served.
        """
        started = time.perf_counter()
        position = decode_changelog_position(db.get(CHANGELOG_POSITION_KEY))
        identity = encode_changelog_identity(self.topic, self.shard, _topic_id(self.bootstrap, self.topic))
        consumer = committed_consumer(self.bootstrap, f"streamfeat-restore-{self.topic}")
        records = size = 0
        try:
            low, high = watermarks(consumer, self.topic, self.shard)
            reason = _foreign_copy(db.get(CHANGELOG_IDENTITY_KEY), identity, position, high)
            if reason is not None:
                _LOG.warning("shard %d: %s; wiping it and restoring from %r", self.shard, reason, self.topic)
                self.wiped = _wipe(db)
                position = None
            if db.get(CHANGELOG_IDENTITY_KEY) != identity:
                db[CHANGELOG_IDENTITY_KEY] = identity
            start = low if position is None else position + 1
            if start >= high:
                return RestoreStats(self.shard, 0, 0, time.perf_counter() - started, position)
            for messages in read_to_end(consumer, self.topic, self.shard, start):
                batch = rocksdict.WriteBatch(raw_mode=True)
                for msg in messages:
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


def _init_transactions(producer: Producer) -> str | None:
    """Why ``init_transactions`` failed, or None. Returns the reason as text, so no
    traceback keeps ``producer`` alive after its caller lets it go."""
    try:
        producer.init_transactions(_TIMEOUT_S)
    except Exception as exc:
        return str(exc)
    return None


def _topic_id(bootstrap: str, topic: str) -> str:
    """Kafka's id of ``topic`` (a deleted and re-created topic gets a new one)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(logged_client_settings(bootstrap))
    try:
        described = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=_TIMEOUT_S)
    except Exception as exc:
        raise ChangelogUnavailable(
            f"changelog topic {topic!r}: could not describe it: {exc}",
            hint="check the broker is reachable; nothing was restored, it is retried",
        ) from exc
    return str(described.topic_id)


def _foreign_copy(local_identity: bytes | None, identity: bytes, position: int | None, high: int) -> str | None:
    """Why a local shard copy cannot continue from this changelog partition, or None."""
    if local_identity is not None and local_identity != identity:
        return (
            f"the local copy was written from changelog {local_identity.decode(errors='replace')!r}, "
            f"not {identity.decode()!r}"
        )
    if position is not None and position >= high:
        return f"the local copy is at changelog offset {position}, but the partition ends at {high - 1}"
    return None


def _wipe(db: rocksdict.Rdict) -> int:
    """Delete every record of ``db``; how many there were.

    The position and identity records go last: a crash halfway leaves a copy that is
    still recognised as foreign or stale, and is wiped again on the next start.
    """
    markers = (CHANGELOG_POSITION_KEY, CHANGELOG_IDENTITY_KEY)
    removed = 0
    while True:
        batch = rocksdict.WriteBatch(raw_mode=True)
        in_batch = 0
        for key in db.keys():  # noqa: SIM118 (iterating an Rdict itself indexes it by int)
            if key in markers:
                continue
            batch.delete(key)
            in_batch += 1
            if in_batch >= _RESTORE_BATCH:
                break
        if not in_batch:
            break
        db.write(batch)
        removed += in_batch
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key in markers:
        batch.delete(key)
    db.write(batch)
    return removed

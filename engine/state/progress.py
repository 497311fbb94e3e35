"""Every shard's offset records, readable without the shard: the changelog's progress topic.

A host of a cluster needs the offsets of *all* shards to know where to resume the Kafka
partitions it reads (the smallest applied offset over the shards, docs/semantics.md
section 6), but it should open and restore only the shards it owns. So each shard commit
(engine/state/changelog.py) also produces its changed offset records to one small
compacted topic, ``<topic>.changelog-progress`` (one partition), inside the SAME Kafka
transaction as the changelog records:

- key: ``>H`` shard number + the offset record's own key (engine/state/records.py)
- value: the packed :class:`engine.state.offsets.OffsetRecord`

Reading the topic to its committed end gives, per shard, exactly the offset records the
shard holds once it is caught up with its changelog partition: a resume point taken
from it is never past what a restored shard has applied.

The topic also holds one owner record per shard (key: ``>H`` shard number + ``b"W"``;
value: JSON ``{"owner", "restoring", "since_ms"}``, plus ``"retries"`` and ``"last_error"``
once a broker outage interrupted the restore), written by the process that opens the
shard before and after restoring it (and again after each interrupted attempt), for
``streamfeat status`` and the dashboard.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from engine.state.committed_reader import committed_consumer, read_to_end, watermarks
from engine.state.exceptions import ChangelogError
from engine.state.offsets import OffsetRecord
from engine.state.records import partition_of_offset_key, topic_prefix

_SHARD = struct.Struct(">H")
_OWNER_KEY = b"W"
#: Compacted, with short segments so compaction keeps the topic near one record per
#: (shard, source partition) instead of one per committed batch.
PROGRESS_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "600000"}


def progress_topic(source_topic: str) -> str:
    return f"{source_topic}.changelog-progress"


def progress_records(
    shard: int, source_topic: str, changes: Mapping[bytes, bytes | None]
) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of the progress records of one shard commit: its offset records."""
    prefix = topic_prefix(source_topic)
    head = _SHARD.pack(shard)
    for key, value in changes.items():
        if value is not None and key.startswith(prefix):
            yield head + key, value


@dataclass(frozen=True)
class ShardOwner:
    """Who opened a shard last, and whether it was still restoring it."""

    owner: str  # host and process id
    restoring: bool
    since_ms: int  # wall-clock time of the record
    retries: int = 0  # restore attempts the broker interrupted so far (engine/state/restore_retry.py)
    last_error: str = ""  # what interrupted the last of them

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"ShardOwner: field 'retries': expected an int >= 0, got {self.retries!r}")
        if not isinstance(self.last_error, str):
            raise TypeError(f"ShardOwner: field 'last_error': expected str, got {self.last_error!r}")
        if not isinstance(self.owner, str) or not self.owner:
            raise TypeError(f"ShardOwner: field 'owner': expected a non-empty str, got {self.owner!r}")
        if not isinstance(self.restoring, bool):
            raise TypeError(f"ShardOwner: field 'restoring': expected bool, got {self.restoring!r}")
        if isinstance(self.since_ms, bool) or not isinstance(self.since_ms, int) or self.since_ms < 0:
            raise ValueError(f"ShardOwner: field 'since_ms': expected an int >= 0, got {self.since_ms!r}")


def owner_record(shard: int, owner: ShardOwner) -> tuple[bytes, bytes]:
    value: dict[str, object] = {"owner": owner.owner, "restoring": owner.restoring, "since_ms": owner.since_ms}
    if owner.retries:
        value.update(retries=owner.retries, last_error=owner.last_error)
    return _SHARD.pack(shard) + _OWNER_KEY, json.dumps(value).encode()


def _unpack_owner(topic: str, offset: int | None, value: bytes) -> ShardOwner:
    try:
        fields = json.loads(value)
        return ShardOwner(
            str(fields["owner"]),
            bool(fields["restoring"]),
            int(fields["since_ms"]),
            int(fields.get("retries", 0)),
            str(fields.get("last_error", "")),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ChangelogError(
            f"progress topic {topic!r}: owner record at offset {offset}: expected JSON with "
            f"owner, restoring and since_ms, got {value[:80]!r}",
            hint="only streamfeat may write to the progress topic",
        ) from exc


@dataclass(frozen=True)
class ClusterProgress:
    """The progress topic read to its committed end: per shard, its offset records (only
    shards that committed something) and its last owner record (if any)."""

    offsets: dict[int, dict[int, OffsetRecord]]
    owners: dict[int, ShardOwner]


def read_progress(bootstrap: str, source_topic: str, n_shards: int) -> list[dict[int, OffsetRecord]]:
    """Per shard that committed anything: ``{source partition: OffsetRecord}`` (committed
    transactions only). Shards that never committed are left out, like a missing shard
    directory (engine/state/offsets.py :func:`combine_resume_points` replays for them)."""
    offsets = read_cluster_progress(bootstrap, source_topic, n_shards).offsets
    return [offsets[s] for s in sorted(offsets)]


def read_cluster_progress(bootstrap: str, source_topic: str, n_shards: int) -> ClusterProgress:
    """Every record of the progress topic (see the module docstring)."""
    topic = progress_topic(source_topic)
    prefix = topic_prefix(source_topic)
    consumer = committed_consumer(bootstrap, f"streamfeat-progress-{topic}")
    per_shard: dict[int, dict[int, OffsetRecord]] = {}
    owners: dict[int, ShardOwner] = {}
    try:
        low, high = watermarks(consumer, topic, 0)
        if low >= high:
            return ClusterProgress({}, {})
        for batch in read_to_end(consumer, topic, 0, low):
            for msg in batch:
                key, value = msg.key(), msg.value()
                if not isinstance(key, bytes) or len(key) <= _SHARD.size or not isinstance(value, bytes):
                    raise ChangelogError(
                        f"progress topic {topic!r}: record at offset {msg.offset()}: expected a shard "
                        f"number + offset record key with a value, got key {key!r}",
                        hint="only streamfeat may write to the progress topic",
                    )
                (shard,) = _SHARD.unpack_from(key)
                if shard >= n_shards:
                    raise ChangelogError(
                        f"progress topic {topic!r}: record of shard {shard}, but the state has {n_shards} shards",
                        hint="the topic belongs to a state with another shard count; delete it or use a new source topic",
                    )
                if key[_SHARD.size :] == _OWNER_KEY:
                    owners[shard] = _unpack_owner(topic, msg.offset(), value)
                    continue
                partition = partition_of_offset_key(key[_SHARD.size :], prefix)
                per_shard.setdefault(shard, {})[partition] = OffsetRecord.unpack(value)
    finally:
        consumer.close()
    return ClusterProgress(per_shard, owners)

"""Exactly-once offset records and resume positions (docs/semantics.md section 6).

Every shard stores, in the same WriteBatch as its tile records, one
:class:`OffsetRecord` per source partition. On start the source resumes each
partition after the smallest offset any shard (or the Parquet log) has recorded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import rocksdict

from engine.state.exceptions import CorruptRecordError, StateTypeError, StateValueError
from engine.state.layout import (
    check_meta_shards,
    iter_prefix,
    reader_options,
    shard_exists,
    shard_path,
)
from engine.state.records import partition_of_offset_key, topic_prefix

_RECORD = struct.Struct("<qqqq")
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
NO_OFFSET = -1
"""Offset value meaning "nothing applied/published yet" (the next offset is 0)."""


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    """Progress of one source partition in one shard.

    ``applied_offset``: highest offset whose events are in this shard's tiles;
    ``log_offset``: highest offset this shard has published to the Parquet log
    (set it equal to ``applied_offset`` when the shard writes no log). Each comes
    with the partition's maximum event time through that offset, from which the
    watermark is restored (``INT64_MIN`` when no valid event was seen yet).
    """

    applied_offset: int
    max_ts_at_applied: int
    log_offset: int
    max_ts_at_log: int

    def __post_init__(self) -> None:
        for name in ("applied_offset", "max_ts_at_applied", "log_offset", "max_ts_at_log"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise StateTypeError(
                    f"OffsetRecord: field '{name}': expected int, got {type(value).__name__}",
                    hint="convert numpy integers with int(...)",
                )
            if not INT64_MIN <= value <= INT64_MAX:
                raise StateValueError(
                    f"OffsetRecord: field '{name}': expected a signed 64-bit int, got {value}"
                )
        for name in ("applied_offset", "log_offset"):
            if getattr(self, name) < NO_OFFSET:
                raise StateValueError(
                    f"OffsetRecord: field '{name}': expected >= {NO_OFFSET}, "
                    f"got {getattr(self, name)}",
                    hint=f"use {NO_OFFSET} for 'nothing yet'",
                )

    def pack(self) -> bytes:
        return _RECORD.pack(
            self.applied_offset, self.max_ts_at_applied, self.log_offset, self.max_ts_at_log
        )

    @classmethod
    def unpack(cls, data: bytes) -> OffsetRecord:
        if len(data) != _RECORD.size:
            raise CorruptRecordError(
                f"offset record: expected {_RECORD.size} bytes, got {len(data)}",
                hint="the state directory was written by an incompatible version",
            )
        applied, ts_applied, log, ts_log = _RECORD.unpack(data)
        return cls(applied, ts_applied, log, ts_log)

    def lowest(self) -> tuple[int, int]:
        """``(offset, max_ts)`` of whichever of applied/log is further behind."""
        if self.log_offset < self.applied_offset:
            return self.log_offset, self.max_ts_at_log
        return self.applied_offset, self.max_ts_at_applied


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where to resume one partition: the first offset to read and the max event time
    through ``next_offset - 1`` (``INT64_MIN`` if none), which restores the watermark."""

    next_offset: int
    max_ts: int

    def __post_init__(self) -> None:
        for name in ("next_offset", "max_ts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise StateTypeError(
                    f"ResumePoint: field '{name}': expected int, got {type(value).__name__}"
                )
        if self.next_offset < 0:
            raise StateValueError(
                f"ResumePoint: field 'next_offset': expected >= 0, got {self.next_offset}"
            )


def scan_offsets(db: rocksdict.Rdict, topic: str) -> dict[int, OffsetRecord]:
    """Every offset record of ``topic`` in one open raw-mode shard."""
    prefix = topic_prefix(topic)
    found: dict[int, OffsetRecord] = {}
    for key, value in iter_prefix(db, prefix):
        found[partition_of_offset_key(key, prefix)] = OffsetRecord.unpack(value)
    return found


def combine_resume_points(
    per_shard: Iterable[dict[int, OffsetRecord]], n_shards: int
) -> dict[int, ResumePoint]:
    """Smallest recorded position per partition over all shards and over (applied, log).

    ``per_shard`` has one entry per shard that exists. A shard without a record for
    a partition that other shards have recorded has applied nothing of it, so that
    partition must be replayed from the beginning: it is left out of the result,
    exactly like a partition no shard has seen. (The dataflow avoids such replays
    by committing an offset record to every shard for every batch, even an empty one.)
    """
    shards = list(per_shard)
    partitions: set[int] = set()
    for records in shards:
        partitions.update(records)
    resume: dict[int, ResumePoint] = {}
    for partition in sorted(partitions):
        if len(shards) < n_shards or any(partition not in records for records in shards):
            continue
        offset, max_ts = min(records[partition].lowest() for records in shards)
        if offset == NO_OFFSET:
            continue
        resume[partition] = ResumePoint(next_offset=offset + 1, max_ts=max_ts)
    return resume


def resume_positions(state_dir: str | Path, n_shards: int, topic: str) -> dict[int, ResumePoint]:
    """Where the source must resume each partition of ``topic``.

    Opens every shard read-only (no lock, so a running writer is not disturbed and
    no writer is needed), reads its offset records and closes it again. Partitions
    absent from the result are read from the beginning.
    """
    root = Path(state_dir)
    check_meta_shards(root, n_shards)
    per_shard: list[dict[int, OffsetRecord]] = []
    for shard in range(n_shards):
        path = shard_path(root, shard)
        if not shard_exists(path):
            continue
        db = rocksdict.Rdict(
            str(path), reader_options(), access_type=rocksdict.AccessType.read_only()
        )
        try:
            per_shard.append(scan_offsets(db, topic))
        finally:
            db.close()
    return combine_resume_points(per_shard, n_shards)

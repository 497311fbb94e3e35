"""Exactly-once offset records and resume positions (docs/semantics.md section 6).

Every shard stores, in the same WriteBatch as its tile records, one
:class:`OffsetRecord` per source partition. On start the source resumes each
partition after the smallest offset any shard (or the Parquet log) has recorded.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import rocksdict

from engine.state.exceptions import CorruptRecordError, StateTypeError, StateValueError
from engine.state.layout import iter_prefix
from engine.state.records import partition_of_offset_key, topic_prefix

log = logging.getLogger(__name__)

_LEGACY_RECORD = struct.Struct("<qqqq")
_HEADER = struct.Struct("<qqBB")
_TS = struct.Struct("<q")
#: Most top event times one offset record keeps per position (EventSource allows
#: watermark_outliers up to 15, so rank 16).
MAX_TOP_TS = 16
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
NO_OFFSET = -1
"""Offset value meaning "nothing applied/published yet" (the next offset is 0)."""


def _check_top(owner: str, name: str, top: object) -> None:
    if not isinstance(top, tuple) or any(isinstance(t, bool) or not isinstance(t, int) for t in top):
        raise StateTypeError(
            f"{owner}: field '{name}': expected a tuple of int event times, got {top!r}",
            hint="convert numpy integers with int(...) and pass a tuple",
        )
    if len(top) > MAX_TOP_TS:
        raise StateValueError(f"{owner}: field '{name}': expected at most {MAX_TOP_TS} times, got {len(top)}")
    if any(not INT64_MIN <= t <= INT64_MAX for t in top):
        raise StateValueError(f"{owner}: field '{name}': expected signed 64-bit ints, got {top!r}")
    if list(top) != sorted(top, reverse=True):
        raise StateValueError(
            f"{owner}: field '{name}': expected descending times, got {top!r}",
            hint="sort with sorted(times, reverse=True)",
        )


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    """Progress of one source partition in one shard.

    ``applied_offset``: highest offset whose events are in this shard's tiles;
    ``log_offset``: highest offset this shard has published to the Parquet log
    (set it equal to ``applied_offset`` when the shard writes no log). Each comes
    with the partition's largest valid event times through that offset, descending
    (as many as the source's watermark rank; empty when no valid event was seen yet),
    from which the watermark is restored (docs/semantics.md section 5).

    Packed as ``<qqBB`` (applied_offset, log_offset, len(top_ts_at_applied),
    len(top_ts_at_log)) followed by both lists as ``<q``. A 32-byte record of an older
    version (``<qqqq``: offsets with one maximum each) still reads.
    """

    applied_offset: int
    top_ts_at_applied: tuple[int, ...]
    log_offset: int
    top_ts_at_log: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("applied_offset", "log_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise StateTypeError(
                    f"OffsetRecord: field '{name}': expected int, got {type(value).__name__}",
                    hint="convert numpy integers with int(...)",
                )
            if not NO_OFFSET <= value <= INT64_MAX:
                raise StateValueError(
                    f"OffsetRecord: field '{name}': expected {NO_OFFSET} .. 2**63-1, got {value}",
                    hint=f"use {NO_OFFSET} for 'nothing yet'",
                )
        _check_top("OffsetRecord", "top_ts_at_applied", self.top_ts_at_applied)
        _check_top("OffsetRecord", "top_ts_at_log", self.top_ts_at_log)

    def pack(self) -> bytes:
        a, b = self.top_ts_at_applied, self.top_ts_at_log
        return _HEADER.pack(self.applied_offset, self.log_offset, len(a), len(b)) + b"".join(
            _TS.pack(t) for t in (*a, *b)
        )

    @classmethod
    def unpack(cls, data: bytes) -> OffsetRecord:
        if len(data) == _LEGACY_RECORD.size:
            applied, ts_applied, log, ts_log = _LEGACY_RECORD.unpack(data)
            return cls(applied, _legacy_top(ts_applied), log, _legacy_top(ts_log))
        if len(data) >= _HEADER.size:
            applied, log, n_a, n_b = _HEADER.unpack_from(data)
            if len(data) == _HEADER.size + _TS.size * (n_a + n_b):
                times = [t for (t,) in _TS.iter_unpack(data[_HEADER.size :])]
                try:
                    return cls(applied, tuple(times[:n_a]), log, tuple(times[n_a:]))
                except (StateTypeError, StateValueError) as exc:
                    raise CorruptRecordError(f"offset record: {exc}") from exc
        raise CorruptRecordError(
            f"offset record: expected {_LEGACY_RECORD.size} bytes or a <qqBB header with its "
            f"event times, got {len(data)} bytes",
            hint="the state directory was written by an incompatible version",
        )

    def lowest(self) -> tuple[int, tuple[int, ...]]:
        """``(offset, top_ts)`` of whichever of applied/log is further behind."""
        if self.log_offset < self.applied_offset:
            return self.log_offset, self.top_ts_at_log
        return self.applied_offset, self.top_ts_at_applied


def _legacy_top(max_ts: int) -> tuple[int, ...]:
    return () if max_ts == INT64_MIN else (max_ts,)


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where to resume one partition: the first offset to read and the partition's largest
    valid event times through ``next_offset - 1`` (descending), which restore the watermark."""

    next_offset: int
    top_ts: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.next_offset, bool) or not isinstance(self.next_offset, int):
            raise StateTypeError(
                f"ResumePoint: field 'next_offset': expected int, got {type(self.next_offset).__name__}"
            )
        if self.next_offset < 0:
            raise StateValueError(f"ResumePoint: field 'next_offset': expected >= 0, got {self.next_offset}")
        _check_top("ResumePoint", "top_ts", self.top_ts)


def scan_offsets(db: rocksdict.Rdict, topic: str) -> dict[int, OffsetRecord]:
    """Every offset record of ``topic`` in one open raw-mode shard."""
    prefix = topic_prefix(topic)
    found: dict[int, OffsetRecord] = {}
    for key, value in iter_prefix(db, prefix):
        found[partition_of_offset_key(key, prefix)] = OffsetRecord.unpack(value)
    return found


def combine_resume_points(per_shard: Iterable[dict[int, OffsetRecord]], n_shards: int) -> dict[int, ResumePoint]:
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
    applied = highest_applied(shards)
    for partition in sorted(partitions):
        if len(shards) < n_shards or any(partition not in records for records in shards):
            log.warning(
                "partition %d: re-reading from the beginning although a shard applied it through "
                "offset %d: %d of %d shards have no offset record for it",
                partition,
                applied[partition],
                n_shards - sum(partition in records for records in shards),
                n_shards,
            )
            continue
        lowest = min(records[partition].lowest() for records in shards)
        offset, top_ts = lowest
        behind = min(records[partition].applied_offset for records in shards)
        if offset < behind:
            log.info(
                "partition %d: resuming at offset %d, before the state's %d: the Parquet log is "
                "published only through %d, so those records are replayed into the log only",
                partition,
                offset + 1,
                behind + 1,
                offset,
            )
        if offset == NO_OFFSET:
            continue
        resume[partition] = ResumePoint(next_offset=offset + 1, top_ts=top_ts)
    return resume


def highest_applied(per_shard: Iterable[dict[int, OffsetRecord]]) -> dict[int, int]:
    """Per partition, the highest offset any shard has applied: every record up to it has
    passed decoding (and its dead letter, if any, was acknowledged) before this run."""
    out: dict[int, int] = {}
    for records in per_shard:
        for partition, record in records.items():
            out[partition] = max(out.get(partition, NO_OFFSET), record.applied_offset)
    return out

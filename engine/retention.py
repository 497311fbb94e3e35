"""Retention for entities that went quiet.

The write path trims an entity's old tiles whenever a new event for it arrives. An
entity that never sees another event would keep its record forever, so each shard
also sweeps its records in small slices (on the dataflow's ticks, once a second): a record whose
newest tile ended more than the view's retention before the newest event time the
view has seen (docs/semantics.md section 7) is deleted; a record with some expired
tiles is trimmed. No value the watermark still allows can need what is removed.
A view with a lifetime window never loses a record: its expired tiles are folded
into one compacted partial per entity (the same fold as the write path's).

Sweeping is incremental (a cursor per view, at most ``limit`` records per call, and
a call stops at its ``deadline``) so it never stalls ingestion: folding a lifetime
view's record costs about half a millisecond, so 2,000 of them in one call stalled the
worker for a second per shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.kernel.codec import (
    decode_sketches,
    decode_tiles,
    encode_tiles,
    has_cold,
    join_parts,
    section_slots,
    stored_cold_part,
    tile_span,
)
from engine.kernel.layout import PartialLayout
from engine.kernel.tile_retention import apply_retention, first_kept_tile, fold_expired
from engine.state.protocols import StorePartition, Transaction
from engine.state.records import cold_view_prefix, decode_meta, meta_key, view_prefix
from engine.timefmt import NO_EVENT_TS
from engine.view_merge import stored_parts


@dataclass(frozen=True)
class SweepResult:
    examined: int
    deleted: int
    trimmed: int
    next_key: bytes | None  # None: the sweep of this view wrapped around


def view_newest_ts(partition: StorePartition, fingerprint: bytes) -> int:
    """Newest event time the view has seen in this shard (its freshness record)."""
    record = decode_meta(partition.get_many([meta_key(fingerprint)])[0])
    return record[0] if record is not None else NO_EVENT_TS


def sweep_view(
    partition: StorePartition,
    fingerprint: bytes,
    retention_ms: int,
    interval_ms: int,
    *,
    compact_into: PartialLayout | None = None,
    start_after: bytes | None = None,
    limit: int = 2_000,
    deadline: float | None = None,
) -> SweepResult:
    """Delete or trim up to ``limit`` records of one view past ``start_after``, stopping
    early once ``time.perf_counter()`` passes ``deadline`` (after at least one record, so
    every call makes progress); with ``compact_into`` (a view with a lifetime window) fold
    expired tiles instead."""
    newest = view_newest_ts(partition, fingerprint)
    if newest == NO_EVENT_TS:
        return SweepResult(0, 0, 0, None)
    first_kept = first_kept_tile(newest, retention_ms, interval_ms)
    prefix = view_prefix(fingerprint)
    cold_prefix = cold_view_prefix(fingerprint)
    txn = partition.begin()
    examined = deleted = trimmed = 0
    next_key: bytes | None = None
    for key, value in partition.scan_prefix(prefix, from_key=start_after):
        if key == start_after:
            continue
        if examined >= limit or (deadline is not None and examined and time.perf_counter() >= deadline):
            next_key = start_after
            break
        examined += 1
        start_after = key
        # An entity with a cold part is swept as the one record its two parts stand for.
        cold_key, had_cold = cold_prefix + key[len(prefix) :], has_cold(value)
        if had_cold:
            value = _joined(partition, cold_key, value)
        span = tile_span(value)
        if span is None:
            continue
        first_tile, last_tile = span
        if last_tile < first_kept and compact_into is None:
            txn.delete(key)
            if had_cold:
                txn.delete(cold_key)
            deleted += 1
            continue
        if first_tile < first_kept:
            tiles, partials, max_ts = decode_tiles(value)
            if compact_into is not None:
                if len(tiles) < 2 or tiles[1] >= first_kept:
                    continue  # at most the compacted partial is expired: nothing to fold
                _, kept_tiles, kept, blobs = fold_expired(
                    compact_into,
                    np.zeros(len(tiles), dtype=np.int64),
                    tiles,
                    partials,
                    tiles < first_kept,
                    decode_sketches(value, len(compact_into.sketch_slots)),
                )
                record = encode_tiles(np.ascontiguousarray(kept_tiles), np.ascontiguousarray(kept), max_ts, blobs)
                _put(txn, key, cold_key, had_cold, record)
                trimmed += 1
                continue
            kept_tiles, kept = apply_retention(tiles, partials, newest, retention_ms, interval_ms)
            # The sketch section's rows are trimmed with their tiles (docs/architecture.md).
            sketches = decode_sketches(value, section_slots(value))[len(tiles) - len(kept_tiles) :]
            record = encode_tiles(np.ascontiguousarray(kept_tiles), np.ascontiguousarray(kept), max_ts, sketches)
            _put(txn, key, cold_key, had_cold, record)
            trimmed += 1
    txn.commit()
    return SweepResult(examined, deleted, trimmed, next_key)


def _joined(partition: StorePartition, cold_key: bytes, hot: bytes) -> bytes:
    """The whole record of a hot part and its stored cold part."""
    return join_parts(stored_cold_part(partition.get_many([cold_key])[0], cold_key), hot)


def _put(txn: Transaction, key: bytes, cold_key: bytes, had_cold: bool, record: bytes) -> None:
    """Store a swept whole ``record`` as the write path would: whole or as two parts;
    a cold part no longer needed is deleted."""
    hot, cold = stored_parts(record)
    txn.put(key, hot)
    if cold is not None:
        txn.put(cold_key, cold)
    elif had_cold:
        txn.delete(cold_key)


class RetentionSweeper:
    """Round-robin incremental sweeps over every view of one shard."""

    def __init__(
        self,
        partition: StorePartition,
        views: list[tuple[bytes, int, int, PartialLayout | None]],
        limit: int = 2_000,
    ):
        self.partition = partition
        # (fingerprint, retention_ms, interval_ms, layout to compact into or None)
        self.views = views
        self.limit = limit
        self._turn = 0
        self._cursors: dict[bytes, bytes | None] = {}
        self.deleted = 0
        self.trimmed = 0

    def step(self, deadline: float | None = None) -> SweepResult | None:
        """Sweep the next slice of the view whose turn it is; stop at ``deadline``
        (a ``time.perf_counter()`` value), if given."""
        if not self.views:
            return None
        fingerprint, retention_ms, interval_ms, compact_into = self.views[self._turn % len(self.views)]
        result = sweep_view(
            self.partition,
            fingerprint,
            retention_ms,
            interval_ms,
            compact_into=compact_into,
            start_after=self._cursors.get(fingerprint),
            limit=self.limit,
            deadline=deadline,
        )
        self._cursors[fingerprint] = result.next_key
        if result.next_key is None:
            self._turn += 1
        self.deleted += result.deleted
        self.trimmed += result.trimmed
        return result

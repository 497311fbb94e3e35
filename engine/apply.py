"""Apply routed batches to one state shard: the write side of the one kernel.

Streaming (the Bytewax sink) and backfill both call :class:`ShardApplier`, so there
is exactly one implementation of "events -> tile partials -> state". For each call:

1. drop rows at or below the shard's applied offset of their partition (replays);
2. per view: aggregate the batch into (entity, tile) partials, read the touched
   entities' stored records with one multi-get, merge, apply retention, encode;
3. write the Redis copy (if configured) *before* committing, so a crash between the
   two is repaired by the replay (records are whole values: rewriting is idempotent);
4. commit tiles, per-view metadata and every partition's progress in ONE WriteBatch;
5. stage the rows for the Parquet log (engine/log_staging.py); when it rolls, publish
   and record the log offsets.

See docs/semantics.md sections 6 and 7.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.io.parquet_log import LogCut, ParquetLogWriteError, PublishedFile
from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import (
    NO_EVENT_TS,
    FlatTiles,
    decode_many,
    encode_many,
    merge_flat,
    retain,
)
from engine.kernel.layout import LayoutSource, PartialLayout, encode_positions
from engine.log_rolls import (
    LoggedView,
    PendingRoll,
    background_publisher,
    open_log_writers,
    write_cuts,
)
from engine.log_staging import StagedLogRows
from engine.routing import ShardBatch, ViewRows, merge_codes
from engine.state.offsets import NO_OFFSET, OffsetRecord
from engine.state.protocols import OnlineWriter, StorePartition, Transaction
from engine.state.records import (
    decode_handoff,
    decode_meta,
    encode_meta,
    handoff_key,
    meta_key,
    view_prefix,
)

log = logging.getLogger(__name__)


class ApplicableView(LoggedView, LayoutSource, Protocol):
    @property
    def interval_ms(self) -> int: ...
    @property
    def retention_ms(self) -> int: ...
    @property
    def has_lifetime_window(self) -> bool: ...
    @property
    def offline(self) -> bool: ...
    @property
    def column_types(self) -> Mapping[str, object]: ...


@dataclass
class ApplyStats:
    """Counters of one applier, read by metrics and tests."""

    batches: int = 0
    rows_applied: int = 0
    rows_skipped_replay: int = 0
    rows_skipped_handoff: int = 0
    entities_written: int = 0
    log_rows: int = 0
    log_files: int = 0
    log_publish_errors: int = 0
    last_batch_seconds: float = 0.0
    per_view_rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _CompiledView:
    view: ApplicableView
    layout: PartialLayout


class ShardApplier:
    """Owns one shard: its RocksDB partition, its Parquet log writers, its Redis copy."""

    def __init__(
        self,
        partition: StorePartition,
        views: Sequence[ApplicableView],
        topic: str,
        *,
        log_root: str | None = None,
        log_max_rows: int = 200_000,
        log_max_age_s: float = 30.0,
        online_copy: OnlineWriter | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        retry_delays_s: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0),
        respect_handoff: bool = True,
        publish_in_background: bool = False,
    ) -> None:
        self.partition = partition
        # Streaming rolls the log on a publisher thread: writing a roll of all shards
        # took ~2 s at 10k events/s, during which the worker applied nothing.
        self.publish_in_background = publish_in_background
        self._pending: PendingRoll | None = None
        self.topic = topic
        self.views = {v.fingerprint: _CompiledView(v, PartialLayout.for_view(v)) for v in views}
        self.online_copy = online_copy
        self.clock_ms = clock_ms
        self.retry_delays_s = tuple(retry_delays_s)
        self.stats = ApplyStats()
        self.offsets: dict[int, OffsetRecord] = dict(partition.read_offsets(topic))
        # Read once at open: a backfill writes handoffs before streaming starts (docs/backfill.md).
        # The history backfill itself passes respect_handoff=False.
        self.handoffs: dict[bytes, int] = {}
        if respect_handoff and self.views:
            fps = list(self.views)
            for fp, raw in zip(fps, partition.get_many([handoff_key(f) for f in fps]), strict=True):
                if raw is not None:
                    self.handoffs[fp] = decode_handoff(raw)
        offline = [c.view for c in self.views.values() if c.view.offline]
        self.writers = open_log_writers(
            log_root,
            offline,
            partition.shard,
            max_rows=log_max_rows,
            max_age_s=log_max_age_s,
            raw_columns={fp: _raw_column_types(c) for fp, c in self.views.items() if c.view.offline},
        )
        self._staged = {
            fp: StagedLogRows(writer, self.views[fp].view.interval_ms) for fp, writer in self.writers.items()
        }
        # Each view's newest event time as stored in its metadata record: this applier
        # is the shard's only writer, so it is read once here instead of every commit.
        self._newest: dict[bytes, int] = {}
        if self.views:
            fps = list(self.views)
            for fp, raw in zip(fps, partition.get_many([meta_key(f) for f in fps]), strict=True):
                record = decode_meta(raw)
                if record is not None:
                    self._newest[fp] = record[0]

    # -- the write path ---------------------------------------------------------------

    def apply(
        self,
        batches: Iterable[ShardBatch],
        *,
        extra_puts: Mapping[bytes, bytes] | None = None,
        publish: bool = True,
    ) -> None:
        """Apply ``batches``; ``extra_puts`` go into the same WriteBatch (backfill run records).

        ``publish=False`` leaves the log roll to the caller's own ``maybe_publish_log()``
        call (backfill publishes from a background thread while it routes the next rows).
        """
        started = time.perf_counter()
        state_rows: dict[bytes, list[tuple[ViewRows, int]]] = {}
        progress: dict[int, tuple[int, tuple[int, ...]]] = {}
        for batch in batches:
            if batch.topic != self.topic:
                raise ValueError(
                    f"shard {self.partition.shard}: batch of topic '{batch.topic}' sent to the "
                    f"applier of topic '{self.topic}'"
                )
            record = self.offsets.get(batch.partition)
            applied = record.applied_offset if record else NO_OFFSET
            logged = record.log_offset if record else NO_OFFSET
            if batch.last_offset <= min(applied, logged):
                self.stats.rows_skipped_replay += batch.row_count
                continue
            for fp, rows in batch.views.items():
                if fp not in self.views or not len(rows):
                    continue
                fresh = rows.offsets > applied
                handoff = self.handoffs.get(fp)
                after_handoff = None if handoff is None else rows.event_ts >= handoff
                if after_handoff is not None:
                    self.stats.rows_skipped_handoff += int((fresh & ~after_handoff).sum())
                    fresh &= after_handoff
                if bool(fresh.any()):
                    state_rows.setdefault(fp, []).append(
                        (rows if bool(fresh.all()) else rows.select(fresh), batch.partition)
                    )
                self.stats.rows_skipped_replay += int(
                    (~fresh if after_handoff is None else ~fresh & after_handoff).sum()
                )
                staged = self._staged.get(fp)
                if staged is not None:
                    to_log = rows.offsets > logged
                    if after_handoff is not None:
                        to_log &= after_handoff
                    to_stage = rows if bool(to_log.all()) else rows.select(to_log)
                    staged.add(to_stage, batch.partition)
                    self.stats.log_rows += len(to_stage)
            previous = progress.get(batch.partition)
            if previous is None or batch.last_offset > previous[0]:
                progress[batch.partition] = (batch.last_offset, batch.top_ts_after)

        txn = self.partition.begin()
        online_items: list[tuple[bytes, bytes, bytes | None]] = []
        meta_items: list[tuple[bytes, int, bytes]] = []
        ttl_ms: int | None = None
        lifetime_written = False  # a lifetime view's Redis copy must never expire
        newest_after: dict[bytes, int] = {}
        for fp, parts in state_rows.items():
            compiled = self.views[fp]
            items, meta_value, newest = self._apply_view(txn, compiled, parts)
            newest_after[fp] = newest
            online_items.extend(items)
            meta_items.append((fp, self.partition.shard, meta_value))
            ttl_ms = max(ttl_ms or 0, compiled.view.retention_ms)
            lifetime_written = lifetime_written or compiled.view.has_lifetime_window
        advanced: dict[int, OffsetRecord] = {}
        for partition, (last_offset, top_ts) in progress.items():
            old = self.offsets.get(partition)
            applied = old.applied_offset if old else NO_OFFSET
            if last_offset <= applied and old is not None:
                continue
            new_record = OffsetRecord(
                applied_offset=last_offset,
                top_ts_at_applied=top_ts,
                # Without a log, the log is never behind the state.
                log_offset=(old.log_offset if old else NO_OFFSET) if self.writers else last_offset,
                top_ts_at_log=(old.top_ts_at_log if old else ()) if self.writers else top_ts,
            )
            txn.set_offset(self.topic, partition, new_record)
            self.offsets[partition] = new_record
            advanced[partition] = new_record
        for key, value in (extra_puts or {}).items():
            txn.put(key, value)
        if (online_items or advanced) and self.online_copy is not None:
            copy = self.online_copy

            def write_copy() -> None:
                copy.write(online_items, None if lifetime_written else ttl_ms)
                copy.write_meta(meta_items)
                # After the tiles: the copy never claims more than it holds.
                copy.write_offsets(self.topic, self.partition.shard, advanced)

            self._retry("write the online copy", write_copy)
        txn.commit()
        self._newest.update(newest_after)
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        if publish:
            self.maybe_publish_log()

    def _apply_view(
        self, txn: Transaction, compiled: _CompiledView, parts: list[tuple[ViewRows, int]]
    ) -> tuple[list[tuple[bytes, bytes, bytes | None]], bytes, int]:
        view, layout = compiled.view, compiled.layout
        keys, codes = merge_codes(parts)
        event_ts = np.concatenate([rows.event_ts for rows, _ in parts])
        offsets = np.concatenate([rows.offsets for rows, _ in parts])
        partitions = np.concatenate([np.full(len(rows), partition, dtype=np.int64) for rows, partition in parts])
        values = np.concatenate([rows.values for rows, _ in parts])
        tiles = event_ts // view.interval_ms
        positions = encode_positions(partitions, offsets)
        codes_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, event_ts, positions, values)
        sketches = None
        if layout.sketch_slots:
            raw = {c: np.concatenate([rows.raw_values[c] for rows, _ in parts]) for c in layout.sketch_columns}
            sketches = aggregate_sketches(layout, codes, tiles, event_ts, positions, raw)
        batch_max = np.full(len(keys), NO_EVENT_TS, dtype=np.int64)
        np.maximum.at(batch_max, codes, event_ts)
        prefix = view_prefix(view.fingerprint)  # keys are bytes built by routing
        state_keys = [prefix + k for k in keys]
        stored = decode_many(layout, txn.get_many(state_keys))
        merged = merge_flat(layout, stored, FlatTiles(codes_u, tiles_u, partials, batch_max, sketches))
        # A lifetime window keeps expired tiles as one compacted partial (semantics 7).
        merged = retain(merged, view.retention_ms, view.interval_ms, layout if view.has_lifetime_window else None)
        records = encode_many(layout, merged, len(keys))
        txn.put_many(state_keys, records)
        newest = max(int(batch_max.max()), self._newest.get(view.fingerprint, NO_EVENT_TS))
        meta_value = encode_meta(newest, self.clock_ms())
        txn.put(meta_key(view.fingerprint), meta_value)
        self.stats.rows_applied += len(codes)
        self.stats.entities_written += len(keys)
        self.stats.per_view_rows[view.name] = self.stats.per_view_rows.get(view.name, 0) + len(codes)
        items: list[tuple[bytes, bytes, bytes | None]] = []
        if self.online_copy is not None:  # only the Redis copy reads them
            items = [(view.fingerprint, k, r) for k, r in zip(keys, records, strict=True)]
        return items, meta_value, newest

    # -- the Parquet log --------------------------------------------------------------

    def maybe_publish_log(self, force: bool = False) -> None:
        """Publish every writer of the shard when any is due, then record the log offsets.

        With ``publish_in_background`` the buffers are cut here and their files written
        on the publisher thread; a later call (the next batch or tick) records the log
        offsets once the files are in place. ``force`` waits for everything.
        """
        if not self.writers:
            return
        if self._pending is not None:
            if not force and not self._pending.future.done():
                return
            self._finish_pending()
        if not force and not any(staged.roll_due() for staged in self._staged.values()):
            return
        for staged in self._staged.values():
            staged.flush()
        cuts = {fp: cut for fp, w in self.writers.items() if (cut := w.cut()) is not None}
        logged = dict(self.offsets)  # every row up to these offsets is in the cuts
        if self.publish_in_background and not force and cuts:
            future = background_publisher().submit(write_cuts, self.writers, cuts)
            self._pending = PendingRoll(future, cuts, logged)
            return
        self._settle(cuts, write_cuts(self.writers, cuts), logged)

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._settle(pending.cuts, pending.future.result(), pending.offsets)

    def _settle(
        self,
        cuts: Mapping[bytes, LogCut],
        outcomes: Sequence[tuple[bytes, PublishedFile | ParquetLogWriteError]],
        logged: Mapping[int, OffsetRecord],
    ) -> None:
        """Count a roll's files, put failed cuts back, record the log offsets if all landed."""
        failed: ParquetLogWriteError | None = None
        for fp, outcome in outcomes:
            if isinstance(outcome, ParquetLogWriteError):
                self.writers[fp].restore(cuts[fp])
                failed = outcome
            else:
                self.stats.log_files += len(outcome.paths)
        if failed is not None:
            self._publish_failed(failed)
            return
        self._record_log_offsets(logged)

    def _publish_failed(self, exc: ParquetLogWriteError) -> None:
        # The buffer is kept; state keeps advancing and the log offset stays behind,
        # so nothing is lost: the next roll retries (docs/reliability.md).
        self.stats.log_publish_errors += 1
        log.error("shard %d: Parquet log publish failed, will retry: %s", self.partition.shard, exc)

    def _record_log_offsets(self, logged: Mapping[int, OffsetRecord]) -> None:
        """Every row up to ``logged``'s applied offsets is published: record it."""
        published: dict[int, OffsetRecord] = {}
        txn = self.partition.begin()
        for partition, upto in logged.items():
            record = self.offsets[partition]
            if record.log_offset >= upto.applied_offset:
                continue
            updated = OffsetRecord(
                record.applied_offset,
                record.top_ts_at_applied,
                upto.applied_offset,
                upto.top_ts_at_applied,
            )
            txn.set_offset(self.topic, partition, updated)
            self.offsets[partition] = updated
            published[partition] = updated
        txn.commit()
        if published and self.online_copy is not None:
            copy = self.online_copy
            # Serving over Redis reads how far the log is published from these.
            self._retry(
                "write the log offsets to the online copy",
                lambda: copy.write_offsets(self.topic, self.partition.shard, published),
            )

    # -- helpers ----------------------------------------------------------------------

    def _retry(self, what: str, action: Callable[[], None]) -> None:
        for attempt, delay in enumerate((*self.retry_delays_s, None)):
            try:
                action()
                return
            except Exception as exc:  # the online copy may be down: wait, then give up loudly
                if delay is None:
                    raise
                log.warning(
                    "shard %d: failed to %s (attempt %d): %s",
                    self.partition.shard,
                    what,
                    attempt + 1,
                    exc,
                )
                time.sleep(delay)

    def close(self) -> None:
        self.maybe_publish_log(force=True)
        self.partition.flush_wal(sync=True)


def _raw_column_types(compiled: _CompiledView) -> dict[str, str]:
    """Schema type of each column the view's sketch slots read (logged as decoded)."""
    types = compiled.view.column_types
    return {c: str(getattr(types[c], "value", types[c])) for c in compiled.layout.sketch_columns}


def offsets_view(appliers: Mapping[int, ShardApplier]) -> dict[int, dict[int, OffsetRecord]]:
    """Shard -> partition -> offset record, for status pages and tests."""
    return {shard: dict(a.offsets) for shard, a in appliers.items()}

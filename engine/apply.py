"""Apply routed batches to one state shard: the write side of the one kernel.

Streaming (the Bytewax sink) and backfill both call :class:`ShardApplier`, so there
is exactly one implementation of "events -> tile partials -> state". For each call:

1. screen: drop rows at or below the shard's applied offset of their partition
   (replays) and stage the rows the log lacks (engine/log_staging.py);
2. per view: merge the rows into the stored records (engine/view_merge.py);
3. advance the partitions' offset records; write the Redis copy (if configured) *before* committing, so a crash between the
   two is repaired by the replay (records are whole values: rewriting is idempotent);
4. commit tiles, per-view metadata and every partition's progress in ONE WriteBatch;
5. when the Parquet log rolls, publish and record the log offsets.

See docs/semantics.md sections 6 and 7.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.clock import wall_clock_ms
from engine.io.log_format import ParquetLogWriteError
from engine.io.parquet_log import LogCut, PublishedFile
from engine.kernel.layout import PartialLayout
from engine.log_rolls import PendingRoll, background_publisher, open_log_writers, write_cuts
from engine.log_staging import StagedLogRows
from engine.routing import ShardBatch, ViewRows
from engine.state.offsets import NO_OFFSET, OffsetRecord
from engine.state.protocols import ColdWrites, OnlineWriter, StorePartition, Transaction
from engine.state.records import (
    backfill_run_key,
    cold_view_prefix,
    decode_backfill_run,
    decode_handoff,
    decode_meta,
    encode_handoff,
    handoff_key,
    meta_key,
    view_prefix,
)
from engine.timefmt import NO_EVENT_TS
from engine.view_merge import ApplicableView, CompiledView, MergedView, ShardRows, merge_view_rows_many

log = logging.getLogger(__name__)

# Records per pipeline when a shard is copied to an online copy that lacks it.
_COPY_CHUNK = 2_000
# Seconds between two checks, while batches are written, that the copy still holds
# the shard (a Redis restarted without persistence within the write retries).
_COPY_CHECK_S = 1.0


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


@dataclass
class _ViewWrites:
    """What one apply wrote for its views, for the online copy and the metadata cache."""

    online_items: list[tuple[bytes, bytes, bytes | None]] = field(default_factory=list)
    cold_items: list[tuple[bytes, bytes, bytes | None]] = field(default_factory=list)
    cold_kept: list[tuple[bytes, bytes]] = field(default_factory=list)
    meta_items: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    # Per view: its records' expiry in the Redis copy, its retention (None for a view
    # with a lifetime window: its copy must never expire).
    ttl_ms: dict[bytes, int | None] = field(default_factory=dict)
    newest: dict[bytes, int] = field(default_factory=dict)


#: Keys deleted per WriteBatch when a view's stale state is cleared (a join, below).
_CLEAR_CHUNK = 50_000


def settle_joins(
    partition: StorePartition, joins: Mapping[bytes, int], online_copy: OnlineWriter | None = None
) -> tuple[bytes, ...]:
    """Make the shard hold, for each view of ``joins`` (fingerprint -> join time ``H``,
    engine/plan.py), the state of a view that joined its stream at ``H``: the handoff
    ``H`` (streaming applies ``e >= H`` only; a backfill gives ``e < H``). A view whose
    handoff is not ``H`` yet has its old records cleared first, in ``online_copy`` too: a
    fingerprint applied again after it was removed holds state from before, with every
    event of the time it was away missing. Returns the fingerprints settled now (the
    rest already were)."""
    keys = [handoff_key(fp) for fp in joins]
    settled: list[bytes] = []
    for (fp, at_ms), raw in zip(joins.items(), partition.get_many(keys), strict=True):
        if raw is not None and decode_handoff(raw) == at_ms:
            continue
        hot = [key for key, _ in partition.scan_prefix(view_prefix(fp))]
        cold = [key for key, _ in partition.scan_prefix(cold_view_prefix(fp))]
        if online_copy is not None:  # first: a clear interrupted after it is done again
            hot_cut, cold_cut = len(view_prefix(fp)), len(cold_view_prefix(fp))
            for start in range(0, max(len(hot), len(cold)), _CLEAR_CHUNK):
                online_copy.write(
                    [(fp, key[hot_cut:], None) for key in hot[start : start + _CLEAR_CHUNK]],
                    None,
                    ColdWrites([(fp, key[cold_cut:], None) for key in cold[start : start + _CLEAR_CHUNK]], []),
                )
        stale = [*hot, *cold, meta_key(fp), backfill_run_key(fp)]
        for start in range(0, len(stale), _CLEAR_CHUNK):
            txn = partition.begin()
            for key in stale[start : start + _CLEAR_CHUNK]:
                txn.delete(key)
            txn.commit()
        txn = partition.begin()  # last: an interrupted clear is done again at the next open
        txn.put(handoff_key(fp), encode_handoff(at_ms))
        txn.commit()
        settled.append(fp)
    return tuple(settled)


@dataclass(frozen=True)
class StoredView:
    """What the shards hold of one view (:func:`stored_views`)."""

    holds_events: bool  # a freshness record in some shard: the stream or a backfill applied events to it
    # A handoff no completed backfill reached: the view joined its stream then and lacks
    # the history before (settle_joins wrote it); None: no such join.
    pending_join: int | None
    # The history backfill recorded for the view (its run record): its --end and its
    # history topic; None: none.
    backfilled_to: int | None = None
    backfilled_as: str | None = None


def stored_views(partitions: Sequence[StorePartition], fingerprints: Sequence[bytes]) -> dict[bytes, StoredView]:
    """Per view fingerprint, what the shards hold: read from the shards themselves, so a
    lost or replaced plan file cannot hide a view's pending join or its applied events."""
    keys = [k for fp in fingerprints for k in (meta_key(fp), handoff_key(fp), backfill_run_key(fp))]
    holds = dict.fromkeys(fingerprints, False)
    pending: dict[bytes, int] = {}
    runs: dict[bytes, tuple[int, str]] = {}
    for partition in partitions:
        values = partition.get_many(keys)
        for i, fp in enumerate(fingerprints):
            meta, handoff, run = values[3 * i : 3 * i + 3]
            holds[fp] = holds[fp] or meta is not None
            end: int | None = None
            if run is not None:
                _, end, topic = decode_backfill_run(run)
                runs[fp] = (end, topic)
            if handoff is not None and (at := decode_handoff(handoff)) != end:
                pending[fp] = max(pending.get(fp, at), at)
    return {fp: StoredView(holds[fp], pending.get(fp), *runs.get(fp, (None, None))) for fp in fingerprints}


def complete_online_copy(
    partition: StorePartition, views: Sequence[ApplicableView], topic: str, copy: OnlineWriter
) -> int:
    """Copy ``topic``'s views of the shard whole to the online copy when the copy lacks
    them, then mark it (serving refuses shards without the mark; docs/deploy.md). The copy
    lacks them without a mark of a whole copy (a Redis that lost its data, a project
    switched to Redis, state a backfill wrote without one) or with offset records behind
    the shard's. A shard without offset records of ``topic`` may still hold records (a
    backfill's): it is copied too. Returns the records copied."""
    shard = partition.shard
    offsets = dict(partition.read_offsets(topic))
    written = 0
    if not copy.is_copied(topic, shard) or _copy_is_behind(copy, topic, shard, offsets):
        written = _copy_shard(partition, views, topic, offsets, copy)
    copy.mark_copied(topic, shard)
    return written


def _copy_is_behind(copy: OnlineWriter, topic: str, shard: int, offsets: Mapping[int, OffsetRecord]) -> bool:
    """Whether the copy's offset records (written after each batch's records) are missing
    or behind the shard's. A copy ahead of the shard is fine: the replay rewrites the same
    whole records."""
    copied = copy.read_offsets(topic, shard)
    return any(
        p not in copied or copied[p].applied_offset < r.applied_offset
        for p, r in offsets.items()
        if r.applied_offset > NO_OFFSET
    )


def _copy_shard(
    partition: StorePartition,
    views: Sequence[ApplicableView],
    topic: str,
    offsets: Mapping[int, OffsetRecord],
    copy: OnlineWriter,
) -> int:
    """Write every record of ``views`` in the shard to the online copy, then their
    freshness and ``topic``'s offset records: a copy lacking them would answer every
    entity not written since as NOT_FOUND, a wrong value no status flags. Hot records go
    with their cold parts (both streams in key order)."""
    shard = partition.shard
    written = 0
    for view in views:
        fp = view.fingerprint
        ttl = {fp: None if view.has_lifetime_window else view.retention_ms}
        cold_prefix = cold_view_prefix(fp)
        cold = iter(partition.scan_prefix(cold_prefix))
        cut = len(cold_prefix)
        pending_cold = next(cold, None)
        items: list[tuple[bytes, bytes, bytes | None]] = []
        parts: list[tuple[bytes, bytes, bytes | None]] = []
        hot = len(view_prefix(fp))
        for key, record in partition.scan_prefix(view_prefix(fp)):
            entity = key[hot:]
            items.append((fp, entity, record))
            while pending_cold is not None and pending_cold[0][cut:] <= entity:
                if pending_cold[0][cut:] == entity:
                    parts.append((fp, entity, pending_cold[1]))
                pending_cold = next(cold, None)
            if len(items) >= _COPY_CHUNK:
                copy.write(items, ttl, ColdWrites(parts, []) if parts else None)
                written += len(items)
                items, parts = [], []
        if items:
            copy.write(items, ttl, ColdWrites(parts, []) if parts else None)
            written += len(items)
    fps = [view.fingerprint for view in views]
    metas = zip(fps, partition.get_many([meta_key(f) for f in fps]), strict=True)
    copy.write_meta([(fp, shard, raw) for fp, raw in metas if raw is not None])
    copy.write_offsets(topic, shard, offsets)  # last: the copy never claims more than it holds
    return written


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
        clock_ms: Callable[[], int] = wall_clock_ms,
        retry_delays_s: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0),
        respect_handoff: bool = True,
        publish_in_background: bool = False,
        keep_copy_whole: bool = True,
        joins: Mapping[bytes, int] | None = None,
    ) -> None:
        """``joins``: the views of ``views`` that joined their running stream (view
        fingerprint -> join time, engine/plan.py), settled at open (:func:`settle_joins`)."""
        self.partition = partition
        if joins:
            for fp in settle_joins(partition, joins, online_copy):
                log.info(
                    "shard %d: view %s joins its stream: handoff set, old state cleared", partition.shard, fp.hex()
                )
        # Whether this applier makes the online copy whole for its topic and checks that
        # it stays so. A history backfill (its own topic, maybe some of the source's
        # views) leaves that to complete_online_copy for the source topic at its end.
        self.keep_copy_whole = keep_copy_whole
        # Streaming rolls the log on a publisher thread: writing a roll of all shards
        # took ~2 s at 10k events/s, during which the worker applied nothing.
        self.publish_in_background = publish_in_background
        self._pending: PendingRoll | None = None
        self.topic = topic
        self.views = {v.fingerprint: CompiledView(v, PartialLayout.for_view(v)) for v in views}
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
            raw_columns={fp: c.raw_column_types() for fp, c in self.views.items() if c.view.offline},
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
        # When the copy's mark was last seen (monotonic s): checked again at most every
        # _COPY_CHECK_S while batches are written, to notice a Redis that lost its data.
        self._copy_checked = 0.0
        # A batch failed (its online copy could not be written, its commit raised): this
        # applier takes no more batches worth recording; close() publishes nothing.
        self.failed = False
        self._closing = False
        if online_copy is not None and keep_copy_whole:
            self._retry("check the online copy", lambda: self._complete_copy(online_copy))

    # -- the online copy's completeness ---------------------------------------------

    def _complete_copy(self, copy: OnlineWriter) -> None:
        written = complete_online_copy(self.partition, [c.view for c in self.views.values()], self.topic, copy)
        if written:
            log.warning(
                "shard %d: the online copy lacked its applied state; copied %d records to it",
                self.partition.shard,
                written,
            )
        self._copy_checked = time.monotonic()

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
        state_rows, progress = self._screen_batches(batches)
        txn = self.partition.begin()
        writes = _write_views_many([(self, txn, state_rows)])[0]
        self._commit(txn, writes, progress, started, extra_puts=extra_puts, publish=publish)

    def _commit(
        self,
        txn: Transaction,
        writes: _ViewWrites,
        progress: Mapping[int, tuple[int, tuple[int, ...]]],
        started: float,
        *,
        extra_puts: Mapping[bytes, bytes] | None = None,
        publish: bool = True,
    ) -> None:
        """Steps 3-5 of an apply: offsets, the online copy, the one commit, the log roll.

        ``self.offsets`` follows the commit, never the batch: an online copy that cannot be
        written fails the batch, and what is recorded after that (the log offsets at close)
        must not carry offsets whose state was never committed."""
        advanced = self._advance_offsets(txn, progress)
        for key, value in (extra_puts or {}).items():
            txn.put(key, value)
        try:
            if (writes.online_items or advanced) and self.online_copy is not None:
                self._write_online_copy(self.online_copy, writes, advanced)
            txn.commit()
        except BaseException:
            self.failed = True
            raise
        self.offsets.update(advanced)
        self._newest.update(writes.newest)
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        if publish:
            self.maybe_publish_log()

    def _screen_batches(
        self, batches: Iterable[ShardBatch]
    ) -> tuple[dict[bytes, list[tuple[ViewRows, int]]], dict[int, tuple[int, tuple[int, ...]]]]:
        """(fresh rows per view, newest offset and watermark per partition) of ``batches``;
        replayed rows are dropped and rows the log lacks are staged for it."""
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
                fresh = self._screen_view_rows(fp, rows, batch.partition, applied, logged)
                if fresh is not None:
                    state_rows.setdefault(fp, []).append((fresh, batch.partition))
            previous = progress.get(batch.partition)
            if previous is None or batch.last_offset > previous[0]:
                progress[batch.partition] = (batch.last_offset, batch.top_ts_after)
        return state_rows, progress

    def _screen_view_rows(
        self, fp: bytes, rows: ViewRows, partition: int, applied: int, logged: int
    ) -> ViewRows | None:
        """The rows of one view the state lacks (None if none); stages those the log lacks.

        Rows before the view's handoff belong to the history backfill and go nowhere.
        """
        fresh = rows.offsets > applied
        handoff = self.handoffs.get(fp)
        after_handoff = None if handoff is None else rows.event_ts >= handoff
        if after_handoff is not None:
            self.stats.rows_skipped_handoff += int((fresh & ~after_handoff).sum())
            fresh &= after_handoff
        self.stats.rows_skipped_replay += int((~fresh if after_handoff is None else ~fresh & after_handoff).sum())
        staged = self._staged.get(fp)
        if staged is not None:
            to_log = rows.offsets > logged
            if after_handoff is not None:
                to_log &= after_handoff
            to_stage = rows if bool(to_log.all()) else rows.select(to_log)
            staged.add(to_stage, partition)
            self.stats.log_rows += len(to_stage)
        if not bool(fresh.any()):
            return None
        return rows if bool(fresh.all()) else rows.select(fresh)

    def _advance_offsets(
        self, txn: Transaction, progress: Mapping[int, tuple[int, tuple[int, ...]]]
    ) -> dict[int, OffsetRecord]:
        """Record each partition's new applied offset within ``txn``; returns those advanced
        (``self.offsets`` takes them once ``txn`` is committed)."""
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
            advanced[partition] = new_record
        return advanced

    def _write_online_copy(self, copy: OnlineWriter, writes: _ViewWrites, advanced: Mapping[int, OffsetRecord]) -> None:
        """Write the Redis copy before the commit: a crash in between is repaired by the replay."""

        def write_copy() -> None:
            if self.keep_copy_whole and time.monotonic() - self._copy_checked >= _COPY_CHECK_S:
                # Only the mark: this batch's offsets are already advanced, so comparing
                # offset records here would always find the copy behind.
                if not copy.is_copied(self.topic, self.partition.shard):  # Redis lost its data
                    self._complete_copy(copy)
                self._copy_checked = time.monotonic()
            if writes.cold_items or writes.cold_kept:
                copy.write(writes.online_items, writes.ttl_ms, ColdWrites(writes.cold_items, writes.cold_kept))
            else:  # the common batch: no entity past SPILL_ABOVE tiles
                copy.write(writes.online_items, writes.ttl_ms)
            copy.write_meta(writes.meta_items)
            # After the tiles: the copy never claims more than it holds.
            copy.write_offsets(self.topic, self.partition.shard, advanced)

        self._retry("write the online copy", write_copy)

    def _record_view(self, writes: _ViewWrites, compiled: CompiledView, merged: MergedView) -> None:
        """Count one view's merge and note what it wrote, for the online copy and the cache."""
        view = compiled.view
        self.stats.rows_applied += merged.rows
        self.stats.entities_written += len(merged.keys)
        self.stats.per_view_rows[view.name] = self.stats.per_view_rows.get(view.name, 0) + merged.rows
        if self.online_copy is not None:  # only the Redis copy reads them
            writes.online_items.extend(
                (view.fingerprint, k, r) for k, r in zip(merged.keys, merged.records, strict=True)
            )
            writes.cold_items.extend((view.fingerprint, k, c) for k, c in merged.cold)
            writes.cold_kept.extend((view.fingerprint, k) for k in merged.cold_kept)
        writes.newest[view.fingerprint] = merged.newest
        writes.meta_items.append((view.fingerprint, self.partition.shard, merged.meta_value))
        writes.ttl_ms[view.fingerprint] = None if view.has_lifetime_window else view.retention_ms

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
        for attempt, delay in enumerate((*(() if self._closing else self.retry_delays_s), None)):
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
        """Publish the log and record how far (unless a batch failed: the next run replays
        from the committed offsets and stages those rows again), then make the WAL durable.
        Never raises from the publish: close runs while the dataflow shuts down, where an
        exception becomes a panic that aborts the process before the WAL is flushed."""
        if not self.failed:
            self._closing = True  # one attempt at the online copy: it may be why the run stops
            try:
                self.maybe_publish_log(force=True)
            except Exception as exc:  # an online copy that is down: its log offsets stay behind, safely
                log.error(
                    "shard %d: log offsets not written to the online copy at close: %s", self.partition.shard, exc
                )
        self.partition.flush_wal(sync=True)


#: View rows (a shard batch's ``row_count``) one grouped kernel call takes. Grouping pays
#: the kernel's fixed cost once per view where it matters, cycles of a few events per
#: shard; a catch-up cycle (source batches of tens of thousands of events) is applied in
#: chunks of about this many rows, so that one call does not hold every shard's decoded,
#: merged and encoded records at once (all eight shards in one call raised a 1M-event
#: catch-up's peak RSS from ~830 to ~1,010 MB; session 17, benchmarks/RESULTS.md).
GROUP_VIEW_ROWS = 16_384


def apply_shards(
    work: Sequence[tuple[ShardApplier, Iterable[ShardBatch]]], *, group_view_rows: int = GROUP_VIEW_ROWS
) -> None:
    """Apply each applier's batches, with one kernel call per view over several shards.

    Streaming hands one worker's shards their batches of a cycle together: the kernel's
    fixed cost per call (tens of numpy calls per view) is then paid once per view, not
    once per shard, which is most of a shard commit's CPU at a few events per shard.
    Shards are taken together until their rows pass ``group_view_rows``; a shard is never
    split. Each shard still commits its own WriteBatch holding its records and its offsets
    (docs/semantics.md section 6), stages its own Parquet log rows and rolls its own log,
    exactly as :meth:`ShardApplier.apply` does for one shard.
    """
    for chunk in _row_bounded_chunks(work, group_view_rows):
        _apply_together(chunk)


def _row_bounded_chunks(
    work: Sequence[tuple[ShardApplier, Iterable[ShardBatch]]], max_rows: int
) -> list[list[tuple[ShardApplier, list[ShardBatch]]]]:
    """``work`` in order, cut into runs of shards whose rows together stay within
    ``max_rows`` (a shard with more rows than that is a run of its own)."""
    chunks: list[list[tuple[ShardApplier, list[ShardBatch]]]] = []
    rows_in_last = max_rows
    for applier, batches in work:
        listed = list(batches)
        rows = sum(batch.row_count for batch in listed)
        if not chunks or rows_in_last + rows > max_rows:
            chunks.append([])
            rows_in_last = 0
        chunks[-1].append((applier, listed))
        rows_in_last += rows
    return chunks


def _apply_together(work: Sequence[tuple[ShardApplier, Iterable[ShardBatch]]]) -> None:
    started = time.perf_counter()
    screened = [(applier, *applier._screen_batches(batches)) for applier, batches in work]
    txns = [applier.partition.begin() for applier, _, _ in screened]
    writes = _write_views_many([(a, txn, rows) for (a, rows, _), txn in zip(screened, txns, strict=True)])
    for (applier, _, progress), txn, written in zip(screened, txns, writes, strict=True):
        applier._commit(txn, written, progress, started)


def _write_views_many(
    shards: Sequence[tuple[ShardApplier, Transaction, Mapping[bytes, list[tuple[ViewRows, int]]]]],
) -> list[_ViewWrites]:
    """Merge every view's fresh rows of every shard into the stored records, each shard
    within its own transaction: one kernel call per view for all the shards."""
    out = [_ViewWrites() for _ in shards]
    for fp in dict.fromkeys(fp for _, _, state_rows in shards for fp in state_rows):
        members = [(i, applier) for i, (applier, _, state_rows) in enumerate(shards) if fp in state_rows]
        first = members[0][1]
        compiled = first.views[fp]
        merged = merge_view_rows_many(
            compiled,
            [ShardRows(shards[i][1], shards[i][2][fp], applier._newest.get(fp, NO_EVENT_TS)) for i, applier in members],
            first.clock_ms(),
        )
        for (i, applier), view_merged in zip(members, merged, strict=True):
            applier._record_view(out[i], compiled, view_merged)
    return out


def offsets_view(appliers: Mapping[int, ShardApplier]) -> dict[int, dict[int, OffsetRecord]]:
    """Shard -> partition -> offset record, for status pages and tests."""
    return {shard: dict(a.offsets) for shard, a in appliers.items()}

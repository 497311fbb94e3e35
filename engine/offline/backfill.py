"""Backfill: replay history through the same kernel and write path as streaming.

Two inputs, one write path (``route`` + ``ShardApplier``):

- **Parquet history** (:func:`backfill_parquet`): raw events in Parquet files (the
  source's ``history`` globs or ``--from``). Every file's schema is checked before
  anything is written; rows with ``start <= e < end`` are replayed once per family of
  views (views sharing their first join key), in the order (entity bucket, event time,
  file order), and get the positions ``(HISTORY_PARTITION, index in that replay)``
  under a topic name of their own, so their offsets never mix with Kafka's. The
  replay is cut into slices of whole entities (``history_slices``, spilled to disk by
  ``history_spill``), so memory is bounded by the slice, not by the history, and each
  entity's record is written once, not once per slice. The run
  ends by recording the handoff time ``T = end`` for each view in the same
  WriteBatch as the last history batch (docs/backfill.md).
- **A Kafka topic**: the streaming dataflow itself, read until caught up
  (``dataflows.backfill.backfill_kafka``).

A run is resumable: the applier records the history offsets with the tiles, so a
restart replays the same deterministic row order from the smallest recorded offset.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.apply import ShardApplier, complete_online_copy, settle_joins
from engine.io.decoder import EventSourceLike
from engine.offline.backfill_commits import BackfillCommits
from engine.offline.exceptions import BackfillError
from engine.offline.history_batches import (
    HISTORY_PARTITION,
    chunk_codes,
    factorize_key_columns,
    history_batches,
    routed_columns,
)
from engine.offline.history_files import HistoryView
from engine.offline.history_slices import HistoryIndex, HistorySlice, index_history
from engine.offline.history_spill import SpilledHistory
from engine.routing import route
from engine.state.offsets import combine_resume_points
from engine.state.protocols import OnlineWriter, Store, StorePartition
from engine.state.records import (
    backfill_run_key,
    decode_backfill_run,
    encode_backfill_run,
    encode_handoff,
    handoff_key,
)
from engine.state.rocksdb_store import RocksDBStore
from engine.timefmt import time_text
from engine.view_merge import ApplicableView

#: Rows routed together (a slice is routed in chunks of this many rows).
DEFAULT_CHUNK_ROWS = 250_000
#: Rows of history read (one slice of whole entities) and committed in one WriteBatch
#: per shard. A slice holds every row of its entities, so each entity record is written
#: once whatever the slice size; memory grows with the slice (docs/backfill.md).
DEFAULT_COMMIT_ROWS = 500_000
MAX_CHUNKS_PER_COMMIT = 8


class BackfillView(ApplicableView, HistoryView, Protocol):
    """What a history backfill needs of a view: the history replay's and the write path's needs."""


#: The replay order's name, part of every history topic: a run interrupted under another
#: order (an earlier version) must not be resumed with this one's positions.
HISTORY_ORDER = b"family/entity-bucket/event-time/file/row"


def history_topic(source_topic: str, fingerprints: Sequence[bytes], joins: Mapping[bytes, int] | None = None) -> str:
    """Topic name of history positions for one set of views.

    The view set is part of the name: a later backfill of other views of the same
    source must not find these offsets and skip its rows as already applied. So are the
    join times of views that joined a running stream (engine/plan.py): a fingerprint
    applied again later joins anew, and its new history must not resume the old one's.
    """
    joined = b"".join(fp + str(joins[fp]).encode() for fp in sorted(fingerprints) if joins and fp in joins)
    digest = hashlib.sha256(HISTORY_ORDER + b"".join(sorted(fingerprints)) + joined).hexdigest()[:12]
    return f"{source_topic}#history-{digest}"


@dataclass(frozen=True)
class BackfillReport:
    """What one Parquet-history backfill did."""

    files: tuple[str, ...]
    topic: str
    views: tuple[str, ...]
    start_ms: int
    end_ms: int
    rows_total: int  # selected history rows (events)
    positions_total: int  # replay positions: every selected row once per family of views
    positions_resumed_from: int
    positions_replayed: int
    batches: int
    seconds: float
    complete: bool
    applied_per_view: Mapping[str, int]
    records_written: int = 0  # entity records written, over every commit and view

    @property
    def events_per_second(self) -> float:
        """History events per second (a row replayed for every family counts once)."""
        if self.seconds <= 0 or self.positions_total <= 0:
            return 0.0
        return self.rows_total * self.positions_replayed / self.positions_total / self.seconds


@dataclass(frozen=True)
class BackfillTarget:
    """Where a backfill writes: the applied plan's shards, the state dir, the log root."""

    state_dir: Path
    shards: int
    log_root: str | None
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
            raise BackfillError(
                f"BackfillTarget: field 'shards': expected an int >= 1, got {self.shards!r}",
                hint="use the shard count of the applied plan",
            )


def _check_runs(store: Store, views: Sequence[BackfillView], record: bytes) -> None:
    """Refuse a second, different history backfill of a view (positions would collide)."""
    keys = [backfill_run_key(v.fingerprint) for v in views]
    for part in map(store.partition, range(store.n_shards)):
        for view, stored in zip(views, part.get_many(keys), strict=True):
            if stored is None or stored == record:
                continue
            start, end, other = decode_backfill_run(stored)
            raise BackfillError(
                f"view '{view.name}' already has a history backfill over [{time_text(start)}, {time_text(end)}) "
                f"as {other!r} in shard {part.shard}; this one asks for a different range or "
                "set of views (or that one was made by an earlier version, with another replay order)",
                hint="resume with the same --views/--start/--end, or backfill into a fresh "
                "state directory (a changed view gets a new fingerprint and may be backfilled)",
            )


def _check_joins(views: Sequence[BackfillView], joins: Mapping[bytes, int], end_ms: int) -> None:
    """A view that joined its running stream at ``H`` holds the events with ``e >= H``
    from the stream: its history is exactly ``e < H``. Another end would count events
    twice (the stream's after ``H``) or leave a gap (before ``H``)."""
    wrong = [(v.name, joins[v.fingerprint]) for v in views if v.fingerprint in joins and joins[v.fingerprint] != end_ms]
    if wrong:
        named = ", ".join(f"{name!r} at {time_text(at)}" for name, at in wrong)
        raise BackfillError(
            f"backfill: --end {time_text(end_ms)} is not the join time of views that joined the running stream "
            f"({named}): they hold the stream's events from then on, so their history ends exactly there",
            hint="drop --end (it defaults to the join time), or backfill views with different join times one "
            "at a time with --views",
        )


def _check_arguments(
    views: Sequence[BackfillView], start_ms: int, end_ms: int, chunk_rows: int, commit_rows: int
) -> None:
    if not views:
        raise BackfillError("backfill: no view selected", hint="pass --views or define views")
    if start_ms >= end_ms:
        raise BackfillError(
            f"backfill: --start {time_text(start_ms)} must be before --end {time_text(end_ms)}",
            hint="--end is the handoff time: history holds e < end, the stream e >= end",
        )
    if chunk_rows < 1:
        raise BackfillError(f"backfill: chunk_rows: expected >= 1, got {chunk_rows}")
    if commit_rows < 1:
        raise BackfillError(f"backfill: commit_rows: expected >= 1, got {commit_rows}")


def _open_appliers(
    target: BackfillTarget,
    store: Store,
    views: Sequence[BackfillView],
    topic: str,
    log_max_rows: int,
    online_copy: OnlineWriter | None,
    source_topic: str,
    joins: Mapping[bytes, int],
) -> dict[int, ShardApplier]:
    """One applier per shard, after settling the views that joined their stream (their
    old state cleared, the online copy's too). Each writes its records to the online copy
    as it commits when the copy is whole for the source topic; a shard whose copy is not
    (no mark) is copied whole at the end instead (:func:`_complete_online_copies`), once."""
    for shard in range(target.shards):
        settle_joins(store.partition(shard), joins, online_copy)
    return {
        shard: ShardApplier(
            store.partition(shard),
            views,
            topic,
            log_root=target.log_root,
            log_max_rows=log_max_rows,
            log_max_age_s=3600.0,
            online_copy=online_copy if online_copy is not None and online_copy.is_copied(source_topic, shard) else None,
            respect_handoff=False,
            keep_copy_whole=False,
        )
        for shard in range(target.shards)
    }


def _complete_online_copies(
    partitions: Sequence[StorePartition], copy: OnlineWriter, views: Sequence[ApplicableView], source_topic: str
) -> None:
    """After a whole replay: make the online copy whole for the source topic's views in
    every shard and mark it, as a dataflow of the source does when it opens a shard.
    Serving over Redis refuses shards without the mark (docs/deploy.md), so without this a
    backfill alone left every read refused until the first ``streamfeat run``."""
    for partition in partitions:
        complete_online_copy(partition, views, source_topic, copy)


def _close_appliers(appliers: Mapping[int, ShardApplier], store: Store) -> None:
    # Closing publishes the rest of each shard's log: shards are independent,
    # and two threads overlap their Parquet writes.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-close") as closer:
        closing = [closer.submit(applier.close) for applier in appliers.values()]
    store.close()
    for job in closing:
        job.result()


@dataclass
class _Progress:
    batches: int = 0
    done: int = 0
    complete: bool = True
    top_ts: int | None = None


@dataclass(frozen=True)
class _Replay:
    """How history rows are replayed: the same for every slice of one run."""

    source: EventSourceLike
    index: HistoryIndex
    topic: str
    shards: int
    chunk_rows: int
    per_commit: int  # routed chunks per commit
    max_batches: int | None

    def stopped(self, progress: _Progress) -> bool:
        return self.max_batches is not None and progress.batches >= self.max_batches


def _replay_slice(
    replay: _Replay,
    piece: HistorySlice,
    rows: pl.DataFrame,
    order: npt.NDArray[np.intp] | None,
    first_row: int,
    commits: BackfillCommits,
    progress: _Progress,
) -> None:
    """Route one slice chunk by chunk; commit every ``per_commit`` chunks and at its end.
    ``rows`` are in file order, ``order`` sorts them (``SpilledHistory.read``)."""
    views = replay.index.families[piece.family].views
    factorized = factorize_key_columns(rows, views, order)
    local_first = max(first_row - piece.first_offset, 0)
    columns = routed_columns(views, factorized)
    batches = history_batches(
        rows,
        replay.source,
        replay.topic,
        local_first,
        replay.chunk_rows,
        columns,
        offset_base=piece.first_offset,
        top_ts_before=progress.top_ts,
        order=order,
    )
    for decoded in batches:
        if replay.stopped(progress):
            progress.complete = False
            break
        hint = chunk_codes(factorized, decoded.first_offset - piece.first_offset, len(decoded.offsets))
        progress.batches += 1
        progress.done = decoded.last_offset + 1
        progress.top_ts = decoded.top_ts_after[0]
        commits.add(route(decoded, views, replay.shards, factorized=hint), progress.done)
        last = progress.done == commits.total
        if last or len(commits.pending_ends) >= replay.per_commit or replay.stopped(progress):
            commits.commit(last)
    if commits.pending_ends:
        commits.commit(False)


def _replay_wanted_slices(
    replay: _Replay, spilled: SpilledHistory, first_row: int, commits: BackfillCommits, progress: _Progress
) -> None:
    """Replay every slice not applied by an earlier run, in order, until done or stopped;
    returns once every shard's log rows are published."""
    for slice_id in spilled.wanted:  # slices before first_row were applied by an earlier run
        if replay.stopped(progress):
            progress.complete = False
            break
        piece = replay.index.slices[slice_id]
        _replay_slice(replay, piece, *spilled.read(slice_id), first_row, commits, progress)
    commits.wait_for_publish()


def _rows_applied_per_view(appliers: Mapping[int, ShardApplier]) -> dict[str, int]:
    applied: dict[str, int] = {}
    for applier in appliers.values():
        for name, rows_applied in applier.stats.per_view_rows.items():
            applied[name] = applied.get(name, 0) + rows_applied
    return applied


def backfill_parquet(
    target: BackfillTarget,
    source: EventSourceLike,
    views: Sequence[BackfillView],
    files: Sequence[str],
    start_ms: int,
    end_ms: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_batches: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    log_max_rows: int = 1_000_000,
    commit_rows: int = DEFAULT_COMMIT_ROWS,
    source_views: Sequence[ApplicableView] | None = None,
    joins: Mapping[bytes, int] | None = None,
) -> BackfillReport:
    """Replay ``start_ms <= e < end_ms`` of ``files`` into the state, then record the handoff.

    ``source_views``: every view of the source (default ``views``): with an online copy
    (``target.redis_url``), a whole replay leaves the copy whole for all of them.
    ``joins``: views of ``views`` that joined their running stream (fingerprint -> join
    time, engine/plan.py); their history ends at the join, so ``end_ms`` must equal it.

    ``max_batches`` stops after that many batches (an interruption, for tests);
    ``on_progress(done, total)`` (replay positions) is called for every batch once it
    is committed. History is read ``commit_rows`` rows (one slice of whole entities) at
    a time; a slice is routed in chunks of ``chunk_rows`` and committed together (at
    most MAX_CHUNKS_PER_COMMIT chunks per commit). A run interrupted in between resumes
    from the last commit.
    """
    _check_arguments(views, start_ms, end_ms, chunk_rows, commit_rows)
    joins = {fp: at for fp, at in (joins or {}).items() if fp in {v.fingerprint for v in views}}
    _check_joins(views, joins, end_ms)
    started = time.perf_counter()
    topic = history_topic(str(source.topic), [v.fingerprint for v in views], joins)
    index = index_history(files, source, views, start_ms, end_ms, slice_rows=commit_rows)
    store = RocksDBStore(target.state_dir, target.shards)
    appliers: dict[int, ShardApplier] = {}
    commits: BackfillCommits | None = None
    spilled: SpilledHistory | None = None
    online_copy: OnlineWriter | None = None
    try:
        if target.redis_url:
            from engine.state.redis_writer import RedisOnlineWriter

            online_copy = RedisOnlineWriter(target.redis_url)
        record = encode_backfill_run(start_ms, end_ms, topic)
        _check_runs(store, views, record)
        # Through this store's own writer handles: a second open of a shard this process
        # writes would race the writer's compaction (engine/state/secondary.py).
        recorded = combine_resume_points([part.read_offsets(topic) for part in store.partitions], store.n_shards)
        point = recorded.get(HISTORY_PARTITION)
        first_row = point.next_offset if point is not None else 0
        appliers = _open_appliers(target, store, views, topic, log_max_rows, online_copy, str(source.topic), joins)
        runs = {backfill_run_key(v.fingerprint): record for v in views}
        final = {**runs, **{handoff_key(v.fingerprint): encode_handoff(end_ms) for v in views}}
        commits = BackfillCommits(appliers, runs, final, index.total, on_progress)
        progress = _Progress(done=first_row)
        per_commit = max(1, min(MAX_CHUNKS_PER_COMMIT, commit_rows // chunk_rows))
        replay = _Replay(source, index, topic, target.shards, chunk_rows, per_commit, max_batches)
        spilled = SpilledHistory(index, source, first_row)
        _replay_wanted_slices(replay, spilled, first_row, commits, progress)
        if progress.complete and progress.batches == 0:
            # Nothing left to replay (empty range, or resumed after the last batch):
            # the handoff still has to be on record in every shard.
            for applier in appliers.values():
                applier.apply([], extra_puts=final)
        applied = _rows_applied_per_view(appliers)
        records_written = sum(applier.stats.entities_written for applier in appliers.values())
        if online_copy is not None and progress.complete:
            _complete_online_copies(store.partitions, online_copy, source_views or views, str(source.topic))
    finally:
        if spilled is not None:
            spilled.close()
        if commits is not None:
            commits.shutdown()
        _close_appliers(appliers, store)
        if online_copy is not None:
            online_copy.close()
    return BackfillReport(
        files=tuple(files),
        topic=topic,
        views=tuple(v.name for v in views),
        start_ms=start_ms,
        end_ms=end_ms,
        rows_total=index.rows,
        positions_total=index.total,
        positions_resumed_from=first_row,
        positions_replayed=progress.done - first_row,
        batches=progress.batches,
        seconds=time.perf_counter() - started,
        complete=progress.complete,
        applied_per_view=applied,
        records_written=records_written,
    )

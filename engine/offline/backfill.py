"""Backfill: replay history through the same kernel and write path as streaming.

Two inputs, one write path (``route`` + ``ShardApplier``):

- **Parquet history** (:func:`backfill_parquet`): raw events in Parquet files (the
  source's ``history`` globs or ``--from``). Every file's schema is checked before
  anything is written; rows with ``start <= e < end`` are sorted by (event time, file
  order) and get the positions ``(HISTORY_PARTITION, row index in that order)``
  under a topic name of their own, so their offsets never mix with Kafka's. The run
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.apply import ShardApplier
from engine.offline.exceptions import BackfillError
from engine.offline.history_batches import (
    HISTORY_PARTITION,
    chunk_codes,
    factorize_key_columns,
    history_batches,
    routed_columns,
)
from engine.offline.history_files import load_history
from engine.routing import ShardBatch, route
from engine.state.offsets import resume_positions
from engine.state.records import (
    backfill_run_key,
    decode_backfill_run,
    encode_backfill_run,
    encode_handoff,
    handoff_key,
)
from engine.state.rocksdb_store import RocksDBStore

#: Rows routed together. Measured on 10M events / 100k users (docs/backfill.md):
#: 2M-row chunks in 10M-row commits cost 8.1 s of CPU, 1M in 8M 9.0 s, 500k in 4M 10.1 s.
DEFAULT_CHUNK_ROWS = 2_000_000
#: Rows committed in one WriteBatch per shard (each touched entity record is rewritten
#: once per commit), capped at MAX_CHUNKS_PER_COMMIT routed chunks held in memory.
DEFAULT_COMMIT_ROWS = 10_000_000
MAX_CHUNKS_PER_COMMIT = 8


def history_topic(source_topic: str, fingerprints: Sequence[bytes]) -> str:
    """Topic name of history positions for one set of views.

    The view set is part of the name: a later backfill of other views of the same
    source must not find these offsets and skip its rows as already applied.
    """
    digest = hashlib.sha256(b"".join(sorted(fingerprints))).hexdigest()[:12]
    return f"{source_topic}#history-{digest}"


@dataclass(frozen=True)
class BackfillReport:
    """What one Parquet-history backfill did."""

    files: tuple[str, ...]
    topic: str
    views: tuple[str, ...]
    start_ms: int
    end_ms: int
    rows_total: int
    rows_resumed_from: int
    rows_replayed: int
    batches: int
    seconds: float
    complete: bool
    applied_per_view: Mapping[str, int]

    @property
    def events_per_second(self) -> float:
        return self.rows_replayed / self.seconds if self.seconds > 0 else 0.0


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


def _check_runs(store: RocksDBStore, views: Sequence[Any], record: bytes) -> None:
    """Refuse a second, different history backfill of a view (positions would collide)."""
    keys = [backfill_run_key(v.fingerprint) for v in views]
    for part in store.partitions:
        for view, stored in zip(views, part.get_many(keys), strict=True):
            if stored is None or stored == record:
                continue
            start, end, other = decode_backfill_run(stored)
            raise BackfillError(
                f"view '{view.name}' already has a history backfill over [{start}, {end}) ms "
                f"as {other!r} in shard {part.shard}; this one asks for a different range or "
                "set of views",
                hint="resume with the same --views/--start/--end, or backfill into a fresh "
                "state directory (a changed view gets a new fingerprint and may be backfilled)",
            )


def backfill_parquet(
    target: BackfillTarget,
    source: Any,
    views: Sequence[Any],
    files: Sequence[str],
    start_ms: int,
    end_ms: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_batches: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    log_max_rows: int = 1_000_000,
    commit_rows: int = DEFAULT_COMMIT_ROWS,
) -> BackfillReport:
    """Replay ``start_ms <= e < end_ms`` of ``files`` into the state, then record the handoff.

    ``max_batches`` stops after that many batches (an interruption, for tests);
    ``on_progress(done_rows, total_rows)`` is called for every batch once it is committed.
    Up to ``commit_rows`` rows (at most MAX_CHUNKS_PER_COMMIT chunks) are committed
    together; a run interrupted in between resumes from the last commit.
    """
    if not views:
        raise BackfillError("backfill: no view selected", hint="pass --views or define views")
    if start_ms >= end_ms:
        raise BackfillError(
            f"backfill: --start {start_ms} ms must be before --end {end_ms} ms",
            hint="--end is the handoff time: history holds e < end, the stream e >= end",
        )
    if chunk_rows < 1:
        raise BackfillError(f"backfill: chunk_rows: expected >= 1, got {chunk_rows}")
    if commit_rows < 1:
        raise BackfillError(f"backfill: commit_rows: expected >= 1, got {commit_rows}")
    started = time.perf_counter()
    topic = history_topic(str(source.topic), [v.fingerprint for v in views])
    history = load_history(files, source, views, start_ms, end_ms)
    total = history.height

    store = RocksDBStore(target.state_dir, target.shards)
    appliers: dict[int, ShardApplier] = {}
    publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-log")
    publishing: Future[None] | None = None
    try:
        record = encode_backfill_run(start_ms, end_ms, topic)
        _check_runs(store, views, record)
        resume = resume_positions(target.state_dir, target.shards, topic)
        point = resume.get(HISTORY_PARTITION)
        first_row = point.next_offset if point is not None else 0
        online_copy = None
        if target.redis_url:
            from engine.state.redis_writer import RedisOnlineWriter

            online_copy = RedisOnlineWriter(target.redis_url)
        for shard in range(target.shards):
            appliers[shard] = ShardApplier(
                store.partition(shard),
                views,
                topic,
                log_root=target.log_root,
                log_max_rows=log_max_rows,
                log_max_age_s=3600.0,
                online_copy=online_copy,
                respect_handoff=False,
            )
        runs = {backfill_run_key(v.fingerprint): record for v in views}
        final = {**runs, **{handoff_key(v.fingerprint): encode_handoff(end_ms) for v in views}}
        batches = 0
        done = first_row
        complete = True
        # Several routed chunks go into one apply (one WriteBatch per shard): every
        # commit rewrites the record of each entity it touches, so fewer, larger commits
        # write each record fewer times, while routing still works chunk by chunk.
        per_commit = max(1, min(MAX_CHUNKS_PER_COMMIT, commit_rows // chunk_rows))
        factorized = factorize_key_columns(history, views)
        pending: list[list[ShardBatch]] = [[] for _ in range(target.shards)]
        pending_ends: list[int] = []

        def publish_logs() -> None:
            for applier in appliers.values():
                applier.maybe_publish_log()

        def wait_for_publish() -> None:
            nonlocal publishing
            if publishing is not None:
                job, publishing = publishing, None
                job.result()

        def commit_pending(last: bool) -> None:
            nonlocal publishing
            wait_for_publish()  # appliers are not thread-safe: one user at a time
            for shard, shard_batches in enumerate(pending):
                appliers[shard].apply(shard_batches, extra_puts=final if last else runs, publish=False)
                shard_batches.clear()
            # Log files are written while the next rows are routed: pyarrow's Parquet
            # writer releases the GIL, so the two overlap on a second core.
            publishing = publisher.submit(publish_logs)
            if on_progress is not None:
                for end in pending_ends:
                    on_progress(end, total)
            pending_ends.clear()

        batches_of = history_batches(history, source, topic, first_row, chunk_rows, routed_columns(views, factorized))
        for decoded in batches_of:
            if max_batches is not None and batches >= max_batches:
                complete = False
                break
            last = decoded.last_offset == total - 1
            hint = chunk_codes(factorized, decoded.first_offset, len(decoded.offsets))
            for _, shard_batch in route(decoded, views, target.shards, factorized=hint):
                pending[shard_batch.shard].append(shard_batch)
            batches += 1
            done = decoded.last_offset + 1
            pending_ends.append(done)
            if last or len(pending_ends) >= per_commit or (max_batches is not None and batches >= max_batches):
                commit_pending(last)
        if pending_ends:
            commit_pending(False)
        wait_for_publish()
        if complete and batches == 0:
            # Nothing left to replay (empty range, or resumed after the last batch):
            # the handoff still has to be on record in every shard.
            for applier in appliers.values():
                applier.apply([], extra_puts=final)
        applied: dict[str, int] = {}
        for applier in appliers.values():
            for name, rows in applier.stats.per_view_rows.items():
                applied[name] = applied.get(name, 0) + rows
    finally:
        publisher.shutdown(wait=True)  # never close an applier its log job still uses
        # Closing publishes the rest of each shard's log: shards are independent,
        # and two threads overlap their Parquet writes.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-close") as closer:
            closing = [closer.submit(applier.close) for applier in appliers.values()]
        store.close()
        for job in closing:
            job.result()
    return BackfillReport(
        files=tuple(files),
        topic=topic,
        views=tuple(v.name for v in views),
        start_ms=start_ms,
        end_ms=end_ms,
        rows_total=total,
        rows_resumed_from=first_row,
        rows_replayed=done - first_row,
        batches=batches,
        seconds=time.perf_counter() - started,
        complete=complete,
        applied_per_view=applied,
    )

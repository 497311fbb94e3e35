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

import glob
import hashlib
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.apply import ShardApplier
from engine.io.batches import DecodedBatch
from engine.io.timestamps import parse_event_times
from engine.kernel.layout import MAX_PARTITION
from engine.offline.exceptions import OfflineError
from engine.routing import ShardBatch, route
from engine.state.keys import encode_entity_keys
from engine.state.offsets import resume_positions
from engine.state.records import (
    backfill_run_key,
    decode_backfill_run,
    encode_backfill_run,
    encode_handoff,
    handoff_key,
)
from engine.state.rocksdb_store import RocksDBStore

#: Partition number of replayed history rows (the largest one positions can encode).
HISTORY_PARTITION = MAX_PARTITION
#: Rows routed together. Measured on 10M events / 100k users (docs/backfill.md):
#: 2M-row chunks in 10M-row commits cost 8.1 s of CPU, 1M in 8M 9.0 s, 500k in 4M 10.1 s.
DEFAULT_CHUNK_ROWS = 2_000_000
#: Rows committed in one WriteBatch per shard (each touched entity record is rewritten
#: once per commit), capped at MAX_CHUNKS_PER_COMMIT routed chunks held in memory.
DEFAULT_COMMIT_ROWS = 10_000_000
MAX_CHUNKS_PER_COMMIT = 8


class BackfillError(OfflineError):
    """A backfill cannot start or had to stop; nothing of the named file was written."""


class HistoryFileError(BackfillError):
    """A history file is unreadable or does not match the source schema."""


def history_topic(source_topic: str, fingerprints: Sequence[bytes]) -> str:
    """Topic name of history positions for one set of views.

    The view set is part of the name: a later backfill of other views of the same
    source must not find these offsets and skip its rows as already applied.
    """
    digest = hashlib.sha256(b"".join(sorted(fingerprints))).hexdigest()[:12]
    return f"{source_topic}#history-{digest}"


# ----------------------------------------------------------------------------- files


def resolve_history_files(patterns: Sequence[str]) -> list[str]:
    """Parquet files named by paths, directories (searched recursively) or globs, sorted."""
    found: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(str(p) for p in path.rglob("*.parquet"))
        else:
            matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise BackfillError(
                f"history: no Parquet file matches {pattern!r}",
                hint="pass --from with a file, a directory or a glob such as 'history/**/*.parquet'",
            )
        found.extend(m for m in matches if m not in found)
    return found


def _type_ok(kind: str, arrow_type: pa.DataType) -> bool:
    if kind == "string":
        return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
    if kind == "int":
        return bool(pa.types.is_integer(arrow_type))
    if kind == "float":
        return bool(pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type))
    if kind == "bool":
        return bool(pa.types.is_boolean(arrow_type))
    return False


_TS_KINDS = {
    "epoch_millis": ("int", "an integer column of epoch milliseconds"),
    "epoch_seconds": ("float", "a numeric column of epoch seconds"),
    "iso8601": ("string", "a string column of ISO 8601 times with an offset"),
}


def _kind(value: Any) -> str:
    return str(getattr(value, "value", value))


def check_file_schema(path: str, source: Any) -> None:
    """Raise :class:`HistoryFileError` naming ``path`` and the column if the file cannot be used."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise HistoryFileError(
            f"history file {path}: not a readable Parquet file: {exc}",
            hint="replace or remove the file; nothing was written",
        ) from None
    wanted: dict[str, tuple[str, str]] = {
        name: (_kind(kind), f"{_kind(kind)}") for name, kind in source.schema.items()
    }
    ts_field = str(source.timestamp_field)
    wanted[ts_field] = _TS_KINDS[_kind(source.timestamp_format)]
    for name, (kind, expected) in wanted.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise HistoryFileError(
                f"history file {path}: column '{name}' is missing (expected {expected}); "
                f"the file has {schema.names}",
                hint=f"every history file needs every field of source '{source.name}'; "
                "nothing was written",
            )
        got = schema.field(index).type
        if not _type_ok(kind, got):
            raise HistoryFileError(
                f"history file {path}: column '{name}': expected {expected}, got {got}",
                hint="cast the column when writing the file; nothing was written",
            )


# ----------------------------------------------------------------------------- loading


def _event_times(frame: pl.DataFrame, field: str, fmt: str, path: str) -> pl.Series:
    """Event times in ms, parsed exactly as the stream decoder parses them."""
    column = frame.get_column(field)
    parsed = parse_event_times(
        column.to_list() if fmt == "iso8601" else column.to_numpy(), fmt, field
    )
    if parsed.problems:
        rows = sorted(parsed.problems)
        _reason, detail = parsed.problems[rows[0]]
        raise HistoryFileError(
            f"history file {path}: row {rows[0]}: {detail} ({len(rows)} row(s) like this)",
            hint="check the source's timestamp_format (docs/semantics.md sections 1 and 5), "
            "or drop or repair those rows; nothing was written",
        )
    return pl.Series(field, parsed.ts_ms, dtype=pl.Int64)


def _read_file(
    path: str, source: Any, needed: Sequence[str], start_ms: int, end_ms: int, index: int
) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path, columns=list(needed))
    except Exception as exc:  # polars raises several unrelated types for damaged pages
        raise HistoryFileError(
            f"history file {path}: could not be read: {exc}",
            hint="replace or remove the file; nothing was written",
        ) from None
    for name in needed:
        nulls = frame.get_column(name).null_count()
        if nulls:
            raise HistoryFileError(
                f"history file {path}: column '{name}': expected no nulls, found {nulls}",
                hint="drop or repair those rows; nothing was written",
            )
    ts_field = str(source.timestamp_field)
    ts = _event_times(frame, ts_field, _kind(source.timestamp_format), path)
    for name, kind in source.schema.items():
        if _kind(kind) == "float" and name in needed:
            values = frame.get_column(name).cast(pl.Float64)
            if not bool(values.is_finite().all()):
                raise HistoryFileError(
                    f"history file {path}: column '{name}': expected finite floats, found NaN "
                    "or infinity",
                    hint="drop or repair those rows; nothing was written",
                )
    _check_constraints(frame, source, needed, path)
    frame = frame.with_columns(ts.alias("__e"), pl.lit(index, dtype=pl.Int32).alias("__file"))
    return frame.filter((pl.col("__e") >= start_ms) & (pl.col("__e") < end_ms))


def _check_constraints(frame: pl.DataFrame, source: Any, needed: Sequence[str], path: str) -> None:
    """History obeys the source's declared constraints like the stream (whose records
    breaking one go to the dead-letter topic), so backfilled values match streamed ones."""
    for name, constraint in getattr(source, "constraints", {}).items():
        if name not in needed:
            continue
        column = frame.get_column(name)
        if constraint.is_numeric:
            values = column.cast(pl.Float64)
            bad = pl.Series([False] * len(values))
            if constraint.min is not None:
                bad = bad | (values < constraint.min)
            if constraint.max is not None:
                bad = bad | (values > constraint.max)
            what = f"values within [{constraint.min}, {constraint.max}]"
        else:
            lengths = column.str.len_chars()
            bad = pl.Series([False] * len(column))
            if constraint.min_length is not None:
                bad = bad | (lengths < constraint.min_length)
            if constraint.max_length is not None:
                bad = bad | (lengths > constraint.max_length)
            if constraint.allowed_characters is not None:
                bad = bad | ~column.str.contains(f"^(?:{constraint.character_class})$")
            what = f"strings within the declared constraint {constraint.to_dict()}"
        count = int(bad.sum())
        if count:
            raise HistoryFileError(
                f"history file {path}: column '{name}': expected {what}, found {count} row(s) "
                f"outside it (first: {column.filter(bad)[0]!r})",
                hint="drop or repair those rows, or widen the EventSource constraint; nothing was written",
            )


def needed_columns(source: Any, views: Sequence[Any]) -> list[str]:
    """Source fields the views read (join keys, aggregated columns, filter fields) and time."""
    names: list[str] = [str(source.timestamp_field)]
    for view in views:
        fields: list[str] = [*view.join_keys, *view.columns]
        if view.filter is not None:
            fields.extend(sorted(view.filter.fields()))
        names.extend(f for f in fields if f not in names)
    return names


def load_history(
    files: Sequence[str], source: Any, views: Sequence[Any], start_ms: int, end_ms: int
) -> pl.DataFrame:
    """Rows with ``start <= e < end`` of every file, sorted by (event time, file, row).

    Every file is checked (schema, then values) before any is used, so a bad file
    stops the backfill before it writes anything.
    """
    for path in files:
        check_file_schema(path, source)
    needed = needed_columns(source, views)
    frames = [
        _read_file(path, source, needed, start_ms, end_ms, i) for i, path in enumerate(files)
    ]
    history = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    if history.height < 2:
        return history
    # A stable sort keeps file order, then row order, among equal event times. numpy's
    # stable argsort plus one gather is several times faster than polars' order-keeping
    # frame sort, and history is usually sorted already (then nothing moves at all).
    event_ts = history.get_column("__e").to_numpy()
    if bool(np.all(event_ts[1:] >= event_ts[:-1])):
        return history
    return history[np.argsort(event_ts, kind="stable")]


def _numeric_column(series: pl.Series, kind: str) -> np.ndarray[Any, Any]:
    """The decoder's dtypes for non-string kinds: int64, float64, bool."""
    if kind == "int":
        return series.cast(pl.Int64).to_numpy()
    if kind == "float":
        return series.cast(pl.Float64).to_numpy()
    return series.cast(pl.Boolean).to_numpy()


def _factorize_strings(series: pl.Series) -> tuple[pl.Series, npt.NDArray[np.int64]]:
    """``(distinct values in first-seen order, code per row)`` of a null-free string column."""
    distinct = series.unique(maintain_order=True)
    # Enum categories keep the given order, so physical code i names distinct[i].
    codes = series.cast(pl.Enum(distinct)).to_physical().to_numpy().astype(np.int64)
    return distinct, codes


def routed_columns(views: Sequence[Any], factorized: Mapping[str, Any]) -> set[str]:
    """Source columns ``route`` reads from a batch when ``factorized`` keys are given:
    filter fields, aggregated columns and the join keys of views without a factorized key."""
    names: set[str] = set()
    for view in views:
        names.update(view.columns)
        if view.filter is not None:
            names.update(view.filter.fields())
        if len(view.join_keys) != 1 or view.join_keys[0] not in factorized:
            names.update(view.join_keys)
    return names


def history_batches(
    history: pl.DataFrame,
    source: Any,
    topic: str,
    first_row: int,
    chunk_rows: int,
    columns: Collection[str] | None = None,
) -> Iterator[DecodedBatch]:
    """DecodedBatch objects for rows ``first_row ..`` of the sorted history.

    ``columns`` limits the batch columns to those routing reads (default: every source
    field in ``history``). String columns become object arrays like the decoder's, but
    each is factorized once over the whole history and gathered per chunk from its
    distinct values: converting every chunk's strings to Python objects cost more
    than the rest of the routing.
    """
    kinds = {str(k): _kind(v) for k, v in source.schema.items()}
    wanted = [c for c in history.columns if c in kinds and (columns is None or c in columns)]
    strings: dict[str, tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]] = {}
    numbers: dict[str, np.ndarray[Any, Any]] = {}
    for name in wanted:
        series = history.get_column(name)
        if kinds[name] == "string":
            distinct, codes = _factorize_strings(series)
            values = np.empty(len(distinct), dtype=object)
            values[:] = distinct.to_list()
            strings[name] = (values, codes)
        else:
            numbers[name] = _numeric_column(series, kinds[name])
    all_ts: npt.NDArray[np.int64] = history.get_column("__e").to_numpy().astype(np.int64)
    for begin in range(first_row, history.height, chunk_rows):
        end = min(begin + chunk_rows, history.height)
        event_ts = all_ts[begin:end]
        batch_columns: dict[str, np.ndarray[Any, Any]] = {
            name: values[codes[begin:end]] for name, (values, codes) in strings.items()
        }
        batch_columns.update({name: array[begin:end] for name, array in numbers.items()})
        yield DecodedBatch(
            topic=topic,
            partition=HISTORY_PARTITION,
            first_offset=begin,
            last_offset=end - 1,
            # Rows are sorted by event time: the last one is the largest so far. History
            # is never decoded against a watermark, so the maximum alone is kept.
            top_ts_after=(int(event_ts[-1]),),
            offsets=np.arange(begin, end, dtype=np.int64),
            event_ts=event_ts,
            columns={c: batch_columns[c] for c in wanted},
            dead_letters=(),
        )


def factorize_key_columns(
    history: pl.DataFrame, views: Sequence[Any]
) -> dict[str, tuple[list[bytes], npt.NDArray[np.int64]]]:
    """Distinct values and a code per history row of every string join-key column of a
    single-join-key view: one hash pass over the whole history instead of one per chunk."""
    out: dict[str, tuple[list[bytes], npt.NDArray[np.int64]]] = {}
    for view in views:
        if len(view.join_keys) != 1 or view.join_keys[0] in out:
            continue
        name = view.join_keys[0]
        series = history.get_column(name)
        if series.dtype != pl.String or series.null_count():
            continue
        distinct, codes = _factorize_strings(series)
        out[name] = (encode_entity_keys([distinct.to_list()]), codes)
    return out


def _chunk_codes(
    factorized: Mapping[str, tuple[list[bytes], npt.NDArray[np.int64]]], begin: int, n: int
) -> dict[str, tuple[list[bytes], npt.NDArray[np.int64]]]:
    """The keys named by rows ``begin .. begin + n`` and those rows' codes into them."""
    out: dict[str, tuple[list[bytes], npt.NDArray[np.int64]]] = {}
    for name, (keys, codes) in factorized.items():
        chunk = codes[begin : begin + n]
        used = np.flatnonzero(np.bincount(chunk, minlength=len(keys)))
        remap = np.zeros(len(keys), dtype=np.int64)
        remap[used] = np.arange(len(used), dtype=np.int64)
        out[name] = ([keys[i] for i in used.tolist()], remap[chunk])
    return out


# ----------------------------------------------------------------------------- run


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


def _check_runs(
    store: RocksDBStore, views: Sequence[Any], record: bytes
) -> None:
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
                appliers[shard].apply(
                    shard_batches, extra_puts=final if last else runs, publish=False
                )
                shard_batches.clear()
            # Log files are written while the next rows are routed: pyarrow's Parquet
            # writer releases the GIL, so the two overlap on a second core.
            publishing = publisher.submit(publish_logs)
            if on_progress is not None:
                for end in pending_ends:
                    on_progress(end, total)
            pending_ends.clear()

        batches_of = history_batches(
            history, source, topic, first_row, chunk_rows, routed_columns(views, factorized)
        )
        for decoded in batches_of:
            if max_batches is not None and batches >= max_batches:
                complete = False
                break
            last = decoded.last_offset == total - 1
            hint = _chunk_codes(factorized, decoded.first_offset, len(decoded.offsets))
            for _, shard_batch in route(decoded, views, target.shards, factorized=hint):
                pending[shard_batch.shard].append(shard_batch)
            batches += 1
            done = decoded.last_offset + 1
            pending_ends.append(done)
            if last or len(pending_ends) >= per_commit or (
                max_batches is not None and batches >= max_batches
            ):
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

"""The Parquet feature log: one row per applied event of a feature view.

The streaming dataflow and backfill append the applied events of each view to a
``ParquetLogWriter`` and publish rolling files atomically; training sets and the
consistency check read them back with ``read_log``, which deduplicates replays
on ``(partition, offset)``. Layout, schema and rules: ``docs/parquet-log.md``.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.exceptions import StreamfeatError

EVENT_TIME = "event_time"
PARTITION = "partition"
OFFSET = "offset"
TILE_START = "tile_start"
FIXED_COLUMNS: tuple[str, ...] = (EVENT_TIME, PARTITION, OFFSET, TILE_START)
VALUE_PREFIX = "value__"
# Decoded values (strings stay strings) of the columns a view's sketch aggregations read.
RAW_PREFIX = "raw__"
#: Arrow type of a raw column, by schema field type.
RAW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
DAY_MS = 86_400_000
TMP_SUFFIX = ".tmp"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_HEX = re.compile(r"^[0-9a-f]+\Z")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


class ParquetLogError(StreamfeatError):
    """Base class of Parquet log errors."""


class ParquetLogWriteError(ParquetLogError):
    """A log file could not be written or published; the writer keeps its buffer."""


class ParquetLogReadError(ParquetLogError):
    """A published log file could not be read (corrupt, or with an unexpected schema)."""


class ParquetLogInputError(ParquetLogError, ValueError):
    """An argument or appended batch does not match the log's schema."""


def value_column(column: str) -> str:
    """Name of the log column holding the values of aggregated source column ``column``."""
    return VALUE_PREFIX + column


def raw_column(column: str) -> str:
    """Name of the log column holding the decoded values of source column ``column``."""
    return RAW_PREFIX + column


def log_schema(
    join_keys: Sequence[str],
    columns: Sequence[str],
    raw_columns: Mapping[str, str] | None = None,
) -> pa.Schema:
    """The Arrow schema of every log file of a view with these join keys and columns;
    ``raw_columns`` maps each column read by a sketch aggregation to its schema type
    (``string``, ``int``, ``float``, ``bool``)."""
    fields = [pa.field(k, pa.string(), nullable=False) for k in join_keys]
    fields += [
        pa.field(EVENT_TIME, pa.int64(), nullable=False),
        pa.field(PARTITION, pa.int32(), nullable=False),
        pa.field(OFFSET, pa.int64(), nullable=False),
        pa.field(TILE_START, pa.int64(), nullable=False),
    ]
    fields += [pa.field(value_column(c), pa.float64(), nullable=False) for c in columns]
    fields += [pa.field(raw_column(c), RAW_TYPES[kind], nullable=False) for c, kind in (raw_columns or {}).items()]
    return pa.schema(fields)


def write_options(join_keys: Sequence[str]) -> dict[str, Any]:
    """``pq.write_table`` options of log files (docs/parquet-log.md, "Encoding").

    LZ4 instead of the default Snappy, dictionary encoding only for the join keys
    (the other columns are nearly unique per row) and delta encoding for the integer
    columns, which grow steadily within a file: about 3x faster to write, faster to
    read and smaller on disk. Encodings and codecs are lossless, so readers get
    exactly the values written.
    """
    delta = {c: "DELTA_BINARY_PACKED" for c in FIXED_COLUMNS}
    return {"compression": "lz4", "use_dictionary": list(join_keys), "column_encoding": delta}


def resolve_root(root: str, filesystem: Any | None = None) -> tuple[Any, str]:
    """Return ``(pyarrow filesystem, base path)`` for a local path or a filesystem URI."""
    if filesystem is not None:
        return filesystem, root.rstrip("/") or "/"
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    import os

    return pafs.LocalFileSystem(), os.path.abspath(root)


def _check_name(kind: str, value: str, pattern: re.Pattern[str], expected: str) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ParquetLogInputError(
            f"Parquet log: {kind}: expected {expected}, got {value!r}.",
            hint=f"Use a {kind} made of letters, digits, '_', '.' or '-' only.",
        )


def view_path(base: str, view_name: str) -> str:
    """Directory holding every fingerprint of one view."""
    return f"{base}/view={view_name}"


@dataclass(frozen=True)
class LogCut:
    """Rows taken out of a writer's buffer for one publish (:meth:`ParquetLogWriter.cut`):
    tables put back after failed writes, then the checked columns of each append (turned
    into Arrow by :meth:`ParquetLogWriter.write_cut`, off the appending thread)."""

    tables: tuple[pa.Table, ...]
    appended: tuple[list[Any], ...]
    rows: int


@dataclass(frozen=True)
class PublishedFile:
    """What one ``publish()`` made visible.

    ``max_offsets`` maps each source partition to the highest offset now published;
    the caller records it as the log offset in the same WriteBatch as state.
    """

    paths: tuple[str, ...]
    rows: int
    max_offsets: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ParquetLogInputError(f"PublishedFile: field 'rows': expected >= 0, got {self.rows}.")


class ParquetLogWriter:
    """Buffers applied events of one view and publishes them as Parquet files.

    Not thread-safe: one writer per (view, shard/worker), identified by ``writer_id``.
    """

    def __init__(
        self,
        root: str,
        view_name: str,
        fingerprint_hex: str,
        join_keys: Sequence[str],
        columns: Sequence[str],
        writer_id: str,
        max_rows: int = 100_000,
        max_age_s: float = 60.0,
        filesystem: Any | None = None,
        raw_columns: Mapping[str, str] | None = None,
    ) -> None:
        _check_name("view name", view_name, _SAFE_NAME, "a file-name-safe view name")
        _check_name("writer id", writer_id, _SAFE_NAME, "a file-name-safe writer id")
        _check_name("fingerprint", fingerprint_hex, _HEX, "lowercase hex digits")
        if not join_keys:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{view_name}': field 'join_keys': expected at least one join key, got none."
            )
        reserved = set(FIXED_COLUMNS)
        clash = [k for k in join_keys if k in reserved or k.startswith(VALUE_PREFIX) or k.startswith(RAW_PREFIX)]
        if clash:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{view_name}': field 'join_keys': {clash} collide with "
                f"log columns {list(FIXED_COLUMNS)} or the '{VALUE_PREFIX}' / "
                f"'{RAW_PREFIX}' prefixes.",
                hint="Rename the entity join keys.",
            )
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{view_name}': field 'max_rows': expected int >= 1, got {max_rows!r}."
            )
        if not max_age_s > 0:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{view_name}': field 'max_age_s': expected > 0, got {max_age_s!r}."
            )
        self._fs, self._base = resolve_root(root, filesystem)
        self.view_name = view_name
        self.fingerprint_hex = fingerprint_hex
        self.join_keys = tuple(join_keys)
        self.columns = tuple(columns)
        self.raw_columns = dict(raw_columns or {})
        self.writer_id = writer_id
        self.max_rows = max_rows
        self.max_age_s = float(max_age_s)
        self.schema = log_schema(self.join_keys, self.columns, self.raw_columns)
        self._write_options = write_options(self.join_keys)
        self._chunks: list[pa.Table] = []  # cuts put back after a failed write
        self._appended: list[list[Any]] = []  # per append: one checked column per field
        self._rows = 0
        self._first_append: float | None = None

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def append(self, rows: Mapping[str, Any], now: float | None = None) -> None:
        """Buffer a batch given as columns (numpy arrays or sequences) of equal length.

        ``now`` is a ``time.monotonic()`` reading (taken if omitted); it starts the
        age clock of ``should_roll`` when the buffer was empty.
        """
        expected = self.schema.names
        missing = [c for c in expected if c not in rows]
        extra = [c for c in rows if c not in expected]
        if missing or extra:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{self.view_name}': append: expected columns {expected}, "
                f"missing {missing}, unexpected {extra}.",
                hint="Pass one array per join key, event_time, partition, offset, tile_start and value__<column>.",
            )
        lengths = {c: len(rows[c]) for c in expected}
        if len(set(lengths.values())) > 1:
            raise ParquetLogInputError(
                f"ParquetLogWriter '{self.view_name}': append: columns have different lengths {lengths}."
            )
        n = lengths[expected[0]]
        if n == 0:
            return
        # Columns are checked here but converted to Arrow only at ``cut``: streaming
        # appends a few dozen rows per batch, and building a table per append cost
        # ~140 us each, a third of the worker's time at 10k events/s.
        prepared: list[Any] = []
        for f in self.schema:
            data = rows[f.name]
            try:
                if isinstance(data, pa.Array) and data.type == f.type and data.null_count == 0:
                    # Already an Arrow column of the log's type (the applier builds join-key
                    # columns from its distinct keys): no per-row conversion.
                    column: Any = data
                elif pa.types.is_string(f.type):
                    column = pa.array(np.asarray(data).astype(str, copy=False), type=pa.string())
                else:
                    np_data = np.asarray(data)
                    if pa.types.is_boolean(f.type):
                        if np_data.dtype.kind != "b":
                            raise TypeError(f"expected a bool array, got dtype {np_data.dtype}")
                    elif f.type != pa.float64() and np_data.dtype.kind not in "iu":
                        raise TypeError(f"expected an integer array, got dtype {np_data.dtype}")
                    column = np_data.astype(f.type.to_pandas_dtype(), copy=False)
            except (TypeError, ValueError, pa.ArrowException) as exc:
                raise ParquetLogInputError(
                    f"ParquetLogWriter '{self.view_name}': append: column '{f.name}': expected {f.type}: {exc}"
                ) from exc
            prepared.append(column)
        self._appended.append(prepared)
        self._rows += n
        if self._first_append is None:
            self._first_append = time.monotonic() if now is None else now

    def should_roll(self, now: float | None = None) -> bool:
        """True when the buffer holds ``max_rows`` rows or its oldest row is ``max_age_s`` old."""
        if self._rows == 0:
            return False
        if self._rows >= self.max_rows:
            return True
        now = time.monotonic() if now is None else now
        first = self._first_append if self._first_append is not None else now
        return now - first >= self.max_age_s

    def publish(self) -> PublishedFile | None:
        """Write the buffer as one file per UTC date, atomically; ``None`` if empty.

        Every file is first written as ``<name>.tmp`` and only then moved to its
        final name. On failure the .tmp files are removed, the buffer is kept and
        ``ParquetLogWriteError`` names the path; a retry may publish rows that an
        earlier attempt had already moved into place, which readers deduplicate.
        """
        cut = self.cut()
        if cut is None:
            return None
        try:
            return self.write_cut(cut)
        except ParquetLogWriteError:
            self.restore(cut)
            raise

    def cut(self) -> LogCut | None:
        """Take every buffered row out of the buffer (``None`` if empty) for :meth:`write_cut`.

        Split from writing so the file writes can run on another thread while new rows
        are appended: ``write_cut`` touches only the cut and the filesystem.
        """
        if self._rows == 0:
            return None
        cut = LogCut(tuple(self._chunks), tuple(self._appended), self._rows)
        self._chunks = []
        self._appended = []
        self._rows = 0
        self._first_append = None
        return cut

    def _cut_table(self, cut: LogCut) -> pa.Table:
        """One table of a cut: one concatenation per column of its appends."""
        if not cut.appended:
            return pa.concat_tables(cut.tables)
        arrays: list[pa.Array] = []
        for i, field_ in enumerate(self.schema):
            parts = [columns[i] for columns in cut.appended]
            if isinstance(parts[0], np.ndarray) and all(isinstance(p, np.ndarray) for p in parts):
                arrays.append(pa.array(np.concatenate(parts), type=field_.type))
            else:
                arrays.append(pa.concat_arrays([_as_arrow(p, field_.type) for p in parts]))
        appended = pa.Table.from_arrays(arrays, schema=self.schema)
        return pa.concat_tables([*cut.tables, appended]) if cut.tables else appended

    def restore(self, cut: LogCut) -> None:
        """Put a cut whose write failed back in front of the buffer (the next roll retries it)."""
        self._chunks.insert(0, self._cut_table(cut))
        self._rows += cut.rows
        if self._first_append is None:
            self._first_append = time.monotonic()

    def write_cut(self, cut: LogCut) -> PublishedFile:
        """Publish a cut as one file per UTC date (see :meth:`publish`); thread-safe."""
        table = self._cut_table(cut).combine_chunks()
        event_time = table.column(EVENT_TIME).to_numpy()
        offsets = table.column(OFFSET).to_numpy()
        partitions = table.column(PARTITION).to_numpy()
        days = event_time // DAY_MS
        staged: list[tuple[str, str]] = []
        current = ""
        try:
            for day in np.unique(days):
                idx = np.flatnonzero(days == day)
                date = str(np.datetime64(int(day), "D"))
                directory = f"{view_path(self._base, self.view_name)}/fp={self.fingerprint_hex}/date={date}"
                first = int(offsets[idx].min())
                name = f"part-{self.writer_id}-{first}-{uuid.uuid4().hex[:8]}.parquet"
                final = f"{directory}/{name}"
                current = final + TMP_SUFFIX
                self._fs.create_dir(directory, recursive=True)
                staged.append((current, final))
                # One day's rows are usually one contiguous run (rows arrive in time order).
                contiguous = int(idx[-1]) - int(idx[0]) + 1 == len(idx)
                part = table.slice(int(idx[0]), len(idx)) if contiguous else table.take(idx)
                pq.write_table(part, current, filesystem=self._fs, **self._write_options)
        except (OSError, pa.ArrowException) as exc:
            self._remove(tmp for tmp, _ in staged)
            raise ParquetLogWriteError(
                f"Parquet log of view '{self.view_name}': could not write '{current}': {exc}",
                hint="Check free space and permissions of the log root; the rows stay "
                "buffered and the next publish retries them.",
            ) from exc
        published: list[str] = []
        for i, (tmp, final) in enumerate(staged):
            try:
                self._fs.move(tmp, final)
            except (OSError, pa.ArrowException) as exc:
                self._remove(t for t, _ in staged[i:])
                raise ParquetLogWriteError(
                    f"Parquet log of view '{self.view_name}': could not publish '{final}': {exc}",
                    hint="The rows stay buffered and the next publish retries them; "
                    "readers deduplicate rows published twice.",
                ) from exc
            published.append(final)
        order = np.lexsort((offsets, partitions))
        last_of_partition = np.r_[partitions[order][1:] != partitions[order][:-1], True]
        max_offsets = {
            int(p): int(o)
            for p, o in zip(partitions[order][last_of_partition], offsets[order][last_of_partition], strict=True)
        }
        return PublishedFile(tuple(published), cut.rows, max_offsets)

    def _remove(self, paths: Any) -> None:
        for path in paths:
            # Already gone or never created: nothing is visible either way.
            with contextlib.suppress(OSError, pa.ArrowException):
                self._fs.delete_file(path)


def _as_arrow(column: Any, type_: pa.DataType) -> pa.Array:
    return column if isinstance(column, pa.Array) else pa.array(column, type=type_)


def _date_of(ms: int) -> str:
    return str(np.datetime64(ms // DAY_MS, "D"))


def list_log_files(
    root: str,
    view_name: str,
    fingerprint_hex: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    filesystem: Any | None = None,
) -> tuple[Any, list[str]]:
    """Return ``(filesystem, sorted published file paths)`` of a view, pruned by date.

    With ``fingerprint_hex=None`` the view must have exactly one fingerprint in the
    log; mixing definitions would mix events of different filters or columns.
    """
    _check_name("view name", view_name, _SAFE_NAME, "a file-name-safe view name")
    fs, base = resolve_root(root, filesystem)
    vdir = view_path(base, view_name)
    if fs.get_file_info(vdir).type == pafs.FileType.NotFound:
        return fs, []
    infos = fs.get_file_info(pafs.FileSelector(vdir, recursive=True))
    lo_date = _date_of(start_ms) if start_ms is not None else None
    hi_date = _date_of(end_ms) if end_ms is not None else None
    by_fp: dict[str, list[str]] = {}
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue  # *.tmp files are unpublished by definition
        parts = info.path[len(vdir) :].strip("/").split("/")
        if len(parts) != 3 or not parts[0].startswith("fp=") or not parts[1].startswith("date="):
            continue
        fp, date = parts[0][3:], parts[1][5:]
        if not _DATE.match(date):
            continue
        if (lo_date is not None and date < lo_date) or (hi_date is not None and date > hi_date):
            continue
        by_fp.setdefault(fp, []).append(info.path)
    if fingerprint_hex is None:
        if len(by_fp) > 1:
            raise ParquetLogReadError(
                f"Parquet log of view '{view_name}' under '{vdir}' holds several "
                f"fingerprints {sorted(by_fp)}; expected one.",
                hint="Pass fingerprint_hex (the view's current fingerprint_hex).",
            )
        paths = next(iter(by_fp.values()), [])
    else:
        paths = by_fp.get(fingerprint_hex, [])
    return fs, sorted(paths)


def _schema_columns(names: Sequence[str], path: str) -> tuple[list[str], list[str]]:
    missing = [c for c in FIXED_COLUMNS if c not in names]
    if missing:
        raise ParquetLogReadError(
            f"Parquet log file '{path}' lacks columns {missing}; got {list(names)}.",
            hint="The file was not written by ParquetLogWriter; move it out of the log root.",
        )
    keys = [c for c in names if _is_join_key(c)]
    values = [c for c in names if c.startswith(VALUE_PREFIX)]
    return keys, values


def _read_one(fs: Any, path: str) -> pa.Table:
    try:
        return pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise ParquetLogReadError(
            f"Parquet log file '{path}' cannot be read: {exc}",
            hint="The file is corrupt; delete it and re-run backfill for its date if needed.",
        ) from exc


def _find_culprit(fs: Any, paths: Sequence[str], exc: Exception) -> ParquetLogReadError:
    """After a failed scan, name the file that caused it."""
    first_schema: pa.Schema | None = None
    for path in paths:
        table = _read_one(fs, path)  # raises naming a corrupt file
        if first_schema is None:
            first_schema = table.schema
        elif not table.schema.equals(first_schema):
            return ParquetLogReadError(
                f"Parquet log file '{path}' has schema {table.schema.names}, expected "
                f"{first_schema.names} like '{paths[0]}'.",
                hint="Files of one fingerprint must share a schema; remove the stray file.",
            )
    return ParquetLogReadError(f"Parquet log files of '{paths[0].rsplit('/', 3)[0]}' cannot be scanned: {exc}")


def read_log(
    root: str,
    view_name: str,
    fingerprint_hex: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    filesystem: Any | None = None,
    entities: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame:
    """Every published row of a view with ``start_ms <= event_time <= end_ms``.

    Rows are deduplicated on ``(partition, offset)`` (first file in path order wins)
    and sorted by ``(join keys, event_time, partition, offset)``. With no file the
    result is empty and has only the fixed columns. ``entities`` (join key -> the
    values wanted) keeps only rows whose every key is among its values, filtered
    during the scan: serving's historical reads need a few entities of a large log.
    """
    fs, paths = list_log_files(root, view_name, fingerprint_hex, start_ms, end_ms, filesystem)
    if not paths:
        return pl.DataFrame(
            schema={
                EVENT_TIME: pl.Int64,
                PARTITION: pl.Int32,
                OFFSET: pl.Int64,
                TILE_START: pl.Int64,
            }
        )
    predicate = pl.lit(True)
    if start_ms is not None:
        predicate = predicate & (pl.col(EVENT_TIME) >= start_ms)
    if end_ms is not None:
        predicate = predicate & (pl.col(EVENT_TIME) <= end_ms)
    for key, wanted in (entities or {}).items():
        predicate = predicate & pl.col(key).is_in(list(wanted))
    df: pl.DataFrame
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            # One lazy scan: polars reads files in parallel and pushes the time filter down.
            df = pl.scan_parquet(paths, glob=False).filter(predicate).collect()
        except Exception as exc:  # polars raises several unrelated types; we re-diagnose
            raise _find_culprit(fs, paths, exc) from exc
    else:
        tables = [_read_one(fs, p) for p in paths]
        for p, t in zip(paths, tables, strict=True):
            if not t.schema.equals(tables[0].schema):
                raise _find_culprit(fs, paths, ValueError(f"schema mismatch at {p}"))
        df = pl.DataFrame(pl.from_arrow(pa.concat_tables(tables))).filter(predicate)
    keys, _ = _schema_columns(df.columns, paths[0])
    # One int64 per position hashes much faster than a (partition, offset) struct.
    position = pl.col(PARTITION).cast(pl.Int64) * (1 << 40) + pl.col(OFFSET)
    df = df.filter(position.is_first_distinct())
    return df[_log_order(df, keys)]


def first_event_time(root: str, view_name: str, fingerprint_hex: str, filesystem: Any | None = None) -> int | None:
    """Smallest event time in the view's log (None without a published file).

    Only the files of the earliest ``date=`` directory are read (one column).
    """
    fs, paths = list_log_files(root, view_name, fingerprint_hex, None, None, filesystem)
    if not paths:
        return None
    first_date = min(p.rsplit("/", 2)[-2] for p in paths)
    firsts = [p for p in paths if p.rsplit("/", 2)[-2] == first_date]
    try:
        table = pa.concat_tables(pq.read_table(p, columns=[EVENT_TIME], filesystem=fs) for p in firsts)
    except (OSError, pa.ArrowException) as exc:
        raise _find_culprit(fs, firsts, exc) from exc
    if table.num_rows == 0:
        return None
    return int(pc.min(table.column(EVENT_TIME)).as_py())


def _log_order(df: pl.DataFrame, keys: Sequence[str]) -> pl.Series:
    """Row order sorting ``df`` by ``(join keys, event_time, partition, offset)``.

    Sorting strings is the expensive part, so each join key is replaced by its rank
    among the key's sorted distinct values (a hash lookup per row; same order, as
    polars orders strings and ranks by the same bytes) and, when it fits, the ranks
    and event time are packed into one int64 key; positions break the remaining ties.
    """
    if df.height < 2:
        return pl.Series(np.arange(df.height, dtype=np.uint32))
    if any(df.schema[k] != pl.String for k in keys):  # not written by ParquetLogWriter
        return df.select(pl.arg_sort_by([*keys, EVENT_TIME, PARTITION, OFFSET])).to_series()
    time = df.get_column(EVENT_TIME)
    t_lo = int(time.min())  # type: ignore[arg-type]
    span = int(time.max()) - t_lo + 1  # type: ignore[arg-type]
    ranks: list[pl.Series] = []
    capacity = span
    for key in keys:
        column = df.get_column(key)
        distinct = column.unique().sort()
        ranks.append(column.cast(pl.Enum(distinct)).to_physical().cast(pl.Int64))
        capacity *= len(distinct)
    position = df.get_column(PARTITION).cast(pl.Int64) * (1 << 40) + df.get_column(OFFSET)
    if capacity < 2**62:
        packed = time - t_lo
        multiplier = span
        for rank in reversed(ranks):
            packed = packed + rank * multiplier
            multiplier *= int(rank.max()) + 1  # type: ignore[arg-type]
        sort_by = pl.DataFrame({"key": packed, "position": position})
    else:
        sort_by = pl.DataFrame({**{f"r{i}": r for i, r in enumerate(ranks)}, "t": time, "p": position})
    return sort_by.select(pl.arg_sort_by(sort_by.columns)).to_series()


def _is_join_key(column: str) -> bool:
    return column not in FIXED_COLUMNS and not column.startswith(VALUE_PREFIX) and not column.startswith(RAW_PREFIX)

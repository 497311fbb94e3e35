"""The Parquet log writer: buffers the applied events of one view and publishes rolling
files atomically (one file per UTC date, written as ``.tmp`` then moved into place).

The streaming dataflow and backfill append to a ``ParquetLogWriter``; ``cut`` and
``write_cut`` split a roll so the files can be written off the appending thread.
Format and names: ``engine.io.log_format``; reading back: ``engine.io.log_reader``.
"""

import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.io.log_format import (
    DAY_MS,
    EVENT_TIME,
    FIXED_COLUMNS,
    HEX_NAME,
    OFFSET,
    PARTITION,
    RAW_PREFIX,
    SAFE_NAME,
    TMP_SUFFIX,
    VALUE_PREFIX,
    ParquetLogInputError,
    ParquetLogWriteError,
    check_name,
    date_path,
    log_schema,
    resolve_root,
    write_options,
)


@dataclass(frozen=True)
class LogCut:
    """Rows taken out of a writer's buffer for one publish (:meth:`ParquetLogWriter.cut`):
    tables put back after failed writes, then the checked columns of each append (turned
    into Arrow by :meth:`ParquetLogWriter.write_cut`, off the appending thread)."""

    tables: tuple[pa.Table, ...]
    appended: tuple[list[object], ...]
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
        filesystem: pafs.FileSystem | None = None,
        raw_columns: Mapping[str, str] | None = None,
    ) -> None:
        check_name("view name", view_name, SAFE_NAME, "a file-name-safe view name")
        check_name("writer id", writer_id, SAFE_NAME, "a file-name-safe writer id")
        check_name("fingerprint", fingerprint_hex, HEX_NAME, "lowercase hex digits")
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
        self._appended: list[list[object]] = []  # per append: one checked column per field
        self._rows = 0
        self._first_append: float | None = None

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def append(self, rows: Mapping[str, Sized], now: float | None = None) -> None:
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
        prepared: list[object] = []
        for f in self.schema:
            data = rows[f.name]
            try:
                if isinstance(data, pa.Array) and data.type == f.type and data.null_count == 0:
                    # Already an Arrow column of the log's type (the applier builds join-key
                    # columns from its distinct keys): no per-row conversion.
                    column: object = data
                elif pa.types.is_string(f.type):
                    column = _string_column(data)
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
            numpy_parts = [p for p in parts if isinstance(p, np.ndarray)]
            if len(numpy_parts) == len(parts):
                arrays.append(pa.array(np.concatenate(numpy_parts), type=field_.type))
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
                directory = date_path(self._base, self.view_name, self.fingerprint_hex, date)
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
        return PublishedFile(tuple(published), cut.rows, _max_offset_per_partition(partitions, offsets))

    def _remove(self, paths: Iterable[str]) -> None:
        for path in paths:
            # Already gone or never created: nothing is visible either way.
            with contextlib.suppress(OSError, pa.ArrowException):
                self._fs.delete_file(path)


def _max_offset_per_partition(partitions: np.ndarray, offsets: np.ndarray) -> dict[int, int]:
    """Highest offset of each source partition present (Kafka partitions are small ints
    >= 0): one pass, about 9x faster than sorting a 200k-row cut by (partition, offset)."""
    top = np.full(int(partitions.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(top, partitions, offsets)
    present = np.flatnonzero(np.bincount(partitions))
    return {int(p): int(top[p]) for p in present.tolist()}


def _string_column(data: object) -> pa.Array:
    """``data`` as an Arrow string column, each value as its ``str`` text.

    A column of Python strings (every join-key and raw string column the applier stages)
    converts directly, about 6x faster than through a numpy unicode array; anything else
    (ints of a multi-key view's join column, a None) takes the ``str()`` route, so the
    text logged is the same either way.
    """
    if isinstance(data, np.ndarray) and data.dtype.kind == "O":
        try:
            direct = pa.array(data, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass
        else:
            if direct.null_count == 0:
                return direct
    # Not numpy's astype(str): its fixed-width unicode drops trailing NUL characters, so a
    # join key "m\x00" would be logged as "m".
    return pa.array([str(value) for value in np.asarray(data, dtype=object).tolist()], type=pa.string())


def _as_arrow(column: object, type_: pa.DataType) -> pa.Array:
    return column if isinstance(column, pa.Array) else pa.array(column, type=type_)

"""History files of a Parquet backfill: find them, check their schema and their rows.

Files are read one row group at a time (``engine.offline.history_slices`` orders them).
Every file is checked (schema, then values: nulls, timestamps, non-finite floats, the
source's constraints) before any row is used, so a bad file stops the backfill before
it writes anything.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.definitions.filters import Expr
from engine.exact_doubles import MAX_EXACT_INTEGER
from engine.io.decoder import EventSourceLike
from engine.io.timestamps import parse_event_times
from engine.offline.exceptions import BackfillError, HistoryFileError
from engine.routing import RoutableView
from engine.state.keys import ENTITY_KEY_SEPARATOR
from engine.wording import counted


class HistoryView(RoutableView, Protocol):
    """What the history modules read of a view: routing's needs, and a filter naming its fields."""

    @property
    def filter(self) -> Expr | None: ...


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


def kind_name(value: object) -> str:
    """A schema kind or timestamp format as its text (enum members by their value)."""
    return str(getattr(value, "value", value))


def check_file_schema(path: str, source: EventSourceLike) -> None:
    """Raise :class:`HistoryFileError` naming ``path`` and the column if the file cannot be used."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise HistoryFileError(
            f"history file {path}: not a readable Parquet file: {exc}",
            hint="replace or remove the file; nothing was written",
        ) from None
    wanted: dict[str, tuple[str, str]] = {
        name: (kind_name(kind), f"{kind_name(kind)}") for name, kind in source.schema.items()
    }
    ts_field = str(source.timestamp_field)
    wanted[ts_field] = _TS_KINDS[kind_name(source.timestamp_format)]
    for name, (kind, expected) in wanted.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise HistoryFileError(
                f"history file {path}: column '{name}' is missing (expected {expected}); the file has {schema.names}",
                hint=f"every history file needs every field of source '{source.name}'; nothing was written",
            )
        got = schema.field(index).type
        if not _type_ok(kind, got):
            raise HistoryFileError(
                f"history file {path}: column '{name}': expected {expected}, got {got}",
                hint="cast the column when writing the file; nothing was written",
            )


def _event_times(frame: pl.DataFrame, field: str, fmt: str, path: str, first_row: int = 0) -> pl.Series:
    """Event times in ms, parsed exactly as the stream decoder parses them."""
    column = frame.get_column(field)
    parsed = parse_event_times(column.to_list() if fmt == "iso8601" else column.to_numpy(), fmt, field)
    if parsed.problems:
        rows = sorted(parsed.problems)
        _reason, detail = parsed.problems[rows[0]]
        raise HistoryFileError(
            f"history file {path}: row {first_row + rows[0]}: {detail} ({counted(len(rows), 'row')} like this)",
            hint="check the source's timestamp_format (docs/semantics.md sections 1 and 5), "
            "or drop or repair those rows; nothing was written",
        )
    return pl.Series(field, parsed.ts_ms, dtype=pl.Int64)


def row_group_count(path: str) -> int:
    """Row groups of a history file (the unit it is read and checked in)."""
    try:
        return int(pq.ParquetFile(path).metadata.num_row_groups)
    except (OSError, pa.ArrowException) as exc:
        raise HistoryFileError(
            f"history file {path}: not a readable Parquet file: {exc}",
            hint="replace or remove the file; nothing was written",
        ) from None


def read_row_group(path: str, row_group: int, needed: Sequence[str]) -> pl.DataFrame:
    """The ``needed`` columns of one row group, as polars reads a whole file."""
    try:
        return pl.DataFrame(pq.ParquetFile(path).read_row_group(row_group, columns=list(needed)))
    except Exception as exc:  # damaged pages raise several unrelated types
        raise HistoryFileError(
            f"history file {path}: could not be read: {exc}",
            hint="replace or remove the file; nothing was written",
        ) from None


def event_times(frame: pl.DataFrame, source: EventSourceLike, path: str, first_row: int = 0) -> pl.Series:
    """The rows' event times in ms; ``first_row`` numbers the rows in errors."""
    return _event_times(frame, str(source.timestamp_field), kind_name(source.timestamp_format), path, first_row)


def check_rows(
    frame: pl.DataFrame,
    source: EventSourceLike,
    needed: Sequence[str],
    path: str,
    first_row: int = 0,
    join_keys: Sequence[str] = (),
    exact_int_fields: Collection[str] = (),
) -> pl.Series:
    """Check the rows of ``frame`` (no nulls, parsable times, finite floats, constraints,
    string ``join_keys`` without the entity-key separator, ``exact_int_fields`` within
    +-2**53); returns their event times in ms."""
    for name in needed:
        nulls = frame.get_column(name).null_count()
        if nulls:
            raise HistoryFileError(
                f"history file {path}: column '{name}': expected no nulls, found {nulls}",
                hint="drop or repair those rows; nothing was written",
            )
    ts = event_times(frame, source, path, first_row)
    for name, kind in source.schema.items():
        if kind_name(kind) == "float" and name in needed:
            values = frame.get_column(name).cast(pl.Float64)
            if not bool(values.is_finite().all()):
                raise HistoryFileError(
                    f"history file {path}: column '{name}': expected finite floats, found NaN or infinity",
                    hint="drop or repair those rows; nothing was written",
                )
    _check_int64(frame, source, needed, path, first_row)
    _check_constraints(frame, source, needed, path)
    _check_join_keys(frame, join_keys, path, first_row)
    _check_exact_ints(frame, source, exact_int_fields, path, first_row)
    return ts


def _check_join_keys(frame: pl.DataFrame, join_keys: Sequence[str], path: str, first_row: int) -> None:
    """The stream refuses join-key values holding the separator of compound entity keys
    (``invalid_string``): two entities would become one. History is refused the same way."""
    separator = ENTITY_KEY_SEPARATOR.decode()
    for name in join_keys:
        column = frame.get_column(name)
        if column.dtype != pl.String:
            continue
        _refuse_rows(
            path,
            name,
            column,
            column.str.contains(separator, literal=True),
            first_row,
            lambda value: (
                f"join-key value {value!r} holds the character {separator!r}, which separates the "
                "values of a compound entity key"
            ),
            hint="drop or repair those rows; nothing was written",
        )


def _check_int64(
    frame: pl.DataFrame, source: EventSourceLike, needed: Sequence[str], path: str, first_row: int
) -> None:
    """An ``int`` field holds int64 values: the stream refuses a larger JSON int as
    ``wrong_type``. Only an unsigned 64-bit column can hold one; it is refused the same way
    (rather than failing in a cast)."""
    for name in needed:
        kind = source.schema.get(name)
        column = frame.get_column(name)
        if kind is None or kind_name(kind) != "int" or column.dtype != pl.UInt64:
            continue
        _refuse_rows(
            path,
            name,
            column,
            column > np.iinfo(np.int64).max,
            first_row,
            lambda value: f"{value} is beyond int64, the range of an int field",
            hint="store ids beyond int64 in a string field; nothing was written",
        )


def _check_exact_ints(
    frame: pl.DataFrame, source: EventSourceLike, fields: Collection[str], path: str, first_row: int
) -> None:
    """The stream refuses int values beyond +-2**53 in fields an aggregation reads as a double
    (``value_out_of_range``): they would be rounded. History is refused the same way."""
    for name in fields:
        if name not in frame.columns or kind_name(source.schema[name]) != "int":
            continue
        column = frame.get_column(name).cast(pl.Int64)
        _refuse_rows(
            path,
            name,
            column,
            (column > MAX_EXACT_INTEGER) | (column < -MAX_EXACT_INTEGER),
            first_row,
            lambda value: (
                f"{value} is beyond +-2**53, the largest integers a double holds exactly, and an "
                "aggregation reads this column as a double (sum, mean, min, max, last, stddev)"
            ),
            hint="declare the field a string if it is an id, or store it in smaller units; nothing was written",
        )


def _refuse_rows(
    path: str,
    name: str,
    column: pl.Series,
    bad: pl.Series,
    first_row: int,
    describe: Callable[[object], str],
    *,
    hint: str,
) -> None:
    """Raise :class:`HistoryFileError` naming the first ``bad`` row of ``column`` (``first_row``:
    the file row of the frame's first), ``describe``-ing its value, and how many rows are bad."""
    count = int(bad.sum())
    if count:
        row = first_row + int(bad.arg_true()[0])
        raise HistoryFileError(
            f"history file {path}: column '{name}': row {row}: {describe(column.filter(bad)[0])} "
            f"({counted(count, 'row')} like this)",
            hint=hint,
        )


def _check_constraints(frame: pl.DataFrame, source: EventSourceLike, needed: Sequence[str], path: str) -> None:
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
                f"history file {path}: column '{name}': expected {what}, found {counted(count, 'row')} "
                f"outside it (first: {column.filter(bad)[0]!r})",
                hint="drop or repair those rows, or widen the EventSource constraint; nothing was written",
            )


def needed_columns(source: EventSourceLike, views: Sequence[HistoryView]) -> list[str]:
    """Source fields the views read (join keys, aggregated columns, filter fields) and time."""
    names: list[str] = [str(source.timestamp_field)]
    for view in views:
        fields: list[str] = [*view.join_keys, *view.columns]
        if view.filter is not None:
            fields.extend(sorted(view.filter.fields()))
        names.extend(f for f in fields if f not in names)
    return names

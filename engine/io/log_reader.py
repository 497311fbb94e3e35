"""Reading the Parquet feature log back: published files of a view, pruned by date, and
their rows deduplicated on ``(partition, offset)`` in ``(join keys, event time, position)``
order (training sets, the consistency check, serving's history reads).
"""

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.io.log_format import (
    EVENT_TIME,
    FIXED_COLUMNS,
    OFFSET,
    PARTITION,
    SAFE_NAME,
    TILE_START,
    VALUE_PREFIX,
    ParquetLogReadError,
    check_name,
    date_of,
    file_date,
    fingerprint_paths,
    is_join_key,
    published_date,
    resolve_root,
    view_fingerprint_paths,
    view_path,
)
from engine.positions import PARTITION_STRIDE


def list_log_files(
    root: str,
    view_name: str,
    fingerprint_hex: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> tuple[pafs.FileSystem, list[str]]:
    """Return ``(filesystem, sorted published file paths)`` of a view, pruned by date.

    With ``fingerprint_hex`` the files are those of that fingerprint under every view
    name (``view=*/fp=<fingerprint_hex>``): a view renamed without changing its definition
    keeps its fingerprint, and what was logged under its earlier names is its log too.
    With ``fingerprint_hex=None`` only ``view_name``'s directory is read and it must hold
    exactly one fingerprint; mixing definitions would mix events of different filters or
    columns.
    """
    check_name("view name", view_name, SAFE_NAME, "a file-name-safe view name")
    fs, base = resolve_root(root, filesystem)
    if fingerprint_hex is None:
        by_fp = view_fingerprint_paths(fs, base, view_name)
        if len(by_fp) > 1:
            raise ParquetLogReadError(
                f"Parquet log of view '{view_name}' under '{view_path(base, view_name)}' holds several "
                f"fingerprints {sorted(by_fp)}; expected one.",
                hint="Pass fingerprint_hex (the view's current fingerprint_hex).",
            )
        directories = list(by_fp.values())
    else:
        directories = fingerprint_paths(fs, base, fingerprint_hex)
    lo_date = date_of(start_ms) if start_ms is not None else None
    hi_date = date_of(end_ms) if end_ms is not None else None
    paths: list[str] = []
    for directory in directories:
        for info in fs.get_file_info(pafs.FileSelector(directory, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            date = published_date(info.path[len(directory) :])
            if date is None:
                continue
            if (lo_date is not None and date < lo_date) or (hi_date is not None and date > hi_date):
                continue
            paths.append(info.path)
    return fs, sorted(paths)


def _schema_columns(names: Sequence[str], path: str) -> tuple[list[str], list[str]]:
    missing = [c for c in FIXED_COLUMNS if c not in names]
    if missing:
        raise ParquetLogReadError(
            f"Parquet log file '{path}' lacks columns {missing}; got {list(names)}.",
            hint="The file was not written by ParquetLogWriter; move it out of the log root.",
        )
    keys = [c for c in names if is_join_key(c)]
    values = [c for c in names if c.startswith(VALUE_PREFIX)]
    return keys, values


def _read_one(fs: pafs.FileSystem, path: str) -> pa.Table:
    try:
        return pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise ParquetLogReadError(
            f"Parquet log file '{path}' cannot be read: {exc}",
            hint="The file is corrupt; delete it and re-run backfill for its date if needed.",
        ) from exc


def _find_culprit(fs: pafs.FileSystem, paths: Sequence[str], exc: Exception) -> ParquetLogReadError:
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
    filesystem: pafs.FileSystem | None = None,
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
    position = pl.col(PARTITION).cast(pl.Int64) * PARTITION_STRIDE + pl.col(OFFSET)
    df = df.filter(position.is_first_distinct())
    return df[_log_order(df, keys)]


def first_event_time(
    root: str, view_name: str, fingerprint_hex: str, filesystem: pafs.FileSystem | None = None
) -> int | None:
    """Smallest event time in the view's log, under any of its names (None without a
    published file).

    Only the files of the earliest ``date=`` directory are read (one column).
    """
    fs, paths = list_log_files(root, view_name, fingerprint_hex, None, None, filesystem)
    if not paths:
        return None
    first_date = min(file_date(p) for p in paths)
    firsts = [p for p in paths if file_date(p) == first_date]
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
    position = df.get_column(PARTITION).cast(pl.Int64) * PARTITION_STRIDE + df.get_column(OFFSET)
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

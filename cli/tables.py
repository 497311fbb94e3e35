"""Table files the commands read and write (--spine, --entities, --out): Parquet, or CSV
by the file name's suffix. An output is checked before any work starts and written next
to its target, then renamed, so a failure never leaves half a file at --out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.exceptions import ConfigError

if TYPE_CHECKING:  # imported when a command runs, so `streamfeat --help` stays fast
    import polars as pl

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
OUTPUT_SUFFIXES = (*PARQUET_SUFFIXES, ".csv")


def read_table(path: Path, flag: str = "--spine", text_columns: Sequence[str] = ()) -> pl.DataFrame:
    """A Parquet (or .csv) file given by ``flag`` as a polars DataFrame; a ConfigError naming
    the flag when it is missing or unreadable. A CSV file's ``text_columns`` are read as
    text, never as numbers: ids such as "0123" keep their leading zeros."""
    import polars as pl

    if not path.is_file():
        raise ConfigError(
            f"{flag}: no file at {path}",
            hint="pass a Parquet (or .csv) file with the entity join keys and a timestamp column",
        )
    try:
        if path.suffix.lower() == ".csv":
            frame = pl.read_csv(path, try_parse_dates=True, schema_overrides=dict.fromkeys(text_columns, pl.String))
        else:
            frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several unrelated types for unreadable files
        raise ConfigError(
            f"{flag}: {path} could not be read: {exc}",
            hint="write the spine with polars/pandas .write_parquet()",
        ) from None
    if frame.height == 0:  # a header alone: no row to compute, and no value to type a column by
        raise ConfigError(f"{flag}: {path} has no rows", hint="pass a file with one row per entity and time")
    return frame


def check_output(path: Path, flag: str = "--out") -> None:
    """Refuses an output name without a known suffix, or whose directory cannot be made,
    before the command does its work."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"{flag}: expected a file name ending in .parquet (or .pq) or .csv, got {str(path)!r}",
            hint=f"e.g. {flag} {path.with_suffix('.parquet').name}",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{flag}: cannot create the directory {path.parent}: {exc.strerror or exc}",
            hint=f"pass {flag} in a writable directory",
        ) from None


def write_table(frame: pl.DataFrame, path: Path, flag: str = "--out") -> None:
    """Writes ``frame`` as Parquet, or as CSV for a ``.csv`` name (refused, naming the
    columns, when some hold lists, which CSV cannot)."""
    import polars as pl

    csv = path.suffix.lower() == ".csv"
    nested = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List | pl.Array | pl.Struct)]
    if csv and nested:
        raise ConfigError(
            f"{flag}: CSV cannot hold the list columns {', '.join(nested)}",
            hint=f"write Parquet instead: {flag} {path.with_suffix('.parquet').name}",
        )
    partial = path.with_name(f".{path.name}.partial")
    try:
        if csv:
            frame.write_csv(partial)
        else:
            frame.write_parquet(partial)
        partial.replace(path)
    except OSError as exc:  # polars raises the OS's error for a path it cannot write
        raise ConfigError(
            f"{flag}: cannot write {path}: {exc.strerror or exc}", hint=f"pass {flag} in a writable directory"
        ) from None
    finally:
        partial.unlink(missing_ok=True)

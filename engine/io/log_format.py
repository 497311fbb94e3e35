"""The Parquet feature log's format: column names, schema, file encoding, layout and errors.

One row per applied event of a feature view; files live under
``<root>/view=<name>/fp=<fingerprint>/date=<YYYY-MM-DD>/``. The writer
(``engine.io.parquet_log``) and the reader (``engine.io.log_reader``) both take every
name and directory from here. A view's log is the union of every ``view=*/fp=<its
fingerprint>`` directory: a renamed view keeps its fingerprint, state and log.
Layout, schema and rules: ``docs/parquet-log.md``.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

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

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
HEX_NAME = re.compile(r"^[0-9a-f]+\Z")
DATE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


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


def write_options(join_keys: Sequence[str]) -> dict[str, Any]:  # Any: pq.write_table's keywords, each its own type
    """``pq.write_table`` options of log files (docs/parquet-log.md, "Encoding").

    LZ4 instead of the default Snappy, dictionary encoding only for the join keys
    (the other columns are nearly unique per row) and delta encoding for the integer
    columns, which grow steadily within a file: about 3x faster to write, faster to
    read and smaller on disk. Encodings and codecs are lossless, so readers get
    exactly the values written.
    """
    delta = {c: "DELTA_BINARY_PACKED" for c in FIXED_COLUMNS}
    return {"compression": "lz4", "use_dictionary": list(join_keys), "column_encoding": delta}


def resolve_root(root: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(pyarrow filesystem, base path)`` for a local path or a filesystem URI."""
    if filesystem is not None:
        return filesystem, root.rstrip("/") or "/"
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    import os

    return pafs.LocalFileSystem(), os.path.abspath(root)


def check_name(kind: str, value: str, pattern: re.Pattern[str], expected: str) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ParquetLogInputError(
            f"Parquet log: {kind}: expected {expected}, got {value!r}.",
            hint=f"Use a {kind} made of letters, digits, '_', '.' or '-' only.",
        )


VIEW_DIR = "view="
FINGERPRINT_DIR = "fp="
DATE_DIR = "date="


def view_path(base: str, view_name: str) -> str:
    """Directory holding every fingerprint logged under one view name."""
    return f"{base}/{VIEW_DIR}{view_name}"


def date_path(base: str, view_name: str, fingerprint_hex: str, date: str) -> str:
    """Directory of one UTC date's files of a fingerprint, written under the view's current name."""
    return f"{view_path(base, view_name)}/{FINGERPRINT_DIR}{fingerprint_hex}/{DATE_DIR}{date}"


def fingerprint_paths(fs: pafs.FileSystem, base: str, fingerprint_hex: str) -> list[str]:
    """Every ``view=*/fp=<fingerprint_hex>`` directory under ``base``, sorted.

    The log of a fingerprint is read from all of them: a view renamed without changing
    its definition keeps its fingerprint (and its state), and the rows logged under its
    earlier names are its rows too. Two views of one repo never share a fingerprint
    (the repo refuses them, ``engine.definitions.repo.cross_validate``).
    """
    check_name("fingerprint", fingerprint_hex, HEX_NAME, "lowercase hex digits")
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    views = [
        info.path
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=False))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(VIEW_DIR)
    ]
    candidates = [f"{v}/{FINGERPRINT_DIR}{fingerprint_hex}" for v in sorted(views)]
    return [info.path for info in fs.get_file_info(candidates) if info.type == pafs.FileType.Directory]


#: Prefix of a fingerprint directory moved aside (:func:`retire_fingerprint`); readers,
#: which look for ``fp=`` directories, never read it.
RETIRED_DIR = "retired-"


def retire_fingerprint(
    root: str, fingerprint_hex: str, stamp_ms: int, filesystem: pafs.FileSystem | None = None
) -> list[str]:
    """Move every ``view=*/fp=<fingerprint_hex>`` directory aside, to
    ``view=*/retired-fp=<fingerprint_hex>-<stamp_ms>``, and return the new paths.

    A fingerprint applied again after it was removed starts from empty state (it joins its
    stream, docs/semantics.md section 8); its log from before holds events its new state
    and its new history do not, which a training set would count twice or out of place.
    Moved, not deleted: the rows stay there for whoever wants them."""
    fs, base = resolve_root(root, filesystem)
    moved = []
    for path in fingerprint_paths(fs, base, fingerprint_hex):
        parent, name = path.rsplit("/", 1)
        target = f"{parent}/{RETIRED_DIR}{name}-{stamp_ms}"
        fs.move(path, target)
        moved.append(target)
    return moved


def view_fingerprint_paths(fs: pafs.FileSystem, base: str, view_name: str) -> dict[str, str]:
    """The ``fp=*`` directories logged under one view name, by fingerprint."""
    vdir = view_path(base, view_name)
    if fs.get_file_info(vdir).type != pafs.FileType.Directory:
        return {}
    return {
        info.base_name[len(FINGERPRINT_DIR) :]: info.path
        for info in fs.get_file_info(pafs.FileSelector(vdir, recursive=False))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(FINGERPRINT_DIR)
    }


def published_date(relative: str) -> str | None:
    """The UTC date of a published file from its path relative to a fingerprint's
    directory (``date=<YYYY-MM-DD>/<file>.parquet``); None for anything else
    (``*.tmp`` files are unpublished by definition)."""
    parts = relative.strip("/").split("/")
    if len(parts) != 2 or not parts[1].endswith(".parquet") or not parts[0].startswith(DATE_DIR):
        return None
    date = parts[0][len(DATE_DIR) :]
    return date if DATE_NAME.match(date) else None


def file_date(path: str) -> str:
    """The ``date=`` directory name of a published file's path."""
    return path.rsplit("/", 2)[-2]


def date_of(ms: int) -> str:
    return str(np.datetime64(ms // DAY_MS, "D"))


def is_join_key(column: str) -> bool:
    return column not in FIXED_COLUMNS and not column.startswith(VALUE_PREFIX) and not column.startswith(RAW_PREFIX)

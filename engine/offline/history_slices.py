"""The history of a Parquet backfill in entity-hash slices, so memory stays bounded and
every entity's record is written once.

Views are grouped into **families** by their first join key column (a view keyed by
``(user_id, merchant_id)`` is in the ``user_id`` family: all rows of one pair share
their user). Each family replays every selected row once, in the order
``(bucket, event time, file, row)``, where ``bucket`` is a fixed hash of the row's
family key (:func:`entity_buckets`). Families follow each other, so a row's position
in family ``f`` is the rows of the families before ``f`` plus its index in that order
(docs/backfill.md). The positions of one entity's rows therefore keep the order
``(event time, file, row)``, the only order the time contract reads (ties at equal
event time), and they do not depend on the slice size.

A first pass reads the files one row group at a time, checks every row, and keeps one
sort key per row and family (8 bytes). Sorted, those keys cut each family's order into
slices of about ``slice_rows`` rows: a slice holds whole buckets (every row of its
entities), unless one bucket alone is larger, which is then cut by event time.
``engine.offline.history_spill`` writes each slice's rows to a file of its own, read
back one slice at a time.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.io.decoder import EventSourceLike
from engine.kernel.layout import double_read_columns
from engine.offline.exceptions import HistoryFileError
from engine.offline.history_files import (
    HistoryView,
    check_file_schema,
    check_rows,
    event_times,
    needed_columns,
    read_row_group,
    row_group_count,
)
from engine.state.keys import encode_entity_keys

#: Columns added to history frames: the parsed event time (ms), the file's index, and
#: the row's sort key within its family's order.
EVENT_MS = "__e"
FILE_INDEX = "__file"
ORDER_KEY = "__order"

#: A sort key is ``bucket << TIME_BITS | event time``: event times are at most 2**53 ms
#: (docs/backfill.md), so 9 bucket bits keep every key below 2**63.
TIME_BITS = 54
BUCKET_BITS = 9
BUCKETS = 1 << BUCKET_BITS
KEY_END = 1 << (TIME_BITS + BUCKET_BITS)

UInt64Array = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Family:
    """Views sharing their first join key column ``column``: one replay of the history."""

    column: str
    views: tuple[HistoryView, ...]


@dataclass(frozen=True)
class RowGroupSpan:
    """Row group ``row_group`` of file ``file`` holds selected rows."""

    file: int
    row_group: int


@dataclass(frozen=True)
class HistorySlice:
    """Rows of family ``family`` with sort keys in ``[lo, hi)``: ``rows`` of them, the
    first at position ``first_offset``."""

    family: int
    lo: int
    hi: int
    first_offset: int
    rows: int

    @property
    def end_offset(self) -> int:
        return self.first_offset + self.rows


@dataclass(frozen=True)
class HistoryIndex:
    """Every file checked, and each family's order cut into slices."""

    files: tuple[str, ...]
    needed: tuple[str, ...]
    start_ms: int
    end_ms: int
    families: tuple[Family, ...]
    spans: tuple[RowGroupSpan, ...]
    slices: tuple[HistorySlice, ...]
    rows: int  # selected history rows (each is replayed once per family)

    def __post_init__(self) -> None:
        if sum(s.rows for s in self.slices) != self.total:
            raise ValueError(f"HistoryIndex: slices hold {sum(s.rows for s in self.slices)} rows, not {self.total}")

    @property
    def total(self) -> int:
        """Positions of the whole replay: every selected row once per family."""
        return self.rows * len(self.families)


def families_of(views: Sequence[HistoryView]) -> tuple[Family, ...]:
    """The views grouped by their first join key column, in the order views name them."""
    grouped: dict[str, list[HistoryView]] = {}
    for view in views:
        grouped.setdefault(view.join_keys[0], []).append(view)
    return tuple(Family(column, tuple(members)) for column, members in grouped.items())


def entity_buckets(column: pl.Series) -> npt.NDArray[np.uint64]:
    """The bucket of each row's entity: ``crc32(key text) % BUCKETS``.

    The key text is the entity key's own encoding (engine/state/keys.py), so one entity
    always lands in one bucket, in every run: a resumed backfill finds the same order.
    Each distinct value is hashed once.
    """
    distinct: list[object]
    if column.dtype == pl.String:
        unique = column.unique(maintain_order=True)
        # Enum categories keep the given order, so physical code i names unique[i].
        codes = column.cast(pl.Enum(unique)).to_physical().to_numpy()
        distinct = unique.to_list()
    else:
        values, codes = np.unique(column.to_numpy(), return_inverse=True)
        distinct = values.tolist()
    hashes = np.fromiter(
        map(zlib.crc32, encode_entity_keys([distinct]), repeat(0)), dtype=np.uint64, count=len(distinct)
    )
    buckets: npt.NDArray[np.uint64] = (hashes % np.uint64(BUCKETS))[codes.reshape(-1)]
    return buckets


def order_keys(frame: pl.DataFrame, column: str, ts: npt.NDArray[np.int64]) -> UInt64Array:
    """Sort key of each row in a family's order: its bucket, then its event time."""
    buckets = entity_buckets(frame.get_column(column))
    return (buckets << np.uint64(TIME_BITS)) | ts.astype(np.uint64)


def _cut_slices(
    family: int, sorted_keys: UInt64Array, slice_rows: int, first_offset: int
) -> tuple[list[HistorySlice], int]:
    """Slices of about ``slice_rows`` rows: whole buckets when a bucket fits, else cuts at
    event-time boundaries (rows of equal key share a slice). Returns them and the next offset."""
    slices: list[HistorySlice] = []
    n = len(sorted_keys)
    bucket_of = sorted_keys >> np.uint64(TIME_BITS)
    begin = 0
    while begin < n:
        cut = begin + slice_rows
        if cut < n:
            # Back to the start of the cut row's bucket, so no entity is split; a bucket
            # larger than a slice is cut at the first row of the cut row's event time.
            bucket_start = int(np.searchsorted(bucket_of, bucket_of[cut], side="left"))
            if bucket_start > begin:
                cut = bucket_start
            else:
                cut = int(np.searchsorted(sorted_keys, sorted_keys[cut], side="left"))
                if cut <= begin:
                    cut = int(np.searchsorted(sorted_keys, sorted_keys[begin], side="right"))
        cut = min(cut, n)
        lo = int(sorted_keys[begin]) if slices else 0
        hi = int(sorted_keys[cut]) if cut < n else KEY_END
        slices.append(HistorySlice(family, lo, hi, first_offset + begin, cut - begin))
        begin = cut
    return slices, first_offset + n


def index_history(
    files: Sequence[str],
    source: EventSourceLike,
    views: Sequence[HistoryView],
    start_ms: int,
    end_ms: int,
    slice_rows: int,
) -> HistoryIndex:
    """Check every file (schema first, then each row group's rows) and cut the rows with
    ``start <= e < end`` into slices per family. Raises :class:`HistoryFileError` naming the file."""
    if slice_rows < 1:
        raise ValueError(f"index_history: slice_rows: expected >= 1, got {slice_rows}")
    for path in files:
        check_file_schema(path, source)
    needed = tuple(needed_columns(source, views))
    join_keys = tuple(dict.fromkeys(k for view in views for k in view.join_keys))
    exact_ints = double_read_columns(views)
    families = families_of(views)
    spans: list[RowGroupSpan] = []
    keys: list[list[UInt64Array]] = [[] for _ in families]
    rows = 0
    for file_index, path in enumerate(files):
        first_row = 0
        for group in range(row_group_count(path)):
            frame = read_row_group(path, group, needed)
            ts = check_rows(frame, source, needed, path, first_row, join_keys, exact_ints).to_numpy().astype(np.int64)
            first_row += frame.height
            selected = (ts >= start_ms) & (ts < end_ms)
            if not bool(selected.any()):
                continue
            spans.append(RowGroupSpan(file_index, group))
            frame, ts = frame.filter(pl.Series(selected)), ts[selected]
            rows += len(ts)
            for f, family in enumerate(families):
                keys[f].append(order_keys(frame, family.column, ts))
    slices: list[HistorySlice] = []
    offset = 0
    for f in range(len(families)):
        sorted_keys = np.sort(np.concatenate(keys[f])) if keys[f] else np.zeros(0, dtype=np.uint64)
        keys[f] = []
        family_slices, offset = _cut_slices(f, sorted_keys, slice_rows, offset)
        slices.extend(family_slices)
    return HistoryIndex(
        files=tuple(files),
        needed=needed,
        start_ms=start_ms,
        end_ms=end_ms,
        families=families,
        spans=tuple(spans),
        slices=tuple(slices),
        rows=rows,
    )


def read_span(index: HistoryIndex, span: RowGroupSpan, source: EventSourceLike) -> pl.DataFrame:
    """The selected rows of one row group, with ``__e`` and ``__file``."""
    path = index.files[span.file]
    frame = read_row_group(path, span.row_group, index.needed)
    frame = frame.with_columns(
        event_times(frame, source, path).alias(EVENT_MS), pl.lit(span.file, dtype=pl.Int32).alias(FILE_INDEX)
    )
    return frame.filter((pl.col(EVENT_MS) >= index.start_ms) & (pl.col(EVENT_MS) < index.end_ms))


def slice_order(rows: pl.DataFrame, piece: HistorySlice) -> npt.NDArray[np.intp] | None:
    """The permutation that sorts the rows of ``piece`` (read in file and row order) by
    their sort key, or None when they already are in that order.

    A stable sort keeps ties in file and row order. The rows are not gathered here:
    the caller gathers only the columns it reads, string columns as integer codes
    (gathering a slice's string columns cost more than sorting it). Raises
    :class:`HistoryFileError` when the row count differs from the first pass (a file
    changed in between).
    """
    if rows.height != piece.rows:
        raise HistoryFileError(
            f"history: {rows.height} rows in slice [{piece.lo}, {piece.hi}) of the order on the second "
            f"read, {piece.rows} on the first: a history file changed during the backfill",
            hint="leave the history files alone while a backfill runs, then run it again (it resumes)",
        )
    if rows.height < 2:
        return None
    # numpy's stable argsort is several times faster than polars' order-keeping sort.
    keys = rows.get_column(ORDER_KEY).to_numpy()
    if bool(np.all(keys[1:] >= keys[:-1])):
        return None
    return np.argsort(keys, kind="stable")


def load_history(
    files: Sequence[str], source: EventSourceLike, views: Sequence[HistoryView], start_ms: int, end_ms: int
) -> pl.DataFrame:
    """Every row with ``start <= e < end`` sorted by (event time, file, row), in one frame
    (for small histories and tests; backfill reads slice by slice)."""
    index = index_history(files, source, views, start_ms, end_ms, slice_rows=2**62)
    frames = [read_span(index, span, source) for span in index.spans]
    rows = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    if rows.height < 2:
        return rows
    return rows[np.argsort(rows.get_column(EVENT_MS).to_numpy(), kind="stable")]

"""The history of a Parquet backfill in event-time slices, so memory stays bounded.

The replay order is (event time, file, row) over every selected row (docs/backfill.md),
and row ``i`` of it gets the offset ``i``. Instead of holding that whole order in memory,
a first pass reads the files one row group at a time, checks every row, and keeps only
the selected event times (8 bytes per row). Sorted, those give slices of about
``slice_rows`` rows with event-time bounds ``[lo, hi)`` and the number of rows before
each slice: the offset of its first row. A second pass reads one slice at a time, from
the row groups whose event times reach into it, and sorts it by the same order, so
every row gets the offset it would get in the whole order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.offline.exceptions import HistoryFileError
from engine.offline.history_files import (
    check_file_schema,
    check_rows,
    event_times,
    needed_columns,
    read_row_group,
    row_group_count,
)

#: Column of the parsed event time (ms) in history frames, and of the file's index.
EVENT_MS = "__e"
FILE_INDEX = "__file"


@dataclass(frozen=True)
class RowGroupSpan:
    """The selected event times of one row group reach ``[min_ts, max_ts]``."""

    file: int
    row_group: int
    min_ts: int
    max_ts: int


@dataclass(frozen=True)
class HistorySlice:
    """Selected rows with ``lo <= e < hi``: ``rows`` of them, the first at ``first_offset``."""

    lo: int
    hi: int
    first_offset: int
    rows: int

    @property
    def end_offset(self) -> int:
        return self.first_offset + self.rows


@dataclass(frozen=True)
class HistoryIndex:
    """Every file checked, and the selected rows cut into slices in replay order."""

    files: tuple[str, ...]
    needed: tuple[str, ...]
    start_ms: int
    end_ms: int
    spans: tuple[RowGroupSpan, ...]
    slices: tuple[HistorySlice, ...]
    total: int

    def __post_init__(self) -> None:
        if sum(s.rows for s in self.slices) != self.total:
            raise ValueError(f"HistoryIndex: slices hold {sum(s.rows for s in self.slices)} rows, not {self.total}")


def _cut_slices(sorted_ts: npt.NDArray[np.int64], slice_rows: int, end_ms: int) -> tuple[HistorySlice, ...]:
    """Slices of about ``slice_rows`` rows; rows of equal event time share a slice."""
    slices: list[HistorySlice] = []
    n = len(sorted_ts)
    begin = 0
    while begin < n:
        cut = begin + slice_rows
        if cut < n:
            # Move the cut back to the first row of its event time, or past that time
            # when the slice would be empty.
            cut = int(np.searchsorted(sorted_ts, sorted_ts[cut], side="left"))
            if cut <= begin:
                cut = int(np.searchsorted(sorted_ts, sorted_ts[begin], side="right"))
        cut = min(cut, n)
        hi = int(sorted_ts[cut]) if cut < n else end_ms
        slices.append(HistorySlice(int(sorted_ts[begin]), hi, begin, cut - begin))
        begin = cut
    return tuple(slices)


def index_history(
    files: Sequence[str], source: Any, views: Sequence[Any], start_ms: int, end_ms: int, slice_rows: int
) -> HistoryIndex:
    """Check every file (schema first, then each row group's rows) and cut the rows with
    ``start <= e < end`` into slices. Raises :class:`HistoryFileError` naming the file."""
    if slice_rows < 1:
        raise ValueError(f"index_history: slice_rows: expected >= 1, got {slice_rows}")
    for path in files:
        check_file_schema(path, source)
    needed = tuple(needed_columns(source, views))
    spans: list[RowGroupSpan] = []
    selected: list[npt.NDArray[np.int64]] = []
    for file_index, path in enumerate(files):
        first_row = 0
        for group in range(row_group_count(path)):
            frame = read_row_group(path, group, needed)
            ts = check_rows(frame, source, needed, path, first_row).to_numpy().astype(np.int64)
            first_row += frame.height
            ts = ts[(ts >= start_ms) & (ts < end_ms)]
            if len(ts):
                spans.append(RowGroupSpan(file_index, group, int(ts.min()), int(ts.max())))
                selected.append(ts)
    sorted_ts = np.sort(np.concatenate(selected)) if selected else np.zeros(0, dtype=np.int64)
    del selected
    return HistoryIndex(
        files=tuple(files),
        needed=needed,
        start_ms=start_ms,
        end_ms=end_ms,
        spans=tuple(spans),
        slices=_cut_slices(sorted_ts, slice_rows, end_ms),
        total=len(sorted_ts),
    )


def read_slice(index: HistoryIndex, piece: HistorySlice, source: Any) -> pl.DataFrame:
    """The rows of ``piece`` sorted by (event time, file, row), with ``__e`` and ``__file``.

    Row groups are read in file order and row order, so a stable sort by event time
    keeps ties in that order.
    """
    lo, hi = max(piece.lo, index.start_ms), min(piece.hi, index.end_ms)
    frames: list[pl.DataFrame] = []
    for span in index.spans:
        if span.max_ts < lo or span.min_ts >= hi:
            continue
        path = index.files[span.file]
        frame = read_row_group(path, span.row_group, index.needed)
        frame = frame.with_columns(
            event_times(frame, source, path).alias(EVENT_MS), pl.lit(span.file, dtype=pl.Int32).alias(FILE_INDEX)
        )
        frames.append(frame.filter((pl.col(EVENT_MS) >= lo) & (pl.col(EVENT_MS) < hi)))
    rows = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    if rows.height != piece.rows:
        raise HistoryFileError(
            f"history: {rows.height} rows in event times [{lo}, {hi}) on the second read, "
            f"{piece.rows} on the first: a history file changed during the backfill",
            hint="leave the history files alone while a backfill runs, then run it again (it resumes)",
        )
    if rows.height < 2:
        return rows
    # numpy's stable argsort plus one gather is several times faster than polars'
    # order-keeping frame sort, and history is usually sorted already (then nothing moves).
    ts = rows.get_column(EVENT_MS).to_numpy()
    if bool(np.all(ts[1:] >= ts[:-1])):
        return rows
    return rows[np.argsort(ts, kind="stable")]


def iter_slices(index: HistoryIndex, source: Any, first_offset: int = 0) -> Iterator[tuple[HistorySlice, pl.DataFrame]]:
    """Every slice holding offsets at or after ``first_offset``, with its sorted rows."""
    for piece in index.slices:
        if piece.end_offset > first_offset:
            yield piece, read_slice(index, piece, source)


def load_history(files: Sequence[str], source: Any, views: Sequence[Any], start_ms: int, end_ms: int) -> pl.DataFrame:
    """Every row with ``start <= e < end`` sorted by (event time, file, row), in one frame
    (for small histories and tests; backfill reads slice by slice)."""
    index = index_history(files, source, views, start_ms, end_ms, slice_rows=2**62)
    frames = [rows for _, rows in iter_slices(index, source)]
    return frames[0] if frames else pl.DataFrame()

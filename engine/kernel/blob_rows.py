"""The sketch blobs of many tile rows as byte ranges: each row's blobs lie back to back
(slot order) in one of a few buffers, so the write path can carry a stored record's
blobs from the decoded records to the encoded ones without a ``bytes`` object per blob.

A record's section keeps its blobs in row-major (tile, slot) order, so the blobs of a
stored record's kept tiles stay one contiguous byte range of the joined stored records,
and writing them back is one slice per record (``engine/kernel/codec.py``,
:func:`~engine.kernel.codec.append_sections`). Only the rows a batch changes (a shared
tile, a folded lifetime partial) become ``bytes`` objects, for their kind's merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.kernel.blob_buffers import slices
from engine.kernel.sketch_slot import BlobArray, empty_blobs

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BlobRows:
    """Row ``i`` holds the blobs ``lengths[i, 0], lengths[i, 1], ...`` bytes long, back to
    back from byte ``begin[i]`` of ``buffers[buffer_of[i]]``."""

    buffers: tuple[bytes, ...]
    buffer_of: Int64Array
    begin: Int64Array
    lengths: Int64Array  # (rows, n_slots)

    def __len__(self) -> int:
        return len(self.begin)

    @property
    def n_slots(self) -> int:
        return int(self.lengths.shape[1])

    @classmethod
    def of_objects(cls, blobs: BlobArray) -> BlobRows:
        """The rows of a ``(rows, n_slots)`` object array of ``bytes``, joined into one buffer."""
        rows, n_slots = blobs.shape
        flat = blobs.reshape(-1).tolist()
        lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat)).reshape(rows, n_slots)
        row_bytes = lengths.sum(axis=1)
        begin = np.cumsum(row_bytes) - row_bytes
        return cls((b"".join(flat),), np.zeros(rows, dtype=np.int64), begin, lengths)

    @classmethod
    def concat(cls, parts: Sequence[BlobRows]) -> BlobRows:
        """The rows of every part, in order (their buffers are kept, not copied)."""
        buffers: list[bytes] = []
        buffer_of: list[Int64Array] = []
        for part in parts:
            buffer_of.append(part.buffer_of + len(buffers))
            buffers.extend(part.buffers)
        return cls(
            tuple(buffers),
            np.concatenate(buffer_of),
            np.concatenate([p.begin for p in parts]),
            np.concatenate([p.lengths for p in parts]),
        )

    def take(self, rows: npt.NDArray[np.intp] | Int64Array | npt.NDArray[np.bool_]) -> BlobRows:
        """The rows selected by an index array or mask (same buffers)."""
        return BlobRows(self.buffers, self.buffer_of[rows], self.begin[rows], self.lengths[rows])

    def objects(self, rows: npt.NDArray[np.intp] | Int64Array | None = None) -> BlobArray:
        """The blobs of ``rows`` (all rows when None) as a ``(rows, n_slots)`` object
        array of ``bytes``: one slice per blob."""
        part = self if rows is None else self.take(rows)
        out = empty_blobs(len(part), self.n_slots)
        blob_begin = part.begin[:, None] + np.cumsum(part.lengths, axis=1) - part.lengths
        for b, data in enumerate(part.buffers):
            mine = np.flatnonzero(part.buffer_of == b)
            if not len(mine):
                continue
            begins = blob_begin[mine].reshape(-1)
            column = np.empty(len(begins), dtype=object)
            column[:] = slices(data, begins, begins + part.lengths[mine].reshape(-1))
            out[mine] = column.reshape(-1, self.n_slots)
        return out

    def record_runs(self, row_bounds: Int64Array) -> tuple[Int64Array, Int64Array, Int64Array, Int64Array]:
        """The byte runs holding the blobs of each record ``i`` (rows ``row_bounds[i] ..
        row_bounds[i + 1]``), in row order: ``(buffer, start, end)`` of every run and the
        index of each record's first run (length ``records + 1``). Consecutive rows whose
        bytes follow each other in one buffer form one run."""
        n_records = len(row_bounds) - 1
        row_bytes = self.lengths.sum(axis=1)
        record_of_row = np.repeat(np.arange(n_records, dtype=np.int64), np.diff(row_bounds))
        rows = np.flatnonzero(row_bytes > 0)
        buf, start, size, record = self.buffer_of[rows], self.begin[rows], row_bytes[rows], record_of_row[rows]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (record[1:] != record[:-1]) | (buf[1:] != buf[:-1]) | (start[1:] != start[:-1] + size[:-1])
        run_first = np.flatnonzero(first)
        run_last = np.append(run_first[1:], len(rows))[: len(run_first)] - 1
        run_of_record = np.searchsorted(record[run_first], np.arange(n_records + 1))
        return buf[run_first], start[run_first], start[run_last] + size[run_last], run_of_record.astype(np.int64)


def no_blob_rows(rows: int, n_slots: int, buffer: bytes = b"") -> BlobRows:
    """``rows`` rows of empty blobs."""
    zeros = np.zeros(rows, dtype=np.int64)
    return BlobRows((buffer,), zeros, zeros.copy(), np.zeros((rows, n_slots), dtype=np.int64))

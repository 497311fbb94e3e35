"""A backfill's history slices on local disk: written in one pass, read back one at a time.

A slice holds the rows of some entities (docs/backfill.md), which are spread over every
history file. Reading the files again for each slice would cost one pass over the whole
history per slice; instead one pass over the row groups appends each row to the file of
its slice (Arrow IPC, LZ4), once per family. Memory holds one row group and one slice.
The files live in a temporary directory removed when the backfill ends; one left behind
by a killed backfill is removed by the next one (``engine.offline.spill_directory``).
"""

from __future__ import annotations

import shutil

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from engine.io.decoder import EventSourceLike
from engine.offline.exceptions import BackfillError
from engine.offline.history_files import kind_name
from engine.offline.history_slices import (
    EVENT_MS,
    FILE_INDEX,
    ORDER_KEY,
    HistoryIndex,
    order_keys,
    read_span,
    slice_order,
)
from engine.offline.spill_directory import make_spill_directory

_SLICE = "__slice"
_DTYPES = {"string": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean}


class SpilledHistory:
    """The slices of ``index`` holding positions at or after ``first_offset``, on disk."""

    def __init__(
        self, index: HistoryIndex, source: EventSourceLike, first_offset: int = 0, directory: str | None = None
    ) -> None:
        self.index = index
        self.wanted = [i for i, piece in enumerate(index.slices) if piece.end_offset > first_offset]
        try:
            self.directory = make_spill_directory(directory)
        except OSError as exc:
            raise BackfillError(
                f"backfill: cannot create the slice files' temporary directory: {exc}",
                hint="set TMPDIR to a writable directory with room for the history's needed columns",
            ) from None
        self.paths = {i: self.directory / f"slice-{i:06d}.arrow" for i in self.wanted}
        try:
            self._write(source)
        except OSError as exc:
            self.close()
            raise BackfillError(
                f"backfill: writing the history slices under {self.directory} failed: {exc}; this run applied nothing",
                hint="free space there or set TMPDIR to a directory with room for the history's needed "
                "columns (once per family of views; several times their Parquet size), then run again",
            ) from None
        except BaseException:
            self.close()
            raise

    def _write(self, source: EventSourceLike) -> None:
        index = self.index
        kinds = {str(k): kind_name(v) for k, v in source.schema.items()}
        columns = [c for c in index.needed if c in kinds]
        casts = [pl.col(c).cast(_DTYPES[kinds[c]]) for c in columns]
        writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        options = ipc.IpcWriteOptions(compression="lz4")
        wanted = set(self.wanted)
        try:
            for span in index.spans:
                frame = read_span(index, span, source).select(*casts, EVENT_MS, FILE_INDEX)
                ts = frame.get_column(EVENT_MS).to_numpy()
                for f, family in enumerate(index.families):
                    ids = [i for i, piece in enumerate(index.slices) if piece.family == f]
                    los = np.asarray([index.slices[i].lo for i in ids], dtype=np.uint64)
                    keys = order_keys(frame, family.column, ts)
                    which = np.asarray(ids, dtype=np.int64)[np.searchsorted(los, keys, side="right") - 1]
                    tagged = frame.with_columns(pl.Series(ORDER_KEY, keys), pl.Series(_SLICE, which))
                    for (slice_id,), part in tagged.partition_by(_SLICE, as_dict=True, maintain_order=True).items():
                        if slice_id not in wanted:
                            continue
                        table = part.drop(_SLICE).to_arrow()
                        writer = writers.get(int(slice_id))
                        if writer is None:
                            path = self.paths[int(slice_id)]
                            writer = ipc.new_stream(str(path), table.schema, options=options)
                            writers[int(slice_id)] = writer
                        writer.write_table(table)
        finally:
            for writer in writers.values():
                writer.close()

    def read(self, slice_id: int) -> tuple[pl.DataFrame, npt.NDArray[np.intp] | None]:
        """The rows of slice ``slice_id`` as written (file order), and the permutation
        into its family's order (None: already in it; ``history_slices.slice_order``)."""
        piece = self.index.slices[slice_id]
        path = self.paths[slice_id]
        if path.exists():
            with pa.OSFile(str(path), "rb") as stream:
                table = ipc.open_stream(stream).read_all()
            rows = pl.DataFrame(pl.from_arrow(table))
        else:
            rows = pl.DataFrame()
        return rows, slice_order(rows, piece)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

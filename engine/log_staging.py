"""Rows waiting to enter a view's Parquet log buffer, handed over in a few large appends.

Streaming applies a few dozen rows per shard and source partition at a time. Turning
each such piece into log columns cost ~70 us (an Arrow key column, a partition column,
the tile starts, one checked column per field), a fifth of a shard write at 10k events/s,
and left one small Arrow array per piece in the buffer for the cyclic GC to walk:
full collections grew to 100 ms between rolls. Staged pieces are converted together
once enough have gathered (or before any roll), so the cost is paid per few thousand
rows instead of per piece.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from engine.io.log_format import raw_column, value_column
from engine.io.parquet_log import ParquetLogWriter
from engine.kernel.window import tile_start_ms
from engine.routing import ViewRows

# Small pieces are staged until 64 have gathered (a few hundred buffer objects per
# roll); a piece that brings the stage to 1,024 rows goes on at once, since bulk pieces
# gain nothing from waiting. Keeping bulk pieces (thousands of rows, with their batch's
# entity-key objects) alive across batches cost bulk ingest 15% (measured with 8,192):
# the next batch's records were allocated around them, scattered in memory.
MAX_STAGED_PIECES = 64
MAX_STAGED_ROWS = 1_024


@dataclass
class StagedLogRows:
    """The pieces of one view not yet appended to its :class:`ParquetLogWriter`."""

    writer: ParquetLogWriter  # its join keys and value columns shape the staged rows
    interval_ms: int
    pieces: list[tuple[ViewRows, int]] = field(default_factory=list)
    rows: int = 0
    # time.monotonic() of the oldest staged piece: the writer's age clock starts there.
    since: float | None = None

    def add(self, rows: ViewRows, partition: int) -> None:
        """Stage ``rows`` of source ``partition``; append to the writer when enough gathered."""
        if not len(rows):
            return
        if self.since is None:
            self.since = time.monotonic()
        self.pieces.append((rows, partition))
        self.rows += len(rows)
        if len(self.pieces) >= MAX_STAGED_PIECES or self.rows >= MAX_STAGED_ROWS:
            self.flush()

    def roll_due(self) -> bool:
        """Whether the writer should roll, counting the staged rows as buffered."""
        writer = self.writer
        if writer.should_roll():
            return True
        if self.since is None:
            return False
        return writer.buffered_rows + self.rows >= writer.max_rows or time.monotonic() - self.since >= writer.max_age_s

    def flush(self) -> None:
        """Append every staged piece to the writer as one batch of columns."""
        if not self.pieces:
            return
        pieces, since = self.pieces, self.since
        self.writer.append(self._columns(pieces), now=since)
        self.pieces, self.rows, self.since = [], 0, None

    def _columns(self, pieces: list[tuple[ViewRows, int]]) -> dict[str, Sized]:
        parts = [rows for rows, _ in pieces]
        columns: dict[str, Sized] = {}
        join_keys = self.writer.join_keys
        if len(join_keys) == 1:
            # One join key: the entity key bytes are that value's text (routing's
            # contract), so the column is a gather of the distinct keys, not one str()
            # conversion per row.
            keys: list[bytes] = []
            codes: list[np.ndarray] = []
            for rows in parts:
                codes.append(rows.codes + len(keys))
                keys.extend(rows.keys)
            distinct = pa.array(keys, type=pa.binary()).cast(pa.string())
            columns[join_keys[0]] = distinct.take(pa.array(np.concatenate(codes)))
        else:
            for key in join_keys:
                columns[key] = np.concatenate([rows.join_values[key] for rows in parts])
        event_ts = np.concatenate([rows.event_ts for rows in parts])
        columns["event_time"] = event_ts
        columns["partition"] = np.repeat(
            np.array([partition for _, partition in pieces], dtype=np.int32),
            [len(rows) for rows in parts],
        )
        columns["offset"] = np.concatenate([rows.offsets for rows in parts])
        columns["tile_start"] = tile_start_ms(event_ts, self.interval_ms)
        values = np.concatenate([rows.values for rows in parts])
        for i, column in enumerate(self.writer.columns):
            columns[value_column(column)] = values[:, i]
        for column in self.writer.raw_columns:
            columns[raw_column(column)] = np.concatenate([rows.raw_values[column] for rows in parts])
        return columns

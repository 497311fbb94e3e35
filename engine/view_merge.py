"""Merge one view's routed rows into its stored entity records, within a transaction.

The kernel step of the write path (docs/semantics.md sections 6 and 7): aggregate the
rows into (entity, tile) partials, read the touched entities' records with one
multi-get, merge, apply retention, encode and put them back with the view's metadata
record. :class:`engine.apply.ShardApplier` calls it once per view per apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import NO_EVENT_TS, FlatTiles
from engine.kernel.layout import LayoutSource, PartialLayout, encode_positions
from engine.kernel.record_merge import merge_records
from engine.kernel.window import tile_id
from engine.log_rolls import LoggedView
from engine.routing import ViewRows, merge_codes
from engine.state.protocols import Transaction
from engine.state.records import encode_meta, meta_key, view_prefix


class ApplicableView(LoggedView, LayoutSource, Protocol):
    @property
    def interval_ms(self) -> int: ...
    @property
    def retention_ms(self) -> int: ...
    @property
    def has_lifetime_window(self) -> bool: ...
    @property
    def offline(self) -> bool: ...
    @property
    def column_types(self) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class CompiledView:
    view: ApplicableView
    layout: PartialLayout

    def raw_column_types(self) -> dict[str, str]:
        """Schema type of each column the view's sketch slots read (logged as decoded)."""
        types = self.view.column_types
        return {c: str(getattr(types[c], "value", types[c])) for c in self.layout.sketch_columns}


@dataclass(frozen=True)
class MergedView:
    """The records one merge wrote: entity keys (without the view prefix) and values."""

    keys: list[bytes]
    records: list[bytes]
    meta_value: bytes
    newest: int  # the view's newest event time after the merge
    rows: int


def merge_view_rows(
    txn: Transaction, compiled: CompiledView, parts: Sequence[tuple[ViewRows, int]], newest_before: int, now_ms: int
) -> MergedView:
    """Merge ``parts`` (rows, source partition) into the view's records in ``txn``."""
    view, layout = compiled.view, compiled.layout
    keys, codes = merge_codes(list(parts))
    event_ts = np.concatenate([rows.event_ts for rows, _ in parts])
    offsets = np.concatenate([rows.offsets for rows, _ in parts])
    partitions = np.concatenate([np.full(len(rows), partition, dtype=np.int64) for rows, partition in parts])
    values = np.concatenate([rows.values for rows, _ in parts])
    tiles = tile_id(event_ts, view.interval_ms)
    positions = encode_positions(partitions, offsets)
    codes_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, event_ts, positions, values)
    sketches = None
    if layout.sketch_slots:
        raw = {c: np.concatenate([rows.raw_values[c] for rows, _ in parts]) for c in layout.sketch_columns}
        sketches = aggregate_sketches(layout, codes, tiles, event_ts, positions, raw)
    batch_max = np.full(len(keys), NO_EVENT_TS, dtype=np.int64)
    np.maximum.at(batch_max, codes, event_ts)
    prefix = view_prefix(view.fingerprint)  # keys are bytes built by routing
    state_keys = [prefix + k for k in keys]
    new = FlatTiles(codes_u, tiles_u, partials, batch_max, sketches)
    # A lifetime window keeps expired tiles as one compacted partial (semantics 7).
    records = merge_records(
        layout, txn.get_many(state_keys), new, view.retention_ms, view.interval_ms, view.has_lifetime_window
    )
    txn.put_many(state_keys, records)
    newest = max(int(batch_max.max()), newest_before)
    meta_value = encode_meta(newest, now_ms)
    txn.put(meta_key(view.fingerprint), meta_value)
    return MergedView(keys, records, meta_value, newest, len(codes))

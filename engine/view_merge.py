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

from engine.kernel.aggregate import aggregate_batch, aggregate_sketches, group_order
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
    return merge_view_rows_many(compiled, [ShardRows(txn, parts, newest_before)], now_ms)[0]


@dataclass(frozen=True)
class ShardRows:
    """One shard's share of a merge: its transaction, its rows, its view's newest event time."""

    txn: Transaction
    parts: Sequence[tuple[ViewRows, int]]  # (rows, source partition)
    newest_before: int


def merge_view_rows_many(compiled: CompiledView, shards: Sequence[ShardRows], now_ms: int) -> list[MergedView]:
    """Merge every shard's rows into the view's records in that shard's transaction.

    One kernel call serves all ``shards``: the kernel's cost per call (tens of numpy
    calls per view) is paid once, not once per shard. Each entity's record depends only
    on its stored record and its own rows, so the records are those of one call per
    shard; each shard's entities are read from and written to its own transaction, and
    each shard's metadata record holds its own newest event time.
    """
    view, layout = compiled.view, compiled.layout
    merged_codes = [merge_codes(list(shard.parts)) for shard in shards]
    key_bounds = np.cumsum([0] + [len(keys) for keys, _ in merged_codes]).tolist()
    keys = [k for shard_keys, _ in merged_codes for k in shard_keys]
    all_parts = [part for shard in shards for part in shard.parts]
    codes = np.concatenate([shard_codes + lo for (_, shard_codes), lo in zip(merged_codes, key_bounds, strict=False)])
    event_ts = np.concatenate([rows.event_ts for rows, _ in all_parts])
    offsets = np.concatenate([rows.offsets for rows, _ in all_parts])
    partitions = np.concatenate([np.full(len(rows), partition, dtype=np.int64) for rows, partition in all_parts])
    values = np.concatenate([rows.values for rows, _ in all_parts])
    tiles = tile_id(event_ts, view.interval_ms)
    positions = encode_positions(partitions, offsets)
    # Sorted once for both the partials and the sketch blobs of the same groups.
    order = group_order(codes, tiles, event_ts, positions) if layout.sketch_slots else None
    codes_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, event_ts, positions, values, order)
    sketches = None
    if layout.sketch_slots:
        raw = {c: np.concatenate([rows.raw_values[c] for rows, _ in all_parts]) for c in layout.sketch_columns}
        sketches = aggregate_sketches(layout, codes, tiles, event_ts, positions, raw, order)
    batch_max = np.full(len(keys), NO_EVENT_TS, dtype=np.int64)
    np.maximum.at(batch_max, codes, event_ts)
    prefix = view_prefix(view.fingerprint)  # keys are bytes built by routing
    state_keys = [prefix + k for k in keys]
    stored: list[bytes | None] = []
    for shard, lo, hi in zip(shards, key_bounds, key_bounds[1:], strict=False):
        stored += shard.txn.get_many(state_keys[lo:hi])
    new = FlatTiles(codes_u, tiles_u, partials, batch_max, sketches)
    # A lifetime window keeps expired tiles as one compacted partial (semantics 7).
    records = merge_records(layout, stored, new, view.retention_ms, view.interval_ms, view.has_lifetime_window)
    out: list[MergedView] = []
    for shard, (_, shard_codes), lo, hi in zip(shards, merged_codes, key_bounds, key_bounds[1:], strict=False):
        shard_records = records[lo:hi]
        shard.txn.put_many(state_keys[lo:hi], shard_records)
        newest = max(int(batch_max[lo:hi].max()), shard.newest_before)
        meta_value = encode_meta(newest, now_ms)
        shard.txn.put(meta_key(view.fingerprint), meta_value)
        out.append(MergedView(keys[lo:hi], shard_records, meta_value, newest, len(shard_codes)))
    return out

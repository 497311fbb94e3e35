"""Merge one view's routed rows into its stored entity records, within a transaction.

The kernel step of the write path (docs/semantics.md sections 6 and 7): aggregate the
rows into (entity, tile) partials, read the touched entities' records with one
multi-get, merge, apply retention, encode and put them back with the view's metadata
record. :class:`engine.apply.ShardApplier` calls it once per view per apply.

An entity of more than ``SPILL_ABOVE`` tiles is kept as a cold and a hot part
(engine/kernel/codec.py, "Hot and cold parts"): a touch merges into the hot part alone
while the cold part needs no change, so it rewrites a few tiles, not a day of them. The
cold part is read and rewritten when the touch reaches it: an event in a tile at or
before its newest, a tile of it expiring or folding (retention, semantics section 7),
or a spill of the hot part's older tiles into it. The record the two parts stand for
is byte for byte the one record the merge would have written (tests/engine/test_cold_parts.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.kernel.aggregate import aggregate_batch, aggregate_sketches, group_order
from engine.kernel.batch_merge import FlatTiles
from engine.kernel.codec import (
    HEADER,
    has_cold,
    join_parts,
    leading_tiles,
    split_record,
    stored_cold_part,
    tile_span,
    with_cold_flag,
)
from engine.kernel.layout import LayoutSource, PartialLayout, encode_positions
from engine.kernel.record_merge import merge_records
from engine.kernel.tile_retention import first_kept_tile
from engine.kernel.window import tile_id
from engine.log_rolls import LoggedView
from engine.routing import ViewRows, merge_codes
from engine.state.protocols import Transaction
from engine.state.records import cold_view_prefix, encode_meta, meta_key, view_prefix
from engine.timefmt import NO_EVENT_TS

#: A record of more tiles than this is stored as a cold and a hot part: a touch then
#: rewrites at most this many tiles. Records of an hour of minute tiles or less stay
#: whole, so reading them needs no second get.
SPILL_ABOVE = 64
#: The newest tiles a hot part keeps when a record is split: the next spill comes
#: ``SPILL_ABOVE - HOT_KEEP`` new tiles later.
HOT_KEEP = 16


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
    records: list[bytes]  # hot parts where the entity has a cold part
    meta_value: bytes
    newest: int  # the view's newest event time after the merge
    rows: int
    # (entity key, cold part or None: deleted) of every cold part written or deleted
    cold: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    cold_kept: list[bytes] = field(default_factory=list)  # entity keys whose cold part stays


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
    cold_prefix = cold_view_prefix(view.fingerprint)
    parts = _ColdParts.read(view, shards, key_bounds, [cold_prefix + k for k in keys], stored, new)
    # A lifetime window keeps expired tiles as one compacted partial (semantics 7).
    records = merge_records(layout, parts.to_merge, new, view.retention_ms, view.interval_ms, view.has_lifetime_window)
    hot, cold = parts.split(records)
    out: list[MergedView] = []
    for shard, (_, shard_codes), lo, hi in zip(shards, merged_codes, key_bounds, key_bounds[1:], strict=False):
        shard_records = hot[lo:hi]
        shard.txn.put_many(state_keys[lo:hi], shard_records)
        shard_cold = [(i, c) for i, c in cold if lo <= i < hi]
        for i, value in shard_cold:
            if value is None:
                shard.txn.delete(cold_prefix + keys[i])
            else:
                shard.txn.put(cold_prefix + keys[i], value)
        newest = max(int(batch_max[lo:hi].max()), shard.newest_before)
        meta_value = encode_meta(newest, now_ms)
        shard.txn.put(meta_key(view.fingerprint), meta_value)
        written = {i for i, _ in shard_cold}
        out.append(
            MergedView(
                keys[lo:hi],
                shard_records,
                meta_value,
                newest,
                len(shard_codes),
                [(keys[i], c) for i, c in shard_cold],
                [keys[i] for i in parts.kept if lo <= i < hi and i not in written],
            )
        )
    return out


@dataclass(frozen=True)
class _ColdParts:
    """The records a merge merges, given the touched entities' cold parts.

    An entity whose hot part is flagged merges its hot part alone (``kept``: its cold
    part stays as it is) when the batch neither reaches the cold part's tiles nor
    expires any tile of the entity (a lifetime window: folds none); otherwise it merges
    the one record both parts stand for (``joined``).
    """

    to_merge: list[bytes | None]
    kept: dict[int, bytes]  # entity -> its cold part, unchanged by the merge
    joined: set[int]

    @classmethod
    def read(
        cls,
        view: ApplicableView,
        shards: Sequence[ShardRows],
        key_bounds: list[int],
        cold_keys: list[bytes],
        stored: list[bytes | None],
        new: FlatTiles,
    ) -> _ColdParts:
        flagged = [(i, r) for i, r in enumerate(stored) if r is not None and has_cold(r)]
        if not flagged:
            return cls(stored, {}, set())
        colds: list[bytes | None] = []
        for shard, lo, hi in zip(shards, key_bounds, key_bounds[1:], strict=False):
            colds += shard.txn.get_many([cold_keys[i] for i, _ in flagged if lo <= i < hi])
        first_new = np.full(len(stored), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_new, new.codes, new.tiles)
        to_merge = list(stored)
        kept: dict[int, bytes] = {}
        joined: set[int] = set()
        for (i, hot), stored_cold in zip(flagged, colds, strict=True):
            cold = stored_cold_part(stored_cold, cold_keys[i])
            newest = max(int(HEADER.unpack_from(hot)[4]), int(new.max_event_ts[i]))
            first_kept = int(first_kept_tile(newest, view.retention_ms, view.interval_ms))
            head = leading_tiles(cold, 2) + leading_tiles(hot, 2)
            # The oldest tile whose expiry changes the record: a lifetime window's
            # compacted partial (the first) is kept however old it is, and folds a new
            # tile that is already expired.
            expiring = min(head[1] if view.has_lifetime_window else head[0], int(first_new[i]))
            newest_cold = tile_span(cold)
            if newest_cold is None or int(first_new[i]) <= newest_cold[1] or first_kept > expiring:
                to_merge[i] = join_parts(cold, hot)
                joined.add(i)
            else:
                to_merge[i] = with_cold_flag(hot, False)
                kept[i] = cold
        return cls(to_merge, kept, joined)

    def split(self, records: list[bytes]) -> tuple[list[bytes], list[tuple[int, bytes | None]]]:
        """The merged ``records`` as stored: the hot part or whole record of each entity,
        and ``(entity, cold part or None: deleted)`` of every cold part that changes."""
        hot: list[bytes] = []
        cold: list[tuple[int, bytes | None]] = []
        for i, record in enumerate(records):
            stays = self.kept.get(i)
            if stays is None:
                newer, older = stored_parts(record)
                hot.append(newer)
                if older is not None or i in self.joined:
                    cold.append((i, older))
                continue
            newer, older = stored_parts(record)
            if older is None:  # the hot part still fits: the cold part stays as it is
                hot.append(with_cold_flag(record, True))
                continue
            hot.append(newer)
            cold.append((i, join_parts(stays, older)))
        return hot, cold


def stored_parts(record: bytes) -> tuple[bytes, bytes | None]:
    """``(tile record, cold part or None)`` to store for a whole ``record``: itself, or
    past ``SPILL_ABOVE`` tiles its newest ``HOT_KEEP`` tiles as a hot part and the rest
    as a cold part."""
    n_tiles = HEADER.unpack_from(record)[3]
    if n_tiles <= SPILL_ABOVE:
        return record, None
    older, newer = split_record(record, n_tiles - HOT_KEEP)
    return newer, older

"""Merge a batch's new tile partials into many entities' stored tile sets at once.

The write path touches thousands of entities per batch. Merging them one entity at a
time costs tens of microseconds each in numpy call overhead, so this module works on
all entities of a batch together: stored records are decoded into one flat array,
the batch's partials are merged in with one sort, retention is applied with one
mask, and only the final split into per-entity records is a Python loop.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import merge_partials
from engine.kernel.codec import HEADER, RECORD_VERSION, decode_tiles
from engine.kernel.layout import PartialLayout

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

NO_EVENT_TS = -(2**63)


@dataclass(frozen=True)
class FlatTiles:
    """Tile sets of many entities, flattened: row ``i`` belongs to entity ``codes[i]``.

    Rows are sorted by (code, tile). ``max_event_ts[c]`` is the newest event time of
    entity code ``c`` (``NO_EVENT_TS`` when unknown).
    """

    codes: Int64Array
    tiles: Int64Array
    partials: Float64Array
    max_event_ts: Int64Array


def decode_many(layout: PartialLayout, records: Sequence[bytes | None]) -> FlatTiles:
    """Decode the stored record of entity code ``i`` from ``records[i]`` (None: no record)."""
    tiles_parts: list[Int64Array] = []
    partial_parts: list[Float64Array] = []
    code_parts: list[Int64Array] = []
    max_ts = np.full(len(records), NO_EVENT_TS, dtype=np.int64)
    for code, record in enumerate(records):
        if record is None:
            continue
        tiles, partials, newest = decode_tiles(record, expected_width=layout.width)
        max_ts[code] = newest
        if len(tiles):
            tiles_parts.append(tiles)
            partial_parts.append(partials)
            code_parts.append(np.full(len(tiles), code, dtype=np.int64))
    if not tiles_parts:
        empty = np.empty(0, dtype=np.int64)
        return FlatTiles(empty, empty.copy(), np.empty((0, layout.width)), max_ts)
    return FlatTiles(
        np.concatenate(code_parts),
        np.concatenate(tiles_parts),
        np.concatenate(partial_parts),
        max_ts,
    )


def merge_flat(layout: PartialLayout, stored: FlatTiles, new: FlatTiles) -> FlatTiles:
    """Union of two flat tile sets over the same entity codes, merging shared tiles.

    Within each input a (code, tile) pair appears at most once, so after a stable
    sort a shared pair is two adjacent rows: stored first, new second.
    """
    codes = np.concatenate([stored.codes, new.codes])
    tiles = np.concatenate([stored.tiles, new.tiles])
    partials = np.concatenate([stored.partials, new.partials])
    order = np.lexsort((tiles, codes))  # lexsort is stable: stored rows stay first
    codes, tiles, partials = codes[order], tiles[order], partials[order]
    dup = np.flatnonzero((codes[1:] == codes[:-1]) & (tiles[1:] == tiles[:-1]))
    if len(dup):
        partials[dup] = merge_partials(layout, partials[dup], partials[dup + 1])
        keep = np.ones(len(codes), dtype=bool)
        keep[dup + 1] = False
        codes, tiles, partials = codes[keep], tiles[keep], partials[keep]
    return FlatTiles(codes, tiles, partials, np.maximum(stored.max_event_ts, new.max_event_ts))


def retain(flat: FlatTiles, retention_ms: int, interval_ms: int) -> FlatTiles:
    """Drop every tile whose end is more than ``retention_ms`` behind its entity's newest event.

    Same rule as :func:`engine.kernel.aggregate.apply_retention`, for many entities.
    """
    if not len(flat.codes):
        return flat
    newest = flat.max_event_ts[flat.codes]
    oldest_allowed_end = newest - retention_ms
    first_kept = -((-oldest_allowed_end) // interval_ms) - 1
    keep = (flat.tiles >= first_kept) | (newest == NO_EVENT_TS)
    if bool(keep.all()):
        return flat
    return FlatTiles(flat.codes[keep], flat.tiles[keep], flat.partials[keep], flat.max_event_ts)


_HEADER: struct.Struct = HEADER


def encode_many(layout: PartialLayout, flat: FlatTiles, n_entities: int) -> list[bytes]:
    """One packed tile record per entity code ``0 .. n_entities - 1`` (codec format)."""
    bounds = np.searchsorted(flat.codes, np.arange(n_entities + 1))
    tiles_bytes = flat.tiles.astype("<i8", copy=False)
    partial_bytes = flat.partials.astype("<f8", copy=False)
    width = layout.width
    out: list[bytes] = []
    pack = _HEADER.pack
    starts = bounds[:-1].tolist()
    ends = bounds[1:].tolist()
    max_ts = flat.max_event_ts.tolist()
    for code in range(n_entities):
        lo, hi = starts[code], ends[code]
        out.append(
            pack(RECORD_VERSION, 0, width, hi - lo, max_ts[code])
            + tiles_bytes[lo:hi].tobytes()
            + partial_bytes[lo:hi].tobytes()
        )
    return out

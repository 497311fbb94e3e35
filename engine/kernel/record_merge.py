"""The write path's merge of a batch into stored records, carrying unchanged sketch
blobs as byte ranges.

A streaming batch mostly appends tiles: the blobs of a record's stored tiles stay as
they are, or expire. Decoding every one of them into a ``bytes`` object and joining
them back (``decode_many`` -> ``merge_flat`` -> ``retain`` -> ``encode_many``) cost
about a microsecond per record for a view with a few sketch slots. :func:`merge_records`
gives the same bytes while turning into ``bytes`` only the blobs a batch changes (a
tile the batch shares with the record, the expired tiles a lifetime window folds); the
rest are copied as the one or two byte runs each record's blobs already form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from engine.kernel.batch_merge import (
    FlatTiles,
    decode_many,
    decode_rows,
    encode_many,
    encode_rows,
    expired_rows,
    merge_flat,
    merge_plan,
    retain,
)
from engine.kernel.blob_rows import BlobRows
from engine.kernel.layout import PartialLayout
from engine.kernel.sketches import merge_blobs, merge_rows
from engine.kernel.tile_retention import fold_expired, fold_plan


def merge_records(
    layout: PartialLayout,
    records: Sequence[bytes | None],
    new: FlatTiles,
    retention_ms: int,
    interval_ms: int,
    compact: bool,
) -> list[bytes]:
    """The records of entity codes ``0 .. len(records) - 1`` after merging ``new`` into
    the stored ``records`` (None: no record) and applying retention (``compact``: fold
    expired tiles, for a view with a lifetime window): byte for byte
    ``encode_many(retain(merge_flat(decode_many(records), new)))``."""
    n_slots = len(layout.sketch_slots)
    stored, stored_blobs = decode_rows(layout, records) if n_slots else (decode_many(layout, records), None)
    plan = merge_plan(stored, new) if n_slots else None
    if stored_blobs is None or plan is None:
        if stored_blobs is not None:  # pairs beyond one int64's numbering: merge_flat sorts (rare)
            stored = FlatTiles(stored.codes, stored.tiles, stored.partials, stored.max_event_ts, stored_blobs.objects())
        merged = merge_flat(layout, stored, new)
        merged = retain(merged, retention_ms, interval_ms, layout if compact else None)
        return encode_many(layout, merged, len(records))

    # The float64 partials take the usual path; only the blobs are handled here.
    core_layout = dataclasses.replace(layout, sketch_slots=())
    core = merge_flat(core_layout, stored, FlatTiles(new.codes, new.tiles, new.partials, new.max_event_ts), plan)
    new_blobs = new.blobs(n_slots)
    n_stored, n_only = len(stored.codes), len(plan.only_b)
    parts = [stored_blobs, BlobRows.of_objects(new_blobs[plan.only_b])]
    source = np.empty(plan.total, dtype=np.int64)  # output row -> row of the parts, concatenated
    source[plan.slot_a] = np.arange(n_stored)
    source[plan.slot_b] = n_stored + np.arange(n_only)
    if len(plan.rows_a):
        shared = merge_blobs(layout.sketch_slots, stored_blobs.objects(plan.rows_a), new_blobs[plan.shared])
        parts.append(BlobRows.of_objects(shared))
        source[plan.slot_a[plan.rows_a]] = n_stored + n_only + np.arange(len(plan.rows_a))
    pool = BlobRows.concat(parts)

    expired = expired_rows(core, retention_ms, interval_ms)
    if expired is not None and not compact:
        core, source = core.with_rows(~expired), source[~expired]
    elif expired is not None:
        fold = fold_plan(core.codes, expired)
        codes, tiles, partials, _ = fold_expired(core_layout, core.codes, core.tiles, core.partials, expired)
        core = FlatTiles(codes, tiles, partials, core.max_event_ts)
        if fold is not None:
            folded = merge_rows(layout.sketch_slots, pool.objects(source[fold.rows]), fold.run_of_row, len(fold.starts))
            source = source.copy()
            source[fold.newest_expired] = len(pool) + np.arange(len(fold.starts))
            pool = BlobRows.concat([pool, BlobRows.of_objects(folded)])
            source = source[fold.keep]
    return encode_rows(layout, core, pool.take(source), len(records))

"""merge_records (the write path's merge with blobs kept as byte ranges) must write
exactly the bytes of decode_many -> merge_flat -> retain -> encode_many, for every kind
of sketch slot, shared tiles, expiring tiles, lifetime folds and records written
before the sketch section existed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import aggregate_batch
from engine.kernel.aggregate import aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat, retain
from engine.kernel.exceptions import TileCodecError
from engine.kernel.layout import AggregationSpec
from engine.kernel.record_merge import merge_records
from engine.kernel.view_spec import ViewSpec
from engine.timefmt import NO_EVENT_TS
from tests.kernel.sketch_view_support import ENTITIES, SPEC, G, event, make_batch

# Every kind, a lifetime window and a retention of a few tiles: batches over 24 tiles
# expire (and fold) tiles all the time.
SHORT = ViewSpec(
    G,
    ("amount", "merchant"),
    (
        AggregationSpec("n", "amount", "count", 2 * G),
        AggregationSpec("n_life", "amount", "count", None),
        AggregationSpec("cd", "merchant", "count_distinct", 2 * G, params=(("max_distinct", 3),)),
        AggregationSpec("hll", "merchant", "count_distinct_approx", None, params=(("precision", 6),)),
        AggregationSpec("last2", "merchant", "last_n", 2 * G, params=(("n", 2),)),
        AggregationSpec("first2", "amount", "first_n", None, params=(("n", 2),)),
        AggregationSpec("distinct2", "merchant", "last_distinct_n", 2 * G, params=(("n", 2),)),
        AggregationSpec("p90", "amount", "percentile", None, params=(("q", 0.9),)),
    ),
    3 * G,
)


def _new_tiles(spec: ViewSpec, batch: dict[str, np.ndarray]) -> FlatTiles:
    layout = spec.layout
    codes, ts, pos = batch["entity"], batch["e"], batch["pos"]
    tiles = ts // spec.interval_ms
    values = np.stack([batch["amount"], np.zeros(len(ts))], axis=1)
    codes_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, ts, pos, values)
    blobs = aggregate_sketches(layout, codes, tiles, ts, pos, {c: batch[c] for c in layout.sketch_columns})
    batch_max = np.full(ENTITIES, NO_EVENT_TS, dtype=np.int64)
    np.maximum.at(batch_max, codes, ts)
    return FlatTiles(codes_u, tiles_u, partials, batch_max, blobs)


def _reference(spec: ViewSpec, records: list[bytes | None], new: FlatTiles, compact: bool) -> list[bytes]:
    layout = spec.layout
    merged = merge_flat(layout, decode_many(layout, records), new)
    merged = retain(merged, spec.retention_ms, spec.interval_ms, layout if compact else None)
    return encode_many(layout, merged, len(records))


def _stream_both(spec: ViewSpec, batches: list[list[dict[str, Any]]], compact: bool, start: list[bytes | None]) -> None:
    ours: list[bytes | None] = list(start)
    theirs: list[bytes | None] = list(start)
    pos = 0
    for batch in batches:
        new = _new_tiles(spec, make_batch(batch, pos))
        pos += len(batch)
        got = merge_records(spec.layout, ours, new, spec.retention_ms, spec.interval_ms, compact)
        want = _reference(spec, theirs, new, compact)
        assert got == want
        ours, theirs = list(got), list(want)


batches = st.lists(st.lists(event, min_size=0, max_size=12), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(batches, st.booleans(), st.booleans())
def test_merge_records_writes_the_bytes_of_the_object_path(
    history: list[list[dict[str, Any]]], compact: bool, short: bool
) -> None:
    _stream_both(SHORT if short else SPEC, history, compact, [None] * ENTITIES)


@settings(max_examples=60, deadline=None)
@given(batches)
def test_merge_records_over_records_without_a_section(history: list[list[dict[str, Any]]]) -> None:
    # Records written before the sketch section existed: tiles and partials, no flag.
    layout = SHORT.layout
    tiles = np.array([3, 4, 5], dtype=np.int64)
    old = FlatTiles(
        np.array([0, 0, 1], dtype=np.int64), tiles, np.ones((3, layout.width)), np.array([5 * G, 4 * G], dtype=np.int64)
    )
    start: list[bytes | None] = list(encode_many(layout, old, ENTITIES))
    assert all(r is not None and r[1] == 0 for r in start)  # no FLAG_SKETCHES
    _stream_both(SHORT, history, True, start)


def test_merge_records_refuses_a_corrupt_record_like_decode_many() -> None:
    layout = SHORT.layout
    new = _new_tiles(SHORT, make_batch([{"entity": 0, "e": G, "amount": 1.0, "merchant": "m1"}], 0))
    good = merge_records(layout, [None, None], new, SHORT.retention_ms, G, True)
    corrupt = good[0][:-8]
    with pytest.raises(TileCodecError) as ours:
        merge_records(layout, [corrupt, None], new, SHORT.retention_ms, G, True)
    with pytest.raises(TileCodecError) as theirs:
        decode_many(layout, [corrupt, None])
    assert str(ours.value) == str(theirs.value)

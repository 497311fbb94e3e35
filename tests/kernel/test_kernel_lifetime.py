"""Lifetime windows (``window_ms=None``): retention folds expired tiles into one
compacted partial per entity, and every path still answers W(k, t) = every applied
event with e <= t (docs/semantics.md, "Sketch functions" and section 7)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import AggregationSpec, ViewSpec, aggregate_batch, encode_positions, evaluate
from engine.kernel.batch_merge import (
    FlatTiles,
    decode_many,
    encode_many,
    merge_flat,
    retain,
)
from engine.kernel.codec import decode_tiles
from engine.kernel.exceptions import KernelSpecError
from engine.kernel.layout import LIFETIME_WINDOW_TILES, PARTIAL_FUNCTIONS
from engine.kernel.tile_retention import apply_retention, first_kept_tile, fold_expired
from engine.kernel.window_many import evaluate_many
from engine.kernel.window_plan import WindowPlan, decode_record
from engine.timefmt import NO_EVENT_TS
from tests.kernel.kernel_support import COLUMN, assert_same_value
from tests.reference import apply_watermark, reference_value

G = 1_000
ENTITIES = 3
LATENESS = 2_000
BASE = 1_700_000_000_000  # an event time after 2000-01-01


def lifetime_spec(finite_tiles: int) -> ViewSpec:
    """Every function over a lifetime window, plus one finite count that sets retention."""
    aggregations = tuple(AggregationSpec(f"{f}_lifetime", COLUMN, f, None) for f in PARTIAL_FUNCTIONS)
    finite = AggregationSpec("count_finite", COLUMN, "count", finite_tiles * G)
    return ViewSpec(G, (COLUMN,), (*aggregations, finite), finite_tiles * G + LATENESS + G)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """Events in arrival order (offsets increase per partition) and batch cut points."""
    n = draw(st.integers(1, 60))
    events: list[dict[str, Any]] = []
    next_offset = [0, 0]
    clock = BASE
    for _ in range(n):
        clock += draw(st.integers(-3 * G, 4 * G))  # mostly forward, sometimes late
        partition = draw(st.integers(0, 1))
        events.append(
            {
                "entity": draw(st.integers(0, ENTITIES - 1)),
                "e": clock,
                "partition": partition,
                "offset": next_offset[partition],
                # Whole numbers keep sums exact, so folding order cannot hide a wrong answer.
                "value": float(draw(st.integers(-1_000, 1_000))),
            }
        )
        next_offset[partition] += 1
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=6)))
    return events, cuts


def _stream(spec: ViewSpec, batches: list[list[dict[str, Any]]]) -> list[bytes]:
    """The write path of engine/apply.py: merge each batch into the stored records,
    then retain with compaction, then encode."""
    layout = spec.layout
    records: list[bytes | None] = [None] * ENTITIES
    for batch in batches:
        if not batch:
            continue
        codes = np.array([ev["entity"] for ev in batch], dtype=np.int64)
        event_ts = np.array([ev["e"] for ev in batch], dtype=np.int64)
        positions = encode_positions([ev["partition"] for ev in batch], [ev["offset"] for ev in batch])
        values = np.array([[ev["value"]] for ev in batch], dtype=np.float64)
        codes_u, tiles_u, partials = aggregate_batch(layout, codes, event_ts // G, event_ts, positions, values)
        batch_max = np.full(ENTITIES, NO_EVENT_TS, dtype=np.int64)
        np.maximum.at(batch_max, codes, event_ts)
        stored = decode_many(layout, records)
        merged = merge_flat(layout, stored, FlatTiles(codes_u, tiles_u, partials, batch_max))
        merged = retain(merged, spec.retention_ms, G, layout)
        records = list(encode_many(layout, merged, ENTITIES))
    return [r if r is not None else b"" for r in records]


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.integers(0, 5 * G), st.integers(1, 3))
def test_lifetime_values_after_compaction_match_the_reference(
    stream: tuple[list[dict[str, Any]], list[int]], after: int, finite_tiles: int
) -> None:
    events, cuts = stream
    spec = lifetime_spec(finite_tiles)
    applied = apply_watermark(events, LATENESS)
    bounds = [0, *cuts, len(applied)]
    batches = [applied[a:b] for a, b in pairwise(bounds)]
    records = _stream(spec, batches)
    plan = WindowPlan(spec)
    for entity in range(ENTITIES):
        mine = [ev for ev in applied if ev["entity"] == entity]
        if not mine:
            continue
        record = records[entity]
        tiles, partials, max_ts = decode_tiles(record, expected_width=spec.layout.width)
        # One compacted partial at most: every other stored tile is within retention.
        first_kept = first_kept_tile(max_ts, spec.retention_ms, G)
        assert int((tiles < first_kept).sum()) <= 1, (tiles.tolist(), first_kept)
        # Condition (1) of "Online reads and as_of": no applied event after t.
        t = max_ts + after
        by_numpy = evaluate(spec, tiles, partials, t)
        by_plan, _ = plan.evaluate(decode_record(record, spec.layout.width), t)
        many = evaluate_many(spec, tiles, partials, [0, len(tiles)], [0], t).row(0)
        for agg, planned in zip(spec.aggregations, by_plan, strict=True):
            if agg.window_ms is not None:
                continue
            want = reference_value(applied, entity, t, agg.function, None, G)
            what = f"{agg.output_name} entity {entity} as of {t}"
            assert_same_value(by_numpy.values[agg.output_name], want, what + " (evaluate)")
            assert_same_value(planned, want, what + " (WindowPlan)")
            assert_same_value(many.values[agg.output_name], want, what + " (evaluate_many)")


def test_folding_at_once_or_batch_by_batch_gives_identical_bytes() -> None:
    """Backfill folds many expired tiles in one trim, streaming a few per batch; both
    merge left to right in tile order, so the compacted partial is bit-identical."""
    spec = lifetime_spec(1)
    rng = np.random.default_rng(7)
    events = [
        {
            "entity": int(rng.integers(0, ENTITIES)),
            "e": BASE + i * 700,
            "partition": 0,
            "offset": i,
            "value": float(rng.normal()),
        }
        for i in range(300)
    ]
    one_batch = _stream(spec, [events])
    per_event = _stream(spec, [[ev] for ev in events])
    assert one_batch == per_event


def test_fold_expired_keeps_one_compacted_partial_per_entity() -> None:
    spec = lifetime_spec(1)
    layout = spec.layout
    codes = np.array([0, 0, 0, 0, 1, 1], dtype=np.int64)
    tiles = np.array([1, 2, 3, 10, 4, 9], dtype=np.int64)
    partials = layout.empty(6)
    partials[:, 0] = [1, 2, 3, 4, 5, 6]  # counts
    expired = np.array([True, True, True, False, True, False])
    kept_codes, kept_tiles, kept, blobs = fold_expired(layout, codes, tiles, partials, expired)
    assert kept_codes.tolist() == [0, 0, 1, 1] and kept_tiles.tolist() == [3, 10, 4, 9]
    assert kept[:, 0].tolist() == [6.0, 4.0, 5.0, 6.0] and blobs is None
    # Without a lifetime window the same tiles are dropped.
    dropped_tiles, _ = apply_retention(tiles[:4], partials[:4], 10 * G + 500, 2 * G, G)
    assert dropped_tiles.tolist() == [10]


def test_lifetime_window_spec() -> None:
    spec = lifetime_spec(2)
    assert spec.has_lifetime_window
    assert spec.max_finite_window_tiles == 2
    assert spec.window_tiles[0] == LIFETIME_WINDOW_TILES
    assert not ViewSpec(G, (COLUMN,), (AggregationSpec("c", COLUMN, "count", G),), G).has_lifetime_window
    with pytest.raises(KernelSpecError, match="window_ms"):
        AggregationSpec("c", COLUMN, "count", 0)

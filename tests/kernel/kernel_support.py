"""Shared builders for the kernel tests: events -> per-entity tile sets via the kernel."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from engine.kernel import (
    AggregationSpec,
    PartialLayout,
    ViewSpec,
    aggregate_batch,
    encode_positions,
    merge_tile_sets,
)
from engine.kernel.aggregate import aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat, retain
from engine.kernel.layout import PARTIAL_FUNCTIONS
from engine.timefmt import NO_EVENT_TS

COLUMN = "amount"
LAYOUT = PartialLayout((COLUMN,), tracks_first_event=True)  # make_spec has first_seen

Event = dict[str, Any]
TileSet = tuple[np.ndarray, np.ndarray]


def make_spec(
    interval_ms: int,
    window_tiles: Sequence[int],
    default: float | None = None,
    *,
    int_column: bool = False,
    functions: Sequence[str] = PARTIAL_FUNCTIONS,
) -> ViewSpec:
    """A one-column view with every function (of ``functions``) for every window length
    (in tiles); ``int_column``: the column is an int field."""
    aggregations = tuple(
        AggregationSpec(f"{function}_{w}", COLUMN, function, w * interval_ms, default, int_column=int_column)
        for function in functions
        for w in window_tiles
    )
    retention = max(window_tiles) * interval_ms + interval_ms
    return ViewSpec(interval_ms, (COLUMN,), aggregations, retention)


def aggregate_events(events: Sequence[Event], interval_ms: int) -> tuple[np.ndarray, ...]:
    """One aggregate_batch call over ``events`` (entity codes are the entity ints)."""
    e = np.array([ev["e"] for ev in events], dtype=np.int64)
    return aggregate_batch(
        LAYOUT,
        np.array([ev["entity"] for ev in events], dtype=np.int64),
        e // interval_ms,
        e,
        encode_positions(
            np.array([ev["partition"] for ev in events], dtype=np.int64),
            np.array([ev["offset"] for ev in events], dtype=np.int64),
        ),
        np.array([[ev["value"]] for ev in events], dtype=np.float64).reshape(len(events), 1),
    )


def empty_tile_set() -> TileSet:
    return np.empty(0, dtype=np.int64), np.empty((0, LAYOUT.width), dtype=np.float64)


def build_state(batches: Sequence[Sequence[Event]], interval_ms: int) -> dict[int, TileSet]:
    """Aggregate each batch, then merge every batch's tiles into per-entity tile sets."""
    state: dict[int, TileSet] = {}
    for batch in batches:
        codes, tiles, partials = aggregate_events(batch, interval_ms)
        for code in np.unique(codes):
            mine = codes == code
            old_tiles, old_partials = state.get(int(code), empty_tile_set())
            state[int(code)] = merge_tile_sets(LAYOUT, old_tiles, old_partials, tiles[mine], partials[mine])
    return state


def assert_same_value(got: object, want: object, what: str) -> None:
    """Exact for None and ints (counts), isclose(rel 1e-9, abs 1e-9) for floats."""
    if want is None or got is None:
        assert got is None and want is None, f"{what}: got {got!r}, want {want!r}"
    elif isinstance(want, int) and not isinstance(want, bool):
        assert isinstance(got, int) and got == want, f"{what}: got {got!r}, want {want!r}"
    else:
        assert isinstance(got, float), f"{what}: got {got!r} ({type(got).__name__})"
        assert isinstance(want, float)
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), f"{what}: got {got!r}, want {want!r}"


ENTITIES = (0, 1, 2)
VALUES = st.one_of(
    st.sampled_from([-5.0, -0.5, 0.0, 2.5, 1000.0]),  # equal values are common
    st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 3)),
)


# An int column's values: every int a field read as a double may hold (up to +-2**53),
# equal values common.
INT_VALUES = st.one_of(
    st.sampled_from([-(2**53), -7, 0, 3, 2**53 - 1, 2**53]),
    st.integers(-(2**53), 2**53),
)


@st.composite
def histories(draw: st.DrawFn, max_events: int = 40, values: st.SearchStrategy[Any] = VALUES) -> dict[str, Any]:
    """Events of several entities and partitions, split into batches in random order."""
    interval = draw(st.sampled_from([5, 10, 60]))
    base = draw(st.integers(0, 10**6)) * interval + draw(st.integers(0, interval - 1))
    span = draw(st.integers(1, 12)) * interval
    n = draw(st.integers(0, max_events))
    events: list[Event] = []
    next_offset = {0: 0, 1: 0, 2: 0}
    for _ in range(n):
        partition = draw(st.integers(0, 2))
        next_offset[partition] += draw(st.integers(1, 3))
        events.append(
            {
                "entity": draw(st.sampled_from(ENTITIES)),
                "e": draw(st.integers(base, base + span - 1)),  # small range: duplicate times
                "partition": partition,
                "offset": next_offset[partition],
                "value": draw(values),
            }
        )
    order = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    batches = [[events[i] for i in order[a:b]] for a, b in itertools.pairwise(bounds)]
    windows = sorted(draw(st.sets(st.integers(1, 14), min_size=1, max_size=3)))
    return {"interval": interval, "events": events, "batches": batches, "windows": windows}


def stream_sketch_records(
    spec: ViewSpec, n_entities: int, batches: Sequence[dict[str, np.ndarray]], *, compact: bool = True
) -> list[bytes | None]:
    """The write path over views with sketch slots: each batch (arrays ``entity``, ``e``,
    ``pos``, and one per column: the decoded values) is aggregated, merged into the
    entities' records and, with ``compact``, trimmed (lifetime windows folded)."""
    layout = spec.layout
    records: list[bytes | None] = [None] * n_entities
    for batch in batches:
        codes, ts, pos = batch["entity"], batch["e"], batch["pos"]
        raw = {c: batch[c] for c in layout.sketch_columns}
        # Float partials of numeric columns; a string column's are never read (count only).
        numeric = [
            batch[c].astype(np.float64) if batch[c].dtype.kind in "iuf" else np.zeros(len(ts)) for c in layout.columns
        ]
        values = np.stack(numeric, axis=1)
        codes_u, tiles_u, partials = aggregate_batch(layout, codes, ts // spec.interval_ms, ts, pos, values)
        blobs = aggregate_sketches(layout, codes, ts // spec.interval_ms, ts, pos, raw)
        batch_max = np.full(n_entities, NO_EVENT_TS, dtype=np.int64)
        np.maximum.at(batch_max, codes, ts)
        new = FlatTiles(codes_u, tiles_u, partials, batch_max, blobs)
        merged = merge_flat(layout, decode_many(layout, records), new)
        if compact:
            merged = retain(merged, spec.retention_ms, spec.interval_ms, layout)
        records = list(encode_many(layout, merged, n_entities))
    return records

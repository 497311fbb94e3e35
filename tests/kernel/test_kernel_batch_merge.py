"""merge_flat: the union of stored and new flat tile sets must give exactly the rows
(bit for bit) of a per-pair dictionary merge, on the linear-merge path and on the
sorting fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.aggregate import merge_partials
from engine.kernel.batch_merge import FlatTiles, merge_flat
from engine.kernel.layout import PartialLayout
from engine.timefmt import NO_EVENT_TS

LAYOUT = PartialLayout(("amount", "fee"))


def _flat(rng: np.random.Generator, pairs: set[tuple[int, int]], n_codes: int) -> FlatTiles:
    ordered = sorted(pairs)
    codes = np.array([c for c, _ in ordered], dtype=np.int64)
    tiles = np.array([t for _, t in ordered], dtype=np.int64)
    partials = rng.standard_normal((len(ordered), LAYOUT.width))
    partials[:, 0] = rng.integers(1, 5, len(ordered))  # counts of column 0
    partials[:, 8] = rng.integers(1, 5, len(ordered))  # counts of column 1
    max_ts = rng.integers(0, 10**12, n_codes)
    max_ts[rng.random(n_codes) < 0.3] = NO_EVENT_TS
    return FlatTiles(codes, tiles, partials, max_ts)


def _reference(a: FlatTiles, b: FlatTiles) -> FlatTiles:
    rows = {(int(c), int(t)): a.partials[i] for i, (c, t) in enumerate(zip(a.codes, a.tiles, strict=True))}
    for i, (c, t) in enumerate(zip(b.codes.tolist(), b.tiles.tolist(), strict=True)):
        old = rows.get((c, t))
        new = b.partials[i]
        rows[(c, t)] = new if old is None else merge_partials(LAYOUT, old[None], new[None])[0]
    keys = sorted(rows)
    partials = np.array([rows[k] for k in keys]).reshape(len(keys), LAYOUT.width)
    return FlatTiles(
        np.array([c for c, _ in keys], dtype=np.int64),
        np.array([t for _, t in keys], dtype=np.int64),
        partials,
        np.maximum(a.max_event_ts, b.max_event_ts),
    )


def _assert_same(got: FlatTiles, want: FlatTiles) -> None:
    assert np.array_equal(got.codes, want.codes)
    assert np.array_equal(got.tiles, want.tiles)
    assert got.partials.tobytes() == want.partials.tobytes()
    assert np.array_equal(got.max_event_ts, want.max_event_ts)


pair_sets = st.sets(st.tuples(st.integers(0, 6), st.integers(-5, 12)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(pair_sets, pair_sets, st.integers(0, 2**32 - 1))
def test_merge_flat_equals_sorting_merge(stored: set[tuple[int, int]], new: set[tuple[int, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = _flat(rng, stored, 7), _flat(rng, new, 7)
    _assert_same(merge_flat(LAYOUT, a, b), _reference(a, b))


@pytest.mark.parametrize("tile_span", [50, 2**61])  # the second cannot be numbered in an int64
def test_merge_flat_many_entities(tile_span: int) -> None:
    rng = np.random.default_rng(tile_span % 1000)
    stored = {(int(c), int(t)) for c, t in zip(rng.integers(0, 5000, 20000), rng.integers(0, 50, 20000), strict=True)}
    new = {(int(c), int(t)) for c, t in zip(rng.integers(0, 5000, 8000), rng.integers(30, 60, 8000), strict=True)}
    new.add((4999, tile_span))
    a, b = _flat(rng, stored, 5000), _flat(rng, new, 5000)
    _assert_same(merge_flat(LAYOUT, a, b), _reference(a, b))

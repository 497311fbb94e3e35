"""group_order: the fast (entity, tile, time, position) permutation of aggregate_batch
must be exactly numpy's lexsort, on every path (radix, merge sort, unsorted input)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.aggregate import group_order


def _lexsort(codes: np.ndarray, tiles: np.ndarray, ts: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.lexsort((pos, ts, tiles, codes))


@pytest.mark.parametrize(
    ("n_codes", "tile_span", "in_time_order"),
    [
        (50, 10, True),  # key < 2**16: one radix pass
        (60_000, 40, True),  # key < 2**32: two radix passes
        (2**20, 2**13, True),  # key >= 2**32: merge sort
        (60_000, 40, False),  # events out of time order: lexsort on the key
    ],
)
def test_group_order_equals_lexsort(n_codes: int, tile_span: int, in_time_order: bool) -> None:
    rng = np.random.default_rng(n_codes + tile_span)
    n = 200_000
    codes = rng.integers(0, n_codes, n)
    ts = 1_780_000_000_000 + rng.integers(0, tile_span * 60_000, n)
    if in_time_order:
        ts = np.sort(ts)
    tiles = ts // 60_000
    # Equal event times are frequent at this density; positions break them.
    pos = (5 << 40) + rng.permutation(n) if not in_time_order else (5 << 40) + np.arange(n)
    got = group_order(codes, tiles, ts, pos)
    assert np.array_equal(got, _lexsort(codes, tiles, ts, pos))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(-3, 3), st.integers(0, 4), st.integers(0, 3)),
        max_size=40,
    ),
    st.booleans(),
)
def test_group_order_small_inputs(rows: list[tuple[int, int, int, int]], sort_time: bool) -> None:
    if sort_time:
        rows = sorted(rows, key=lambda r: (r[2], r[3]))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    codes, tiles, ts, pos = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
    assert np.array_equal(group_order(codes, tiles, ts, pos), _lexsort(codes, tiles, ts, pos))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 3)),
        max_size=60,
    ),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_group_order_of_events_in_time_order_per_entity(
    rows: list[tuple[int, int, int]], buckets: int, tile_ms: int
) -> None:
    """History replay's order: by entity bucket, then (event time, position) within it,
    so the batch as a whole is not in time order but each entity's events are (the
    stable sort by (entity, tile) alone is then the lexsort); a few rows swapped
    afterwards break that and must take the full sort."""
    for swap in (False, True):
        ordered = sorted(rows, key=lambda r: (r[0] % buckets, r[1], r[2]))
        if swap and len(ordered) > 2:
            ordered[0], ordered[-1] = ordered[-1], ordered[0]
        arr = np.array(ordered, dtype=np.int64).reshape(-1, 3)
        codes, ts, pos = arr[:, 0], arr[:, 1], arr[:, 2]
        tiles = ts // tile_ms
        assert np.array_equal(group_order(codes, tiles, ts, pos), _lexsort(codes, tiles, ts, pos))


def test_group_order_of_a_replay_slice_equals_lexsort() -> None:
    # 200k events of 20k entities in 512 buckets, each bucket in time order: a slice.
    rng = np.random.default_rng(7)
    n = 200_000
    codes = rng.integers(0, 20_000, n)
    ts = 1_780_000_000_000 + rng.integers(0, 40 * 60_000, n)
    order = np.lexsort((ts, codes % 512))
    codes, ts = codes[order], ts[order]
    pos = (5 << 40) + np.arange(n)
    tiles = ts // 60_000
    assert np.array_equal(group_order(codes, tiles, ts, pos), _lexsort(codes, tiles, ts, pos))

"""The kinds' batch builds against the algorithms they replaced (session 16, issue 16's
ingest budget): HyperLogLog ranks from the float exponent field instead of a binary
search, the list kinds' kept entries found from the group bounds instead of a sort,
last_distinct_n's values numbered in one pass, exact distinct sets sorted by one
argsort instead of lexsort, and string columns the memo holds entirely hashed and
encoded without a type check; group bounds from counts instead of binary searches.
The bytes must be the same for any batch: the references below are the replaced code."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.blob_buffers import group_bounds, lex_order
from engine.kernel.distinct_set import _sets_of
from engine.kernel.exceptions import KernelInputError
from engine.kernel.hyperloglog import _hll_blobs, leading_zeros64
from engine.kernel.sketch_slot import Int64Array, SketchSlot, group_ids
from engine.kernel.value_hash import canonical_bytes, hash_bytes, hash_values, value_bytes
from engine.kernel.value_lists import _blobs

NUMBERS = st.one_of(
    st.integers(-5, 5).map(float),
    st.floats(-1e6, 1e6),
    st.floats(-1e300, 1e300),
    st.floats(-1e-300, 1e-300),
    st.just(0.0),
)
WORDS = st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "é", ""])


@st.composite
def batches(draw: st.DrawFn, numeric: bool) -> tuple[npt.NDArray[Any], Int64Array, Int64Array, Int64Array]:
    """(values, event times, positions, group starts) of events sorted by group, each
    group in (event time, position) order, as ``build_sketches`` hands them to a kind."""
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    rows: list[tuple[int, int, Any]] = []
    position = 0
    for size in sizes:
        events = draw(
            st.lists(st.tuples(st.integers(0, 50), NUMBERS if numeric else WORDS), min_size=size, max_size=size)
        )
        for t, v in sorted(events, key=lambda e: e[0]):
            rows.append((t, position, v))
            position += 1
    values = np.array([r[2] for r in rows], dtype=np.float64 if numeric else object)
    starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    return values, ts, np.array([r[1] for r in rows], dtype=np.int64), starts


def _reference_leading_zeros64(x: npt.NDArray[np.uint64]) -> Int64Array:
    x = x.astype(np.uint64, copy=True)
    n = np.zeros(len(x), dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        empty_top = (x >> np.uint64(64 - shift)) == 0
        n[empty_top] += shift
        x[empty_top] <<= np.uint64(shift)
    n[x == 0] = 64
    return n


def _reference_hll_build(precision: int, values: npt.NDArray[Any], starts: Int64Array) -> list[bytes]:
    hashes = hash_values(values)
    index = (hashes >> np.uint64(64 - precision)).astype(np.int64)
    rank = np.minimum(_reference_leading_zeros64(hashes << np.uint64(precision)) + 1, 64 - precision + 1)
    return _hll_blobs(index, rank, group_ids(starts, len(index)), len(starts), 1 << precision)


def _reference_list_build(
    newest: bool, distinct: bool, n: int, values: npt.NDArray[Any], ts: Int64Array, pos: Int64Array, starts: Int64Array
) -> list[bytes]:
    total = len(values)
    groups = group_ids(starts, total)
    index = np.arange(total, dtype=np.int64)
    encoded: list[bytes] | None = None
    if distinct:
        encoded = value_bytes(values)
        ids = {b: i for i, b in enumerate(dict.fromkeys(encoded))}
        value_ids = np.fromiter(map(ids.__getitem__, encoded), dtype=np.int64, count=total)
        order = lex_order((index, value_ids, groups))
        last = np.ones(total, dtype=bool)
        last[:-1] = (value_ids[order][1:] != value_ids[order][:-1]) | (groups[order][1:] != groups[order][:-1])
        candidates = np.sort(order[last])
    else:
        candidates = index
    ranked = lex_order((-candidates if newest else candidates, groups[candidates]))
    chosen = candidates[ranked]
    chosen_groups = groups[chosen]
    first = np.searchsorted(chosen_groups, np.arange(len(starts)))
    rank = np.arange(len(chosen), dtype=np.int64) - first[chosen_groups]
    chosen, chosen_groups = chosen[rank < n], chosen_groups[rank < n]
    items = value_bytes(values[chosen]) if encoded is None else [encoded[i] for i in chosen.tolist()]
    return _blobs(chosen_groups, ts[chosen], pos[chosen], items, len(starts))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.lists(st.integers(0, 63), max_size=20))
def test_leading_zeros_equal_the_binary_search(words: list[int], powers: list[int]) -> None:
    x = np.array(words + [1 << p for p in powers] + [(1 << p) - 1 for p in powers] + [0], dtype=np.uint64)
    assert leading_zeros64(x).tolist() == _reference_leading_zeros64(x).tolist()


@settings(max_examples=150, deadline=None)
@given(st.one_of(batches(numeric=True), batches(numeric=False)), st.sampled_from([4, 5, 12, 18]))
def test_hyperloglog_build_equals_the_sorted_build(batch: tuple[Any, ...], precision: int) -> None:
    values, ts, pos, starts = batch
    slot = SketchSlot.of("v", "hll", precision=precision)
    assert slot.implementation.build(slot, values, ts, pos, starts) == _reference_hll_build(precision, values, starts)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(batches(numeric=True), batches(numeric=False)),
    st.sampled_from([("newest_values", True, False), ("oldest_values", False, False), ("newest_distinct", True, True)]),
    st.integers(1, 6),
)
def test_list_builds_equal_the_sorted_selection(batch: tuple[Any, ...], kind: tuple[str, bool, bool], n: int) -> None:
    values, ts, pos, starts = batch
    name, newest, distinct = kind
    slot = SketchSlot.of("v", name, n=n)
    got = slot.implementation.build(slot, values, ts, pos, starts)
    assert got == _reference_list_build(newest, distinct, n, values, ts, pos, starts)


def _reference_sets_of(hashes: npt.NDArray[np.uint64], groups: Int64Array, n_groups: int, bound: int) -> list[bytes]:
    order = np.lexsort((hashes, groups))
    h, g = hashes[order], groups[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (g[1:] != g[:-1])
    h, g = h[keep], g[keep]
    bounds = np.searchsorted(g, np.arange(n_groups + 1))
    out = [h[a:b].astype("<u8").tobytes() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
    return [b"\xff" if len(blob) > 8 * bound else blob for blob in out]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),
            # Hashes that differ only in their lowest bits, and repeats, as well as any.
            st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 7), st.integers(2**64 - 8, 2**64 - 1)),
        ),
        max_size=40,
    ),
    st.integers(1, 5),
    st.booleans(),
)
def test_distinct_sets_equal_the_lexsorted_sets(rows: list[tuple[int, int]], bound: int, by_group: bool) -> None:
    if by_group:
        rows = sorted(rows, key=lambda r: r[0])
    groups = np.array([r[0] for r in rows], dtype=np.int64)
    hashes = np.array([r[1] for r in rows], dtype=np.uint64)
    assert _sets_of(hashes, groups, 7, bound) == _reference_sets_of(hashes, groups, 7, bound)


# Strings with one other type: equal numbers of several types (1, 1.0, True) are one
# value to np.unique, which the general path of hash_values uses (kernel inputs are
# typed columns: an object array holds strings).
ITEMS = st.one_of(WORDS, WORDS.map(np.str_), st.integers(-3, 3))


@settings(max_examples=300, deadline=None)
@given(st.lists(ITEMS, max_size=12), st.lists(WORDS, max_size=5))
def test_memo_hits_give_the_canonical_hashes_and_bytes(items: list[Any], warm: list[str]) -> None:
    """A batch the memo holds entirely takes the fast path (no type check); any other,
    mixed types included, the general one: both give the canonical encoding's hash."""
    hash_values(np.array(warm, dtype=object))
    value_bytes(np.array(warm, dtype=object))
    values = np.empty(len(items), dtype=object)
    values[:] = items
    expected = [canonical_bytes(v) for v in items]
    assert value_bytes(values) == expected
    assert hash_values(values).tolist() == [hash_bytes(b) for b in expected]


@pytest.mark.parametrize("bad", [[1], {"a": 1}, None])
def test_a_value_of_another_type_is_refused_by_name_after_memo_hits(bad: object) -> None:
    """The memo's fast paths leave an unhashable or unknown value to the general path,
    which names it (the list of an unhashable value once escaped as a bare TypeError)."""
    value_bytes(np.array(["m0"], dtype=object))
    hash_values(np.array(["m0"], dtype=object))
    values = np.empty(2, dtype=object)
    values[:] = ["m0", bad]
    with pytest.raises(KernelInputError, match="sketch value: expected str, int, float or bool"):
        value_bytes(values)
    with pytest.raises(KernelInputError, match="sketch value: expected str, int, float or bool"):
        hash_values(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=40), st.integers(0, 14))
def test_group_bounds_equal_the_binary_search(groups: list[int], n_groups: int) -> None:
    """The kinds' writers find each group's rows from counts (ids past n_groups, as a
    search for them would, are after the last bound)."""
    g = np.array(sorted(groups), dtype=np.int64)
    assert group_bounds(g, n_groups).tolist() == np.searchsorted(g, np.arange(n_groups + 1)).tolist()

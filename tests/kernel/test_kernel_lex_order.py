"""lex_order must be exactly np.lexsort's permutation (the sketch writers' canonical
bytes depend on it), whether the keys pack into one int64 or not."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.blob_buffers import lex_order

small = st.integers(-5, 5)
wide = st.integers(-(2**62), 2**62)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 40).flatmap(
        lambda n: st.lists(st.lists(st.one_of(small, wide), min_size=n, max_size=n), min_size=1, max_size=4)
    )
)
def test_lex_order_is_lexsort(columns: list[list[int]]) -> None:
    keys = tuple(np.asarray(c, dtype=np.int64) for c in columns)
    assert lex_order(keys).tolist() == np.lexsort(keys).tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 2**64 - 1)), max_size=30))
def test_lex_order_of_bool_and_uint64_keys_is_lexsort(rows: list[tuple[int, bool, int]]) -> None:
    groups = np.asarray([r[0] for r in rows], dtype=np.int64)
    flags = np.asarray([r[1] for r in rows], dtype=bool)
    hashes = np.asarray([r[2] for r in rows], dtype=np.uint64)
    for keys in ((flags, groups), (hashes, groups), (groups, hashes), (hashes - hashes.min(initial=0), flags)):
        assert lex_order(keys).tolist() == np.lexsort(keys).tolist()

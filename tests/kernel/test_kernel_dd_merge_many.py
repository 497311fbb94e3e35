"""DDSketch windows merge in one pass (``dd_merge_many``): the same bytes as the pairwise
merge of the same blobs in any order, including folding past the bucket limit."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.sketch_kinds import DDSKETCH, dd_merge_many
from engine.kernel.sketches import EMPTY_BLOB, SketchSlot, build_sketches

SLOT = SketchSlot.of("v", "ddsketch", alpha=0.01)

# Magnitudes from 1e-300 to 1e300 reach far more buckets than a sketch keeps, so the fold of
# the lowest buckets is exercised; zeros and negatives use the other two stores.
VALUES = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-300, max_value=1e300),
    st.floats(min_value=-1e300, max_value=-1e-300),
    st.floats(min_value=0.5, max_value=500.0),
)


def _blob(values: list[float]) -> bytes:
    if not values:
        return EMPTY_BLOB
    n = len(values)
    blobs = build_sketches(
        (SLOT,),
        {"v": np.array(values, dtype=np.float64)},
        np.arange(n),
        np.zeros(1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
    )
    return bytes(blobs[0, 0])


def _pairwise(blobs: list[bytes]) -> bytes:
    out = EMPTY_BLOB
    for blob in blobs:
        if not out:
            out = blob
        elif blob:
            out = DDSKETCH.merge(SLOT, out, blob)
    return out


@settings(max_examples=150, deadline=None)
@given(tiles=st.lists(st.lists(VALUES, max_size=20), max_size=12), seed=st.integers(0, 2**16))
def test_one_pass_merge_equals_the_pairwise_merge_in_any_order(tiles: list[list[float]], seed: int) -> None:
    blobs = [_blob(values) for values in tiles]
    want = _pairwise(blobs)
    assert dd_merge_many(blobs) == want
    shuffled = blobs[:]
    random.Random(seed).shuffle(shuffled)
    assert dd_merge_many(shuffled) == want
    assert _pairwise(shuffled) == want
    # And the one-pass merge equals the sketch built from every value at once.
    assert dd_merge_many(blobs) == _blob([v for values in tiles for v in values])

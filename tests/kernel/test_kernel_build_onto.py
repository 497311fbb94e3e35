"""The kinds' one-pass ``build_onto`` (the write path's tiles a batch shares with the
stored record): byte for byte the blob built from the batch's events, then merged with
the stored blob (``build_then_merge``, itself ``merge(stored, build(...))``), for every
kind, stored blobs empty or not, and DDSketch stores wide enough to fold."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.sketch_slot import build_then_merge
from engine.kernel.sketches import EMPTY_BLOB, SketchSlot
from tests.kernel.test_kernel_merge_groups import SLOTS, _build

# Tiny and large magnitudes together span more than MAX_BUCKETS keys: the fold path.
NUMERIC = st.one_of(
    st.integers(-5, 5).map(float), st.floats(-1e6, 1e6), st.just(0.0), st.floats(1e-300, 1e-290), st.just(-1e300)
)
WORDS = st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "é", ""])


# Per group: the stored tile's (event time, value) events and the batch's.
Drawn = list[tuple[list[tuple[int, Any]], list[tuple[int, Any]]]]  # Any: a float or a str value


@st.composite
def groups(draw: st.DrawFn, numeric: bool) -> Drawn:
    """Per group: the stored tile's events (maybe none) and the batch's (at least one)."""
    values = NUMERIC if numeric else WORDS
    event = st.tuples(st.integers(0, 50), values)
    return draw(st.lists(st.tuples(st.lists(event, max_size=8), st.lists(event, min_size=1, max_size=8)), max_size=6))


def _check(slot: SketchSlot, drawn: Drawn) -> None:
    position = iter(range(10**6))
    stored: list[bytes] = []
    batch: list[tuple[int, int, int, Any]] = []  # (group, event time, position, value); Any: float or str
    for g, (old, new) in enumerate(drawn):
        stored.append(_build(slot, [(t, next(position), v) for t, v in old]))
        batch += [(g, t, next(position), v) for t, v in new]
    batch.sort(key=lambda e: (e[0], e[1], e[2]))  # by group, then (event time, position)
    numeric = bool(batch) and isinstance(batch[0][3], float)
    values = np.array([e[3] for e in batch], dtype=np.float64 if numeric else object)
    ts = np.array([e[1] for e in batch], dtype=np.int64)
    pos = np.array([e[2] for e in batch], dtype=np.int64)
    group_of = np.array([e[0] for e in batch], dtype=np.int64)
    starts = np.searchsorted(group_of, np.arange(len(drawn))).astype(np.int64)
    kind = slot.implementation
    got = kind.build_onto(slot, stored, values, ts, pos, starts)
    assert got == build_then_merge(kind, slot, stored, values, ts, pos, starts)
    built = kind.build(slot, values, ts, pos, starts)
    for g in range(len(drawn)):
        want = kind.merge(slot, stored[g], built[g]) if stored[g] else built[g]
        assert got[g] == want
        assert got[g] != EMPTY_BLOB


@settings(max_examples=120, deadline=None)
@given(drawn=groups(numeric=False))
def test_build_onto_string_values_is_the_build_then_the_merge(drawn: Drawn) -> None:
    for slot in SLOTS:
        if slot.kind != "ddsketch":
            _check(slot, drawn)


@settings(max_examples=120, deadline=None)
@given(drawn=groups(numeric=True))
def test_build_onto_numbers_is_the_build_then_the_merge(drawn: Drawn) -> None:
    for slot in SLOTS:
        _check(slot, drawn)

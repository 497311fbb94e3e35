"""DDSketch percentiles at the ends of the double range (docs/semantics.md "Sketch functions").

The value of a bucket is ``2 * gamma**k / (gamma + 1)``. For values from about 9e307 up,
``2 * gamma**k`` overflowed, so the median of [1e308] was ``inf`` instead of a number within
alpha of 1e308; at the largest double, ``gamma**k`` itself raised OverflowError, failing
every read of the window (serving, training sets). Values stay within the documented bound.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.kernel.ddsketch import DDSKETCH, dd_decode, dd_quantile
from engine.kernel.sketch_slot import SketchSlot
from tests.reference import exact_rank_value

LARGEST = sys.float_info.max
SMALLEST_NORMAL = sys.float_info.min
ALPHA = 0.01
SLOT = SketchSlot("amount", "ddsketch", (("alpha", ALPHA),))

# Magnitudes within gamma**2048 of each other (about 1e17 at alpha 0.01): a wider spread
# folds its lowest buckets, which the documented bound exempts.
LARGE = st.one_of(
    st.sampled_from([LARGEST, -LARGEST, 1e308, 9e307, -1.5e308, 1e300, 0.0]),
    st.floats(1e300, LARGEST),
    st.floats(-LARGEST, -1e300),
)
SMALL = st.one_of(
    st.sampled_from([SMALLEST_NORMAL, -SMALLEST_NORMAL, 1e-300, 0.0]),
    st.floats(SMALLEST_NORMAL, 1e-292),
)
EXTREME_LISTS = st.one_of(st.lists(LARGE, min_size=1, max_size=30), st.lists(SMALL, min_size=1, max_size=30))


def _answer_and_exact(values: list[float], q: float) -> tuple[float, float]:
    """The sketch's answer for rank q over ``values`` (one tile) and the exact rank value."""
    x = np.array(values, dtype=np.float64)
    zero = np.zeros(len(x), dtype=np.int64)
    (blob,) = DDSKETCH.build(SLOT, x, zero, np.arange(len(x), dtype=np.int64), np.zeros(1, dtype=np.int64))
    got = dd_quantile(dd_decode(blob), q, ALPHA)
    want = exact_rank_value(values, q)
    assert got is not None and want is not None
    return got, want


@settings(max_examples=150, deadline=None)
@given(values=EXTREME_LISTS, q=st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0]))
@example(values=[LARGEST], q=0.5)
@example(values=[1e308], q=0.5)
@example(values=[-LARGEST, LARGEST], q=0.0)
@example(values=[1.7637650858190846e308], q=0.0)
@example(values=[1.7637650858193227e308], q=0.0)  # the top bucket: gamma**k overflows, its value not
def test_extreme_magnitudes_stay_within_alpha(values: list[float], q: float) -> None:
    got, want = _answer_and_exact(values, q)
    assert abs(got) <= LARGEST, (values, q, got)
    # The bucket key is a rounded log: a value on a bucket edge may land one key off, which
    # moves the answer by about 1e-14 of |x| at these magnitudes (|log x| ~ 700).
    assert abs(got - want) <= (ALPHA + 1e-12) * abs(want), (values, q, got, want)


ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ANY_FINITE, min_size=1, max_size=30), q=st.sampled_from([0.0, 0.25, 0.5, 0.95, 1.0]))
@example(values=[5.0, 5.0, 5.0, 1e20], q=0.5)  # one hostile amount used to fold the rest away
@example(values=[-5.0, -5.0, -5.0, -1e20], q=0.5)
def test_any_values_give_an_answer_within_alpha_or_none(values: list[float], q: float) -> None:
    """Over more than gamma**2048 the lowest buckets are folded: a rank landing in the folded
    bucket has no answer within alpha and gets NaN (served null, INVALID), never a number
    labelled PRESENT; every other rank is within the bound (plus subnormal rounding)."""
    got, want = _answer_and_exact(values, q)
    if math.isnan(got):
        assert max(abs(v) for v in values) > 1e17 * min(abs(v) for v in values if v != 0.0), values
        return
    assert abs(got - want) <= (ALPHA + 1e-12) * abs(want) + 2.5e-324, (values, q, got, want)

"""Hypothesis strategies for ints where streamfeat's int handling has edges.

Values cluster around 0, +-2**53 (a double holds every integer up to it exactly and no
larger one: docs/semantics.md section 3, "Numbers") and the int64 ends, with uniform
int64 values beside them; ``json_ints`` adds the first values beyond int64, which a JSON
producer may send and the decoder refuses.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.reference import EXACT_DOUBLE_LIMIT

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# How far around each boundary the clustered values reach.
_SPREAD = 3


def _around(centers: tuple[int, ...], low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(*(st.integers(max(c - _SPREAD, low), min(c + _SPREAD, high)) for c in centers))


def int64s() -> st.SearchStrategy[int]:
    """int64 values: near 0, +-2**53 and the int64 ends half of the time, uniform otherwise."""
    centers = (0, EXACT_DOUBLE_LIMIT, -EXACT_DOUBLE_LIMIT, INT64_MIN, INT64_MAX)
    return st.one_of(_around(centers, INT64_MIN, INT64_MAX), st.integers(INT64_MIN, INT64_MAX))


def json_ints() -> st.SearchStrategy[int]:
    """:func:`int64s` and, a fifth of the time, ints just beyond int64 (up to +-2**64)."""
    beyond = _around((INT64_MIN - _SPREAD - 1, INT64_MAX + _SPREAD + 1, -(2**64), 2**64), -(2**64), 2**64)
    return st.one_of(int64s(), int64s(), int64s(), int64s(), beyond)

"""NaN and infinities: the one test of "a float with no finite value" (docs/semantics.md
section 3, INVALID values), and its column forms at C speed.

A column's sum of its truthy values is computed without per-value Python; it is finite
when every value is, so only a column whose sum is not finite (a NaN, an infinity, a sum
that overflowed, or values that cannot be summed) needs the per-value pass. The fast
answer is never a wrong "all finite".
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def not_finite(value: object) -> bool:
    """A float that is NaN or infinite: no value to compute on, JSON can only show null."""
    return type(value) is float and not math.isfinite(value)


def may_hold_not_finite(column: Sequence[object]) -> bool:
    """False only when no value of ``column`` is :func:`not_finite` (one C-speed sum)."""
    try:
        total: object = sum(filter(None, column))  # type: ignore[arg-type]  # non-numbers raise: the except
    except (TypeError, OverflowError):  # not numbers, or an int too large for a float
        return True
    return type(total) is float and not math.isfinite(total)


def not_finite_rows(column: Sequence[object]) -> tuple[int, ...]:
    """The positions of the :func:`not_finite` values of ``column``."""
    if not may_hold_not_finite(column):
        return ()
    return tuple(i for i, v in enumerate(column) if not_finite(v))


def count_not_finite(column: Sequence[object]) -> int:
    """How many values of ``column`` are :func:`not_finite`."""
    if not may_hold_not_finite(column):
        return 0
    return sum(not_finite(v) for v in column)

"""The hot path's shortcuts give exactly what their per-value definitions give."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.finite import count_not_finite, not_finite
from engine.state import Freshness
from engine.state.offsets import INT64_MIN
from serving.evaluate import ViewValues
from serving.history import HistoricalReads, window_may_be_trimmed
from serving.online import OnlineAccess
from serving.registry import CompiledView
from tests.serving.serving_support import build_test_repo, example_repo

VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),  # some too large for a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, math.inf, -math.inf, math.nan]),  # sums that overflow
    st.text(max_size=3),
)


@given(st.lists(VALUES, max_size=30))
def test_count_not_finite_counts_each_not_finite_value(column: list[Any]) -> None:
    assert count_not_finite(column) == sum(not_finite(v) for v in column)


VIEWS = {v.name: CompiledView.from_view(v) for s in build_test_repo(example_repo()).services for v in s.views}


class _Metadata(OnlineAccess):
    """Answers only the view metadata read of :meth:`HistoricalReads.inexact_rows`."""

    def __init__(self, newest_view: int | None) -> None:
        self.newest_view = newest_view

    def freshness(self, view: CompiledView, *, cached_ok: bool = True) -> Freshness:
        return Freshness(self.newest_view, None if self.newest_view is None else 0)


def reference_inexact_rows(
    view: CompiledView, newest_view: int | None, values: ViewValues, times: Sequence[int]
) -> list[int]:
    """Per row, straight from serving/history.py's rule: events after t, or a trim bound
    (the newest of the view's and the record's newest events) that may have cost tiles."""
    rows = []
    for i, (t, found, newest) in enumerate(zip(times, values.found, values.max_event_ts, strict=True)):
        if found and newest is not None and newest > t:
            rows.append(i)
            continue
        bounds = [x for x in (newest_view, newest if found else None) if x is not None]
        if bounds and max(bounds) != INT64_MIN and window_may_be_trimmed(view, t, max(bounds)):
            rows.append(i)
    return rows


DAY = 86_400_000
T0 = 1_767_225_600_000
TIMES = st.integers(min_value=T0 - 3 * DAY, max_value=T0 + 3 * DAY)


@pytest.mark.parametrize("view_name", sorted(VIEWS))
@given(
    newest_view=st.one_of(st.none(), st.just(INT64_MIN), TIMES),
    rows=st.lists(st.tuples(st.booleans(), st.one_of(st.none(), TIMES), TIMES), min_size=1, max_size=12),
    one_time=st.booleans(),
)
def test_inexact_rows_is_the_per_row_rule(
    view_name: str, newest_view: int | None, rows: list[tuple[bool, int | None, int]], one_time: bool
) -> None:
    view = VIEWS[view_name]
    times = [rows[0][2]] * len(rows) if one_time else [t for _, _, t in rows]
    values = ViewValues(
        columns={},
        found=[found for found, _, _ in rows],
        defaulted={},
        max_event_ts=[newest if found else None for found, newest, _ in rows],
    )
    history = HistoricalReads(_Metadata(newest_view), "unused")
    inexact = history.inexact_rows(view, values.found, values.max_event_ts, times)
    assert inexact == reference_inexact_rows(view, newest_view, values, times)

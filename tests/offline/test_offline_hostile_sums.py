"""Training-set sums beside hostile magnitudes in other entities (docs/semantics.md section 3).

Training sets sum windows from one compensated prefix sum over the events of every entity.
Its error term was itself a plain running sum, so one entity holding 1e300 and 1e283
erased a later entity's whole window: ``sum = 1.0`` came out ``0.0``, a wrong value served
as a number, while the online state (tile partials per entity) held 1.0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.kernel.layout import AggregationSpec
from engine.offline.event_windows import evaluate_windows
from tests.reference import reference_value

G = 1_000
BASE = 1_780_000_000_000
AGGS = [
    AggregationSpec("sum_2", "amount", "sum", 2 * G),
    AggregationSpec("mean_2", "amount", "mean", 2 * G),
    AggregationSpec("sum_life", "amount", "sum", None),
    AggregationSpec("mean_life", "amount", "mean", None),
]
# (entity code, event time, value); entity 0 and 2 carry hostile magnitudes (same sign, so
# their own sums are well conditioned and cannot overflow), entities 1 and 3 ordinary amounts.
Event = tuple[int, int, float]

HUGE = st.one_of(st.sampled_from([1e300, 1e283, 1e250, 3e299]), st.floats(1e200, 1e300))
ORDINARY = st.one_of(st.sampled_from([1.0, 0.01, -2.5, 0.0]), st.floats(-1e3, 1e3))


@st.composite
def hostile_events(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for code in range(4):
        values = HUGE if code % 2 == 0 else ORDINARY
        for _ in range(draw(st.integers(0, 8))):
            events.append((code, BASE + draw(st.integers(0, 6 * G)), draw(values)))
    return events


def _same(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(events=hostile_events(), times=st.lists(st.integers(BASE - G, BASE + 8 * G), min_size=1, max_size=6))
@example(events=[(0, BASE, 1e300), (0, BASE + 1, 1e283), (1, BASE + 2, 1.0)], times=[BASE + 10])
@example(events=[(0, BASE, 1e300), (0, BASE + 1, 1e283), (1, BASE, 0.25), (1, BASE + 5 * G, 0.5)], times=[BASE + 6 * G])
def test_sums_of_one_entity_ignore_the_magnitudes_of_the_others(events: list[Event], times: list[int]) -> None:
    ordered = sorted(range(len(events)), key=lambda i: (events[i][0], events[i][1], i))
    codes = np.array([events[i][0] for i in ordered], dtype=np.int64)
    event_times = np.array([events[i][1] for i in ordered], dtype=np.int64)
    values = np.array([events[i][2] for i in ordered], dtype=np.float64)
    present = sorted({code for code, _, _ in events})
    queries = [(code, t) for code in range(4) for t in times]
    q_codes = np.array([code if code in present else -1 for code, _ in queries], dtype=np.int64)
    q_times = np.array([t for _, t in queries], dtype=np.int64)
    out = evaluate_windows(codes, event_times, {"amount": values}, q_codes, q_times, G, AGGS)
    reference_events = [
        {"entity": code, "e": e, "partition": 0, "offset": i, "value": v} for i, (code, e, v) in enumerate(events)
    ]
    for agg in AGGS:
        got = out[agg.output_name].to_list()
        for (code, t), value in zip(queries, got, strict=True):
            want = reference_value(reference_events, code, t, agg.function, agg.window_ms, G)
            assert _same(value, want), (agg.output_name, code, t, value, want)

"""A view with every kind of aggregation (plain, sketch and list) and its write path, for
the window plan, serving cache and decode tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from engine.kernel import AggregationSpec, ViewSpec
from engine.kernel.window_plan import WindowPlan

G = 60_000
W = 5 * G
LONG = 20 * G  # long enough for closed-tile merges to be kept (8 closed tiles or more)
SPEC = ViewSpec(
    G,
    ("amount", "merchant"),
    (
        AggregationSpec("n", "amount", "count", W),
        AggregationSpec("s", "amount", "sum", 2 * W),
        AggregationSpec("sd", "amount", "stddev", W),
        AggregationSpec("last", "amount", "last", W),
        AggregationSpec("since", "amount", "time_since_last", W, default=-1),
        AggregationSpec("since_life", "amount", "time_since_last", None),
        AggregationSpec("first", "amount", "first_seen", 2 * W),
        AggregationSpec("cd", "merchant", "count_distinct", W, params=(("max_distinct", 3),)),
        AggregationSpec("hll", "merchant", "count_distinct_approx", LONG, params=(("precision", 6),)),
        AggregationSpec("last3", "merchant", "last_n", W, params=(("n", 3),)),
        AggregationSpec("p90", "amount", "percentile", LONG, params=(("q", 0.9),)),
        AggregationSpec("p50_long", "amount", "median", LONG),
        AggregationSpec("med", "amount", "median", W),
    ),
    2 * LONG,
)
PLAN = WindowPlan(SPEC)
ENTITIES = 2

event = st.fixed_dictionaries(
    {
        "entity": st.integers(0, ENTITIES - 1),
        "e": st.integers(0, 24 * G),
        "amount": st.floats(-50, 500, allow_nan=False).map(lambda v: round(v, 2)),
        "merchant": st.sampled_from(["m1", "m2", "m3", "m4", "m5"]),
    }
)
events = st.lists(event, min_size=1, max_size=40)
# Writes dense enough for the long windows to have 8 closed tiles or more.
dense_events = st.lists(event, min_size=16, max_size=40)


def make_batch(batch: list[dict[str, Any]], first_pos: int) -> dict[str, np.ndarray]:
    return {
        "entity": np.array([e["entity"] for e in batch], dtype=np.int64),
        "e": np.array([e["e"] for e in batch], dtype=np.int64),
        "pos": np.arange(first_pos, first_pos + len(batch), dtype=np.int64),
        "amount": np.array([e["amount"] for e in batch], dtype=np.float64),
        "merchant": np.array([e["merchant"] for e in batch], dtype=object),
    }

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
        AggregationSpec("hll", "merchant", "count_distinct_approx", 2 * W, params=(("precision", 6),)),
        AggregationSpec("last3", "merchant", "last_n", W, params=(("n", 3),)),
        AggregationSpec("p90", "amount", "percentile", 2 * W, params=(("q", 0.9),)),
        AggregationSpec("med", "amount", "median", W),
    ),
    4 * W,
)
PLAN = WindowPlan(SPEC)
ENTITIES = 2

events = st.lists(
    st.fixed_dictionaries(
        {
            "entity": st.integers(0, ENTITIES - 1),
            "e": st.integers(0, 12 * G),
            "amount": st.floats(-50, 500, allow_nan=False).map(lambda v: round(v, 2)),
            "merchant": st.sampled_from(["m1", "m2", "m3", "m4", "m5"]),
        }
    ),
    min_size=1,
    max_size=12,
)


def make_batch(batch: list[dict[str, Any]], first_pos: int) -> dict[str, np.ndarray]:
    return {
        "entity": np.array([e["entity"] for e in batch], dtype=np.int64),
        "e": np.array([e["e"] for e in batch], dtype=np.int64),
        "pos": np.arange(first_pos, first_pos + len(batch), dtype=np.int64),
        "amount": np.array([e["amount"] for e in batch], dtype=np.float64),
        "merchant": np.array([e["merchant"] for e in batch], dtype=object),
    }

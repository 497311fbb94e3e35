"""A source with an int field (amounts in cents) and a view reading it with every
function whose value type depends on the column (docs/semantics.md section 3, "Types
of values"); shared by the tests that check int values are served and trained as ints."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from engine.definitions import Aggregation, Entity, EventSource, OnDemandFeatureView, StreamFeatureView

MINUTES_15, HOUR = timedelta(minutes=15), timedelta(hours=1)
# The features that are ints because their column is: min, max and last of cents.
INT_FEATURES = ("cents_min_15m", "cents_max_1h", "cents_last_1h", "cents_max_lifetime", "cents_last_5m_or_minus_one")


def payment_source(topic: str = "payments") -> EventSource:
    return EventSource(
        name="payments",
        topic=topic,
        timestamp_field="ts",
        timestamp_format="epoch_millis",
        schema={"user_id": "string", "cents": "int", "price": "float"},
        allowed_lateness=timedelta(minutes=5),
    )


def payment_view(source: EventSource) -> StreamFeatureView:
    """min/max/last of cents (ints, one with a whole default), its sum, mean and count, and
    max/last of the float price (floats)."""
    return StreamFeatureView(
        name="user_cents",
        source=source,
        entities=[Entity(name="user", join_keys=["user_id"])],
        aggregations=[
            Aggregation("cents", "min", MINUTES_15),
            Aggregation("cents", "max", HOUR),
            Aggregation("cents", "last", HOUR),
            Aggregation("cents", "max", None),
            Aggregation("cents", "last", timedelta(minutes=5), name="cents_last_5m_or_minus_one", default=-1.0),
            Aggregation("cents", "sum", HOUR),
            Aggregation("cents", "mean", HOUR),
            Aggregation("cents", "count", HOUR),
            Aggregation("price", "max", HOUR),
            Aggregation("price", "last", HOUR),
        ],
    )


def doubled(view: StreamFeatureView, mode: str) -> OnDemandFeatureView:
    """Twice the view's cents_max_1h, declared int: a transform fed 1234.0 instead of the
    int 1234 would return a float, which an int output refuses."""
    suffix = "_batch" if mode == "batch" else ""
    return OnDemandFeatureView(
        name=f"cents_doubled{suffix}",
        sources=[view[["cents_max_1h"]]],
        schema={f"cents_max_doubled{suffix}": "int"},
        mode=mode,
        fn=f"tests.engine.payments_support:cents_max_doubled{suffix}",
    )


def cents_max_doubled(row: dict[str, Any]) -> dict[str, Any]:
    value = row["cents_max_1h"]
    return {"cents_max_doubled": None if value is None else 2 * value}


def cents_max_doubled_batch(frame: pl.DataFrame) -> pl.DataFrame:
    """Batch mode of :func:`cents_max_doubled` (the input column is typed Int64)."""
    return frame.select((pl.col("cents_max_1h") * 2).alias("cents_max_doubled_batch"))

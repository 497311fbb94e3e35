"""Module-level transforms used by the definitions tests (referenced by import path)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from engine.definitions import (
    Aggregation,
    Entity,
    EventSource,
    StreamFeatureView,
    on_demand_feature_view,
)

_source = EventSource(
    name="events", topic="events", timestamp_field="ts", schema={"user_id": "string", "amount": float}
)
_view = StreamFeatureView(
    name="spend",
    source=_source,
    entities=[Entity(name="user", join_keys=["user_id"])],
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(minutes=15))],
)


def ratio(row: dict[str, Any]) -> dict[str, Any]:
    return {"r": row["amount_now"] / max(row["amount_sum_15m"], 0.001)}


def wrong_outputs(row: dict[str, Any]) -> dict[str, Any]:
    return {"r": "text", "extra": 1}


def raises(row: dict[str, Any]) -> dict[str, Any]:
    raise ZeroDivisionError("boom")


def batch_ok(df: pl.DataFrame) -> pl.DataFrame:
    return df.select((pl.col("amount_sum_15m") * 2).alias("r"))


def batch_int(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(pl.col("amount_count_1h").alias("r"))


def batch_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(pl.lit("sample").alias("r"))


def not_a_frame(df: pl.DataFrame) -> dict[str, float]:
    return {"r": 1.0}


@on_demand_feature_view(name="doubled", sources=[_view], schema={"amount_sum_15m_x2": "float"})
def doubled(row: dict[str, Any]) -> dict[str, Any]:
    return {"amount_sum_15m_x2": row["amount_sum_15m"] * 2}

"""Fixtures for the definitions tests: a small valid source, entity and view."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.definitions import Aggregation, Entity, EventSource, StreamFeatureView, col


@pytest.fixture
def source() -> EventSource:
    return EventSource(
        name="transactions",
        topic="transactions",
        timestamp_field="ts",
        schema={
            "user_id": "string",
            "shop_id": int,
            "amount": float,
            "qty": "int",
            "event_type": "string",
            "flag": bool,
        },
        allowed_lateness=timedelta(minutes=5),
    )


@pytest.fixture
def user() -> Entity:
    return Entity(name="user", join_keys=["user_id"])


@pytest.fixture
def view(source: EventSource, user: Entity) -> StreamFeatureView:
    return StreamFeatureView(
        name="user_spend",
        source=source,
        entities=[user],
        filter=col("event_type") == "PURCHASE",
        aggregations=[
            Aggregation(column="amount", function="sum", window=timedelta(minutes=15)),
            Aggregation(column="amount", function="count", window=timedelta(hours=1)),
            Aggregation(column="qty", function="max", window=timedelta(days=1), default=0),
        ],
    )

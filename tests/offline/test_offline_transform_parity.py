"""The same rows through serving's transform step and through training sets' give the
same outputs: one runner and one coercion rule (engine/definitions/transform_runner.py)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

from engine.definitions import (
    Aggregation,
    Entity,
    EventSource,
    OnDemandFeatureView,
    RequestSource,
    StreamFeatureView,
)
from engine.offline.exceptions import OnDemandComputationError
from engine.offline.on_demand import compute_on_demand
from serving.exceptions import TransformError
from serving.registry import _compile_transform
from serving.transforms import run_transform

txns = EventSource("txns", topic="txns", timestamp_field="ts", schema={"user_id": str, "amount": float})
spend = StreamFeatureView(
    "spend",
    source=txns,
    entities=[Entity("user", ["user_id"])],
    aggregations=[
        Aggregation("amount", "sum", timedelta(minutes=5)),
        Aggregation("amount", "count", timedelta(minutes=5)),
    ],
)
request = RequestSource("req", schema={"req_amount": float, "channel": str})
SCHEMA = {"ratio": float, "whole": float, "n_plus": int, "label": str, "big": bool}

# Inputs with the awkward cases: nulls (empty windows, absent request data), a zero
# denominator (NaN and infinity) and ints where floats are declared.
ROWS: dict[str, list[Any]] = {
    "amount_sum_5m": [10.0, None, 0.0, 0.0, 3.5],
    "amount_count_5m": [2, 0, 0, 1, 7],
    "req_amount": [5.0, 1.0, 0.0, 2.0, None],
    "channel": ["web", None, "app", "app", "web"],
}


def per_row(row: dict[str, Any]) -> dict[str, Any]:
    total, amount = row["amount_sum_5m"], row["req_amount"]
    ratio = (
        None
        if total is None or amount is None
        else (math.nan if total == 0 and amount == 0 else (math.inf if total == 0 else amount / total))
    )
    return {
        "ratio": ratio,
        "whole": row["amount_count_5m"],
        "n_plus": row["amount_count_5m"] + 1,
        "label": row["channel"],
        "big": amount is not None and amount > 1.0,
    }


def per_frame(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        (pl.col("req_amount") / pl.col("amount_sum_5m")).alias("ratio"),
        pl.col("amount_count_5m").alias("whole"),
        (pl.col("amount_count_5m") + 1).alias("n_plus"),
        pl.col("channel").alias("label"),
        (pl.col("req_amount") > 1.0).alias("big"),
    )


def wrong_type(row: dict[str, Any]) -> dict[str, Any]:
    return {**per_row(row), "n_plus": "many"}


def _odfv(fn: str, mode: str = "python") -> OnDemandFeatureView:
    return OnDemandFeatureView("parity", sources=[spend, request], schema=SCHEMA, fn=f"{__name__}:{fn}", mode=mode)


@pytest.mark.parametrize(("fn", "mode"), [("per_row", "python"), ("per_frame", "batch")])
def test_serving_and_training_give_the_same_outputs(fn: str, mode: str) -> None:
    odfv = _odfv(fn, mode)
    n_rows = len(ROWS["channel"])
    served = run_transform(_compile_transform(odfv), ROWS, n_rows).columns
    trained = compute_on_demand(odfv, pl.DataFrame(ROWS, schema_overrides={"amount_count_5m": pl.Int64}))
    assert {name: series.to_list() for name, series in trained.items()} == served
    # The one coercion rule: NaN and infinities are null, ints declared float are floats.
    assert served["ratio"][2] is None and served["ratio"][3] is None and served["ratio"][1] is None
    # Rows 2 and 3 were NaN / infinite (serving reports them INVALID); row 1 was a plain null.
    assert run_transform(_compile_transform(odfv), ROWS, n_rows).not_finite == {"ratio": (2, 3)}
    assert served["whole"] == [2.0, 0.0, 0.0, 1.0, 7.0]
    assert all(type(v) is float for v in served["whole"])


def test_serving_and_training_refuse_the_same_output() -> None:
    odfv = _odfv("wrong_type")
    n_rows = len(ROWS["channel"])
    with pytest.raises(TransformError) as served:
        run_transform(_compile_transform(odfv), ROWS, n_rows)
    with pytest.raises(OnDemandComputationError) as trained:
        compute_on_demand(odfv, pl.DataFrame(ROWS))
    for error in (served.value, trained.value):
        assert "output 'n_plus': expected a value of type int, got 'many' (str)" in str(error)
        assert "row 0" in str(error)

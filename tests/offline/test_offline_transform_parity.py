"""The same rows through serving's transform step and through training sets' give the
same outputs: one runner and one coercion rule (engine/definitions/transform_runner.py).
A one-row serving answer's row runner gives what the runner gives that row as a column."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definitions import (
    Aggregation,
    Entity,
    EventSource,
    OnDemandFeatureView,
    RequestSource,
    StreamFeatureView,
)
from engine.definitions.base import FieldType
from engine.definitions.transform_runner import TransformSpec, run_one_row
from engine.definitions.transform_runner import run_transform as run_spec
from engine.offline.exceptions import OnDemandComputationError
from engine.offline.on_demand import compute_on_demand
from serving.exceptions import TransformError
from serving.registry import _compile_transform
from serving.transforms import run_transform, run_transform_row

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


def raising(row: dict[str, Any]) -> dict[str, Any]:
    if row["channel"] == "boom":
        raise RuntimeError("boom")
    return per_row(row)


def not_a_dict(row: dict[str, Any]) -> object:
    return [row["channel"]]


FLOATS = st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.0, 2.5, math.nan, math.inf]), st.floats(-1e6, 1e6))


@settings(max_examples=200, deadline=None)
@given(
    fn=st.sampled_from(
        [
            ("per_row", "python"),
            ("per_frame", "batch"),
            ("wrong_type", "python"),
            ("raising", "python"),
            ("not_a_dict", "python"),
        ]
    ),
    amount_sum=FLOATS,
    count=st.integers(0, 5),
    req_amount=FLOATS,
    channel=st.sampled_from([None, "web", "app", "boom"]),
)
def test_one_row_runner_gives_the_runners_row(
    fn: tuple[str, str], amount_sum: float | None, count: int, req_amount: float | None, channel: str | None
) -> None:
    """:func:`run_transform_row` (one-row serving answers) against :func:`run_transform`
    of the same row as one-row columns: the same outputs, or the same error."""
    transform = _compile_transform(_odfv(*fn))
    row = {"amount_sum_5m": amount_sum, "amount_count_5m": count, "req_amount": req_amount, "channel": channel}
    try:
        expected: dict[str, Any] | str = {
            name: column[0]
            for name, column in run_transform(transform, {k: [v] for k, v in row.items()}, 1).columns.items()
        }
    except TransformError as exc:
        expected = f"{exc} / {exc.hint}"
    try:
        got: dict[str, Any] | str = run_transform_row(transform, row)
    except TransformError as exc:
        got = f"{exc} / {exc.hint}"
    if isinstance(expected, dict) and isinstance(got, dict):
        assert list(got) == list(expected)  # declared order
        # NaN is never served (it becomes null): plain equality holds, types included
        assert [(type(v), v) for v in got.values()] == [(type(v), v) for v in expected.values()]
    else:
        assert got == expected


def test_one_row_runner_names_the_not_finite_outputs() -> None:
    """The row runner reports the outputs that were NaN or infinite, as the runner's
    ``not_finite`` rows do."""
    for fn, mode in (("per_row", "python"), ("per_frame", "batch")):
        spec = TransformSpec.of(_odfv(fn, mode))
        for i in range(len(ROWS["channel"])):
            row = {name: column[i] for name, column in ROWS.items()}
            values, not_finite = run_one_row(spec, row)
            result = run_transform(_compile_transform(_odfv(fn, mode)), {k: [v] for k, v in row.items()}, 1)
            assert values == {name: column[0] for name, column in result.columns.items()}
            assert not_finite == tuple(result.not_finite)
            assert ("ratio" in not_finite) == (i in (2, 3))


def passed_through(df: pl.DataFrame) -> pl.DataFrame:
    """The request amount as the float output, as it came (batch mode)."""
    return df.select(pl.col("req_amount").alias("ratio"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=30))
def test_batch_float_outputs_follow_the_per_value_rule(values: list[float | None]) -> None:
    """A batch transform's float column (the one-pass check for a column with nothing to
    replace, overflowing sums of finite values included) gives what the per-value rule
    gives: NaN and infinities null and named in ``not_finite``, every other value as it is."""
    spec = TransformSpec("passed", passed_through, "batch", {"req_amount": FieldType.FLOAT}, {"ratio": FieldType.FLOAT})
    result = run_spec(spec, {"req_amount": values}, len(values))
    expected = [None if v is None or not math.isfinite(v) else v for v in values]
    assert [(type(v), v) for v in result.columns["ratio"]] == [(type(v), v) for v in expected]
    bad = tuple(i for i, v in enumerate(values) if v is not None and not math.isfinite(v))
    assert result.not_finite == ({"ratio": bad} if bad else {})

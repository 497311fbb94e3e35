"""Sketch parameters on Aggregation: field-named errors, readable output names, and
fingerprints of views without them unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.definitions import Entity, EventSource, StreamFeatureView
from engine.definitions.aggregation import Aggregation
from engine.definitions.base import FieldType
from engine.definitions.exceptions import DefinitionError
from engine.kernel.layout import AggregationSpec

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"function": "count_distinct"}, "field 'max_distinct': expected an int 1..10000"),
        ({"function": "count_distinct", "max_distinct": 20_000}, "got 20000"),
        ({"function": "count_distinct_approx", "precision": 3}, "field 'precision': expected an int 4..18"),
        ({"function": "percentile"}, "field 'q': expected a number 0 <= q <= 1"),
        ({"function": "percentile", "q": 1.5}, "field 'q'"),
        ({"function": "percentile", "q": -0.01}, "field 'q': expected a number 0 <= q <= 1"),
        ({"function": "percentile", "q": float("nan")}, "field 'q'"),
        (
            {"function": "percentile", "q": (0.5, 1.2)},
            r"field 'q': expected every q of the list a number with 0 <= q <= 1.*1\.2",
        ),
        ({"function": "percentile", "q": (0.5, 0.5)}, "field 'q': expected distinct quantiles"),
        ({"function": "percentile", "q": ()}, "field 'q': expected a list of 1..16 numbers"),
        ({"function": "percentile", "q": [0.5, "p95"]}, "field 'q': expected every q of the list"),
        ({"function": "count_distinct", "max_distinct": 0}, "field 'max_distinct': expected an int 1..10000"),
        ({"function": "count_distinct", "max_distinct": 10**9}, "count_distinct_approx"),
        ({"function": "count_distinct", "max_distinct": 50, "window": None}, "field 'window'.*count_distinct_approx"),
        ({"function": "median", "alpha": 0.9}, "field 'alpha'"),
        ({"function": "median", "q": 0.5}, "field 'q': expected None for function 'median'"),
        ({"function": "count", "max_distinct": 5}, "field 'max_distinct': expected None for function 'count'"),
        # Not Python's repr of a negative timedelta (days=-1, seconds=86100).
        ({"function": "count", "window": timedelta(minutes=-5)}, r"field 'window': .* at least 1 ms, got -300000 ms\."),
    ],
)
def test_bad_sketch_parameters_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as raised:
        Aggregation(column="merchant_id", **({"window": HOUR} | kwargs))  # type: ignore[arg-type]
    # Every refusal names the aggregation it refuses.
    assert f"merchant_id_{kwargs['function']}" in str(raised.value)


def test_functions_without_parameters_keep_their_dict() -> None:
    agg = Aggregation(column="amount", function="sum", window=HOUR)
    assert agg.params == ()
    assert "params" not in agg.to_dict()
    assert AggregationSpec.from_aggregation(agg).sketch_slot is None


def _view(*aggregations: Aggregation) -> StreamFeatureView:
    source = EventSource(
        name="tx",
        topic="tx",
        timestamp_field="ts",
        schema={"user_id": "string", "merchant_id": "string", "amount": "float", "items": "int"},
    )
    user = Entity(name="user", join_keys=["user_id"])
    return StreamFeatureView(name="v", source=source, entities=[user], aggregations=list(aggregations))


def test_a_list_of_quantiles_declares_one_feature_per_q_in_order() -> None:
    listed = Aggregation(column="amount", function="percentile", q=[0.5, 0.95, 0.999], window=HOUR)
    assert listed.q == (0.5, 0.95, 0.999)
    view = _view(listed, Aggregation(column="amount", function="median", window=HOUR))
    names = [a.output_name for a in view.aggregations]
    assert names == ["amount_p50_1h", "amount_p95_1h", "amount_p99_9_1h", "amount_median_1h"]
    assert [dict(a.params).get("q") for a in view.aggregations] == [0.5, 0.95, 0.999, None]
    # One sketch slot serves every quantile and the median of the column.
    assert len({AggregationSpec.from_aggregation(a).sketch_slot for a in view.aggregations}) == 1
    # A single q written as a one-element list is the same feature (same fingerprint).
    assert (
        _view(Aggregation(column="amount", function="percentile", q=(0.95,), window=HOUR)).fingerprint
        == _view(Aggregation(column="amount", function="percentile", q=0.95, window=HOUR)).fingerprint
    )


def test_an_explicit_name_gets_each_quantile_label() -> None:
    view = _view(Aggregation(column="amount", function="percentile", q=(0.5, 0.9), window=HOUR, name="spend"))
    assert [a.output_name for a in view.aggregations] == ["spend_p50", "spend_p90"]
    # A duplicate name after expansion is refused like any other.
    with pytest.raises(DefinitionError, match=r"aggregations\[amount_p50_1h\]\.name"):
        _view(
            Aggregation(column="amount", function="percentile", q=(0.5, 0.9), window=HOUR),
            Aggregation(column="amount", function="percentile", q=0.5, window=HOUR),
        )


@pytest.mark.parametrize("function", ["percentile", "median"])
def test_percentiles_of_a_string_column_are_refused_naming_the_aggregation(function: str) -> None:
    q = {"q": 0.9} if function == "percentile" else {}
    with pytest.raises(DefinitionError) as raised:
        _view(Aggregation(column="merchant_id", function=function, window=HOUR, **q))  # type: ignore[arg-type]
    message = str(raised.value)
    label = "merchant_id_p90_1h" if q else "merchant_id_median_1h"
    assert f"field 'aggregations[{label}].column'" in message, message
    assert f"a numeric (int/float) column for {function}" in message and "of type string" in message
    assert "aggregate a numeric column" in message and "count_distinct" in message


def test_distinct_counts_of_a_string_column_are_accepted() -> None:
    view = _view(
        Aggregation(column="merchant_id", function="count_distinct", max_distinct=50, window=HOUR),
        Aggregation(column="merchant_id", function="count_distinct_approx", window=None),
    )
    assert [a.output_name for a in view.aggregations] == [
        "merchant_id_count_distinct_1h",
        "merchant_id_count_distinct_approx_lifetime",
    ]
    assert [view.feature_types[a.output_name] for a in view.aggregations] == [FieldType.INT, FieldType.INT]

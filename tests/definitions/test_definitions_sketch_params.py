"""Sketch parameters on Aggregation: field-named errors, readable output names, and
fingerprints of views without them unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.definitions.aggregation import Aggregation
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
        ({"function": "percentile", "q": (0.5, 1.2)}, r"field 'q': expected every listed q a number 0 <= q <= 1.*1\.2"),
        ({"function": "percentile", "q": (0.5, 0.5)}, "field 'q': expected distinct quantiles"),
        ({"function": "percentile", "q": ()}, "field 'q': expected a list of 1..16 numbers"),
        ({"function": "percentile", "q": [0.5, "p95"]}, "field 'q': expected every listed q"),
        ({"function": "count_distinct", "max_distinct": 0}, "field 'max_distinct': expected an int 1..10000"),
        ({"function": "count_distinct", "max_distinct": 10**9}, "count_distinct_approx"),
        ({"function": "count_distinct", "max_distinct": 50, "window": None}, "field 'window'.*count_distinct_approx"),
        ({"function": "median", "alpha": 0.9}, "field 'alpha'"),
        ({"function": "median", "q": 0.5}, "field 'q': expected None for function 'median'"),
        ({"function": "count", "max_distinct": 5}, "field 'max_distinct': expected None for function 'count'"),
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

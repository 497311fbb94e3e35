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
        ({"function": "median", "alpha": 0.9}, "field 'alpha'"),
        ({"function": "median", "q": 0.5}, "field 'q': expected None for function 'median'"),
        ({"function": "count", "max_distinct": 5}, "field 'max_distinct': expected None for function 'count'"),
    ],
)
def test_bad_sketch_parameters_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Aggregation(column="merchant_id", window=HOUR, **kwargs)  # type: ignore[arg-type]


def test_functions_without_parameters_keep_their_dict() -> None:
    agg = Aggregation(column="amount", function="sum", window=HOUR)
    assert agg.params == ()
    assert "params" not in agg.to_dict()
    assert AggregationSpec.from_aggregation(agg).sketch_slot is None

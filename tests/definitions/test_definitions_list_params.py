"""last_n / first_n / last_distinct_n on Aggregation: n refused outside 1..1000 naming the
aggregation, the field and a fix; no default; string columns allowed; readable names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.definitions import Entity, EventSource, StreamFeatureView
from engine.definitions.aggregation import Aggregation
from engine.definitions.base import FieldType
from engine.definitions.exceptions import DefinitionError
from engine.kernel.exceptions import KernelSpecError
from engine.kernel.layout import AggregationSpec
from engine.kernel.value_lists import MAX_LIST_LENGTH
from engine.kernel.view_spec import ViewSpec

HOUR = timedelta(hours=1)


@pytest.mark.parametrize("function", ["last_n", "first_n", "last_distinct_n"])
@pytest.mark.parametrize(
    ("n", "message"),
    [
        (None, "got None"),
        (0, "got 0"),
        (-3, "got -3"),
        (MAX_LIST_LENGTH + 1, f"got {MAX_LIST_LENGTH + 1}"),
        (2**70, "got 1180591620717411303424"),
        ("5", "got '5'"),
        (True, "got True"),
        (2.0, "got 2.0"),
    ],
)
def test_n_outside_its_range_is_refused_naming_the_aggregation(function: str, n: object, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        Aggregation(column="merchant_id", function=function, window=HOUR, n=n)  # type: ignore[arg-type]
    text = str(info.value)
    assert f"Aggregation 'merchant_id_{function}'" in text
    assert f"field 'n': expected an int 1..{MAX_LIST_LENGTH}" in text
    assert message in text
    assert f"function={function!r}, n=5" in text  # the fix


@pytest.mark.parametrize("function", ["count", "last", "percentile"])
def test_n_given_for_another_function_is_refused(function: str) -> None:
    with pytest.raises(DefinitionError, match=f"field 'n': expected None for function '{function}'"):
        Aggregation(column="amount", function=function, window=HOUR, n=5, q=0.5 if function == "percentile" else None)


def test_a_default_is_refused_because_the_empty_list_is_the_value() -> None:
    with pytest.raises(DefinitionError, match=r"field 'default': expected None for last_n.*empty list \[\]"):
        Aggregation(column="merchant_id", function="last_n", window=HOUR, n=5, default=0.0)
    with pytest.raises(KernelSpecError, match="field 'default': expected None for first_n"):
        AggregationSpec("x", "amount", "first_n", 60_000, 0.0, params=(("n", 2),))


def test_the_kernel_refuses_a_list_spec_without_n() -> None:
    with pytest.raises(KernelSpecError, match=r"param 'n': expected an int 1\.\.1000 for last_n, got None"):
        ViewSpec(60_000, ("m",), (AggregationSpec("x", "m", "last_n", 60_000),), 120_000)


def test_names_types_params_and_a_string_column() -> None:
    last = Aggregation(column="merchant_id", function="last_n", window=HOUR, n=5)
    assert last.output_name == "merchant_id_last_5_1h"
    assert Aggregation(column="merchant_id", function="last_distinct_n", window=None, n=3).output_name == (
        "merchant_id_last_distinct_3_lifetime"
    )
    assert Aggregation(column="amount", function="first_n", window=HOUR, n=2).output_name == "amount_first_2_1h"
    assert last.params == (("n", 5),)
    assert last.output_type(FieldType.STRING) == FieldType.LIST
    assert last.to_dict()["params"] == {"n": 5}
    source = EventSource(
        "txns", topic="txns", timestamp_field="ts", schema={"user_id": str, "merchant_id": str, "amount": float}
    )
    view = StreamFeatureView(
        name="v", source=source, entities=[Entity("user", ["user_id"])], aggregations=[last]
    )  # a string column is accepted: the list holds the column's values
    assert view.feature_types == {"merchant_id_last_5_1h": FieldType.LIST}
    other = StreamFeatureView(
        name="v",
        source=source,
        entities=[Entity("user", ["user_id"])],
        aggregations=[Aggregation(column="merchant_id", function="last_n", window=HOUR, n=6)],
    )
    assert other.fingerprint != view.fingerprint  # n changes the state


def test_list_is_not_a_schema_type() -> None:
    with pytest.raises(DefinitionError, match="field 'schema\\['tags'\\]'"):
        EventSource("txns", topic="txns", timestamp_field="ts", schema={"tags": "list"})

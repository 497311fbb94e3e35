"""The type of every function's value (docs/semantics.md section 3, "Types of values"):
what a view reports in feature_types, and the defaults an int feature accepts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.definitions import (
    Aggregation,
    DefinitionError,
    Entity,
    EventSource,
    FeatureRepo,
    FieldType,
    PlanError,
    StreamFeatureView,
)
from engine.kernel.layout import FUNCTIONS
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import empty_value
from engine.plan import apply_plan

HOUR = timedelta(hours=1)
# Written from the table of docs/semantics.md, not from the code: (over an int column, over a float column).
TYPES = {
    "count": (FieldType.INT, FieldType.INT),
    "sum": (FieldType.FLOAT, FieldType.FLOAT),
    "mean": (FieldType.FLOAT, FieldType.FLOAT),
    "min": (FieldType.INT, FieldType.FLOAT),
    "max": (FieldType.INT, FieldType.FLOAT),
    "last": (FieldType.INT, FieldType.FLOAT),
    "stddev": (FieldType.FLOAT, FieldType.FLOAT),
    "time_since_last": (FieldType.INT, FieldType.INT),
    "first_seen": (FieldType.INT, FieldType.INT),
    "count_distinct": (FieldType.INT, FieldType.INT),
    "count_distinct_approx": (FieldType.INT, FieldType.INT),
    "percentile": (FieldType.FLOAT, FieldType.FLOAT),
    "median": (FieldType.FLOAT, FieldType.FLOAT),
    "last_n": (FieldType.LIST, FieldType.LIST),
    "first_n": (FieldType.LIST, FieldType.LIST),
    "last_distinct_n": (FieldType.LIST, FieldType.LIST),
}
SOURCE = EventSource(
    name="payments", topic="payments", timestamp_field="ts", schema={"user_id": "string", "cents": int, "price": float}
)
USER = Entity(name="user", join_keys=["user_id"])


# The parameters a function requires.
PARAMS: dict[str, dict[str, Any]] = {
    "count_distinct": {"max_distinct": 10},
    "percentile": {"q": 0.9},
    "last_n": {"n": 2},
    "first_n": {"n": 2},
    "last_distinct_n": {"n": 2},
}


def aggregation(column: str, function: str, **kw: Any) -> Aggregation:
    return Aggregation(column, function, HOUR, name=f"{column}_{function}", **PARAMS.get(function, {}), **kw)


def view_of(*aggregations: Aggregation) -> StreamFeatureView:
    return StreamFeatureView(name="user_payments", source=SOURCE, entities=[USER], aggregations=list(aggregations))


def test_every_function_has_the_documented_type_over_int_and_float_columns() -> None:
    assert set(TYPES) == set(FUNCTIONS)
    view = view_of(*(aggregation(c, f) for f in FUNCTIONS for c in ("cents", "price")))
    for function, (over_int, over_float) in TYPES.items():
        assert view.feature_types[f"cents_{function}"] == over_int, function
        assert view.feature_types[f"price_{function}"] == over_float, function
    assert view.int_columns == frozenset({"cents"})
    # The kernel's specs follow the same rule: int where the view says int.
    for spec in ViewSpec.from_view(view).aggregations:
        assert spec.int_valued == (view.feature_types[spec.output_name] == FieldType.INT), spec.output_name


@pytest.mark.parametrize(
    ("column", "function"), [("cents", "max"), ("cents", "min"), ("cents", "last"), ("price", "count")]
)
def test_a_fractional_default_of_an_int_feature_is_refused_naming_it(column: str, function: str) -> None:
    with pytest.raises(DefinitionError) as info:
        view_of(aggregation(column, function, default=-0.5))
    message = str(info.value)
    assert f"field 'aggregations[{column}_{function}].default'" in message, message
    assert "a whole number" in message and "-0.5" in message and "Hint: " in message, message


def test_a_whole_default_of_an_int_feature_is_its_int_and_floats_keep_theirs() -> None:
    view = view_of(
        aggregation("cents", "max", default=-1.0),
        aggregation("cents", "sum", default=-0.5),
        aggregation("price", "max", default=-0.5),
    )
    fills = {spec.output_name: empty_value(spec) for spec in ViewSpec.from_view(view).aggregations}
    assert fills == {"cents_max": -1, "cents_sum": -0.5, "price_max": -0.5}
    assert type(fills["cents_max"]) is int


def test_plan_refuses_retyping_a_float_field_that_max_reads_to_int_under_the_same_state(tmp_path: Path) -> None:
    def repo(cents: type, version: int = 1) -> FeatureRepo:
        source = dataclasses.replace(SOURCE, schema={**SOURCE.schema, "cents": cents})
        view = dataclasses.replace(view_of(aggregation("cents", "max")), source=source, version=version)
        return FeatureRepo.from_objects([source, USER, view])

    plan_file = tmp_path / "plan.json"
    apply_plan(repo(float), plan_file, shards=2)
    with pytest.raises(PlanError, match=r"field \['cents'\].*expected the type .* to stay float .* got int"):
        apply_plan(repo(int), plan_file)
    # A new version has fresh state (a new fingerprint): nothing stored to misread.
    plan, _ = apply_plan(repo(int, version=2), plan_file)
    assert plan.needs_backfill == ("user_payments__v2",)


def test_plan_names_every_view_a_float_to_int_retyping_would_misread(tmp_path: Path) -> None:
    """Two views reading the retyped field with min/max: both are named at once."""

    def repo(cents: type) -> FeatureRepo:
        source = dataclasses.replace(SOURCE, schema={**SOURCE.schema, "cents": cents})
        high = dataclasses.replace(view_of(aggregation("cents", "max")), source=source)
        low = dataclasses.replace(view_of(aggregation("cents", "min")), source=source, name="user_lows")
        return FeatureRepo.from_objects([source, USER, high, low])

    plan_file = tmp_path / "plan.json"
    apply_plan(repo(float), plan_file, shards=2)
    with pytest.raises(PlanError) as refused:
        apply_plan(repo(int), plan_file)
    assert "view 'user_payments'" in str(refused.value) and "view 'user_lows'" in str(refused.value), refused.value

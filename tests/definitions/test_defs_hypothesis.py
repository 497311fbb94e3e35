"""Property: any definition with one invalid field is refused, and the message names that field."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definitions import (
    Aggregation,
    DefinitionError,
    Entity,
    EventSource,
    RequestSource,
    StreamFeatureView,
    col,
)

SRC = EventSource(
    name="tx", topic="tx", timestamp_field="ts", schema={"user_id": "string", "amount": float, "kind": "string"}
)
USER = Entity(name="user", join_keys=["user_id"])
AGG = Aggregation(column="amount", function="sum", window=timedelta(hours=1))

bad_names = st.one_of(
    # Valid names (docs/definitions-api.md): lowercase ASCII letters, digits and "_", not
    # starting with a digit; "_" alone is one.
    st.text(min_size=1).filter(lambda s: re.fullmatch(r"[a-z_][a-z0-9_]*", s) is None),
    st.just(""),
    st.integers(),
    st.none(),
)
bad_durations = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.integers(-(10**9), 0).map(lambda n: timedelta(seconds=n)),
)
bad_types = st.one_of(
    st.integers(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.none(),
    st.sampled_from(["decimal", "text", "str ", "double"]),
)

VALID: dict[str, tuple[type, dict[str, Any]]] = {
    "entity": (Entity, {"name": "user", "join_keys": ["user_id"]}),
    "source": (EventSource, {"name": "tx", "topic": "tx", "timestamp_field": "ts", "schema": {"a": "int"}}),
    "request": (RequestSource, {"name": "req", "schema": {"a": "int"}}),
    "aggregation": (Aggregation, {"column": "amount", "function": "sum", "window": timedelta(hours=1)}),
    "view": (StreamFeatureView, {"name": "v", "source": SRC, "entities": [USER], "aggregations": [AGG]}),
}

INVALID: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("entity", "name"): bad_names,
    ("entity", "join_keys"): st.one_of(st.just([]), st.text(min_size=1), st.lists(st.integers(), min_size=1)),
    ("entity", "description"): st.integers(),
    ("source", "name"): bad_names,
    ("source", "topic"): st.one_of(st.just(""), st.just("a topic"), st.integers(), st.text(min_size=250, max_size=260)),
    ("source", "timestamp_field"): st.one_of(st.just("1ts"), st.integers(), st.just("a-b")),
    ("source", "schema"): st.one_of(st.just({}), st.integers(), st.just("a:int")),
    ("source", "timestamp_format"): st.text().filter(lambda s: s not in ("epoch_millis", "epoch_seconds", "iso8601")),
    ("source", "allowed_lateness"): st.one_of(
        st.integers(), st.integers(-(10**9), -1).map(lambda n: timedelta(seconds=n))
    ),
    ("source", "max_payload_bytes"): st.one_of(st.integers(max_value=0), st.floats(), st.booleans()),
    ("source", "max_future_skew"): bad_durations,
    ("source", "history"): st.one_of(st.text(), st.integers(), st.lists(st.integers(), min_size=1)),
    ("request", "name"): bad_names,
    ("request", "schema"): st.one_of(st.just({}), st.dictionaries(st.just("a"), bad_types, min_size=1)),
    ("aggregation", "column"): st.one_of(st.integers(), st.just("a b"), st.just("")),
    ("aggregation", "function"): st.text().filter(
        lambda s: s not in ("sum", "count", "mean", "min", "max", "last", "stddev")
    ),
    ("aggregation", "window"): bad_durations,
    ("aggregation", "name"): bad_names.filter(lambda v: v is not None),
    ("aggregation", "default"): st.one_of(st.text(), st.booleans(), st.just(float("inf")), st.just(float("nan"))),
    ("view", "name"): bad_names,
    ("view", "source"): st.one_of(st.text(), st.integers(), st.just(USER)),
    ("view", "entities"): st.one_of(
        st.just([]), st.text(), st.just([SRC]), st.just([Entity(name="m", join_keys=["merchant_id"])])
    ),
    ("view", "aggregations"): st.one_of(st.just([]), st.just([USER]), st.integers()),
    ("view", "aggregation_interval"): st.one_of(
        bad_durations,
        st.integers(1, 999).map(lambda n: timedelta(milliseconds=n)),
        st.integers(1001, 59_999).filter(lambda ms: ms % 1000).map(lambda ms: timedelta(milliseconds=ms)),
    ),
    ("view", "filter"): st.one_of(
        st.text(), st.just(col("missing") == 1), st.just(col("amount") == "x"), st.just(col("kind") > 3)
    ),
    ("view", "online"): st.one_of(st.integers(), st.text()),
    ("view", "expected_freshness"): bad_durations,
    ("view", "tags"): st.one_of(st.just({"a": 1}), st.just({1: "a"}), st.text(min_size=1)),
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(INVALID)))
def test_invalid_field_is_refused_and_named(data: st.DataObject, key: tuple[str, str]) -> None:
    kind, field = key
    cls, valid = VALID[kind]
    cls(**valid)  # the base is valid, so the refusal below is due to the one changed field
    bad = data.draw(INVALID[key], label=f"{kind}.{field}")
    try:
        cls(**{**valid, field: bad})
    except DefinitionError as err:  # DefinitionTypeError is a subclass
        assert f"field '{field}" in str(err), str(err)
        assert any(p.field.split("[")[0].startswith(field) for p in err.problems)
        assert "Hint: " in str(err)
    else:
        raise AssertionError(f"{cls.__name__} accepted {field}={bad!r}")

"""Construction of every definition kind and every validation error path."""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest

from engine.definitions import (
    Aggregation,
    Constraint,
    DefinitionError,
    DefinitionTypeError,
    Entity,
    EventSource,
    FeatureRef,
    FeatureService,
    FieldType,
    OnDemandFeatureView,
    RequestSource,
    StreamFeatureView,
    col,
    on_demand_feature_view,
)
from engine.kernel.layout import FUNCTIONS


def refused(factory: Any, *fields: str, kind: type[Exception] = DefinitionError) -> DefinitionError:
    with pytest.raises(kind) as info:
        factory()
    err = info.value
    assert isinstance(err, DefinitionError)
    message = str(err)
    for field in fields:
        assert f"field '{field}'" in message, message
    assert "Hint: " in message and "expected" in message
    return err


def test_valid_view_properties(view: StreamFeatureView, source: EventSource) -> None:
    assert view.feature_names == ("amount_sum_15m", "amount_count_1h", "qty_max_1d")
    assert view.join_keys == ("user_id",)
    assert view.interval_ms == 60_000
    assert view.max_window_ms == 86_400_000
    assert view.retention_ms == 86_400_000 + 300_000 + 60_000
    assert view.columns == ("amount", "qty")
    assert dict(view.column_types) == {"amount": FieldType.FLOAT, "qty": FieldType.INT}
    assert view.feature_types["amount_count_1h"] == FieldType.INT
    assert view.feature_types["amount_sum_15m"] == FieldType.FLOAT
    assert view.feature_types["qty_max_1d"] == FieldType.INT  # max of an int column
    assert len(view.fingerprint) == 8 and view.fingerprint_hex == view.fingerprint.hex()
    assert source.dlq_topic == "transactions.dlq"
    assert source.allowed_lateness_ms == 300_000
    assert source.max_future_skew_ms == 300_000  # five minutes (docs/semantics.md section 5)
    assert source.schema["shop_id"] == FieldType.INT and source.schema["flag"] == "bool"


def test_definitions_are_frozen_and_immutable(view: StreamFeatureView, source: EventSource) -> None:
    with pytest.raises(AttributeError):
        view.name = "other"  # type: ignore[misc]
    assert isinstance(view.aggregations, tuple) and isinstance(view.entities, tuple)
    with pytest.raises(TypeError):
        source.schema["amount"] = "int"  # type: ignore[index]
    assert hash(view) == hash(view)  # hashable despite holding mappings


def test_inputs_are_copied_not_shared(source: EventSource, user: Entity) -> None:
    aggs = [Aggregation(column="amount", function="sum", window=timedelta(hours=1))]
    tags = {"team": "risk"}
    view = StreamFeatureView(name="v", source=source, entities=[user], aggregations=aggs, tags=tags)
    aggs.append(Aggregation(column="amount", function="max", window=timedelta(hours=1)))
    tags["team"] = "other"
    assert len(view.aggregations) == 1 and view.tags["team"] == "risk"


def test_unknown_keyword_is_named_with_suggestion() -> None:
    err = refused(lambda: Entity(name="user", join_key=["user_id"]), "join_key", kind=DefinitionTypeError)  # type: ignore[call-arg]
    assert "did you mean 'join_keys'" in str(err)
    assert isinstance(err, TypeError)


def test_missing_required_argument_is_named() -> None:
    err = refused(lambda: Aggregation(column="amount", function="sum"), "window", kind=DefinitionTypeError)  # type: ignore[call-arg]
    assert "Aggregation" in str(err)


def test_entity_errors() -> None:
    refused(lambda: Entity(name="User", join_keys=["user_id"]), "name")
    err = refused(lambda: Entity(name="user", join_keys="user_id"), "join_keys", kind=DefinitionTypeError)
    assert "join_keys=['user_id']" in str(err)
    refused(lambda: Entity(name="user", join_keys=[]), "join_keys")
    refused(lambda: Entity(name="user", join_keys=["a", "a"]), "join_keys")


def test_all_problems_of_one_object_are_reported_together() -> None:
    err = refused(
        lambda: EventSource(
            name="1bad",
            topic="a topic",
            timestamp_field="ts",
            schema={"x": "decimal"},
            timestamp_format="epoch_milis",
            allowed_lateness=timedelta(seconds=-1),
            max_payload_bytes=0,
        ),
        "name",
        "topic",
        "schema['x']",
        "timestamp_format",
        "allowed_lateness",
        "max_payload_bytes",
    )
    assert len(err.problems) == 6
    assert "did you mean 'epoch_millis'" in str(err)
    assert str(err).startswith("EventSource '1bad'")


def test_event_source_types_and_history() -> None:
    refused(
        lambda: EventSource(name="s", topic="t", timestamp_field="ts", schema={"a": "int"}, allowed_lateness=300),  # type: ignore[arg-type]
        "allowed_lateness",
        kind=DefinitionTypeError,
    )
    refused(
        lambda: EventSource(name="s", topic="t", timestamp_field="ts", schema={"a": "int"}, history="data/*.parquet"),
        "history",
        kind=DefinitionTypeError,
    )
    refused(lambda: EventSource(name="s", topic="t", timestamp_field="ts", schema={}), "schema")
    refused(
        lambda: EventSource(
            name="s", topic="t", timestamp_field="ts", schema={"a": "int"}, max_future_skew=timedelta(0)
        ),
        "max_future_skew",
    )
    ok = EventSource(
        name="s",
        topic="t",
        timestamp_field="ts",
        schema={"a": "int"},
        history=["x.parquet"],
        timestamp_format="iso8601",
    )
    assert ok.history == ("x.parquet",)


def test_a_timestamp_field_typed_against_its_format_is_refused() -> None:
    """Every record of such a source would be a dead letter (wrong_type or
    invalid_timestamp): refused at the definition, naming the field, its type and a fix."""
    for declared, fmt, fix in (
        ("string", "epoch_millis", "set timestamp_format to iso8601"),
        ("float", "epoch_millis", "set timestamp_format to epoch_seconds"),
        ("int", "iso8601", "set timestamp_format to epoch_millis or epoch_seconds"),
        ("bool", "epoch_seconds", "declare 'ts' as int"),
    ):
        err = refused(
            lambda declared=declared, fmt=fmt: EventSource(
                name="s", topic="t", timestamp_field="ts", schema={"ts": declared, "a": "int"}, timestamp_format=fmt
            ),
            "schema",
        )
        assert "timestamp field 'ts' typed" in str(err) and f"got {declared}" in str(err) and fix in str(err), err
    for declared, fmt in (
        ("int", "epoch_millis"),
        ("float", "epoch_seconds"),
        ("int", "epoch_seconds"),
        ("string", "iso8601"),
    ):
        EventSource(name="s", topic="t", timestamp_field="ts", schema={"ts": declared}, timestamp_format=fmt)


def test_event_source_watermark_outliers() -> None:
    def source(**kw: Any) -> EventSource:
        return EventSource(name="s", topic="t", timestamp_field="ts", schema={"a": "int"}, **kw)

    assert source().watermark_outliers == 1
    assert source(watermark_outliers=0).to_dict()["watermark_outliers"] == 0
    refused(lambda: source(watermark_outliers=16), "watermark_outliers")
    refused(lambda: source(watermark_outliers=-1), "watermark_outliers")
    refused(lambda: source(watermark_outliers=True), "watermark_outliers", kind=DefinitionTypeError)


def test_event_source_constraints() -> None:
    schema = {"user_id": "string", "amount": "float", "qty": "int", "ok": "bool"}

    def source(constraints: Any) -> EventSource:
        return EventSource(name="s", topic="t", timestamp_field="ts", schema=schema, constraints=constraints)

    ok = source(
        {
            "amount": Constraint(min=0, max=1e9),
            "qty": Constraint(min=0),
            "user_id": Constraint(min_length=1, max_length=64, allowed_characters="A-Za-z0-9_-"),
        }
    )
    assert ok.constraints["amount"].max == 1e9
    assert ok.to_dict()["constraints"] == {
        "amount": {"min": 0, "max": 1e9},
        "qty": {"min": 0},
        "user_id": {"min_length": 1, "max_length": 64, "allowed_characters": "A-Za-z0-9_-"},
    }
    refused(lambda: source({"amont": Constraint(min=0)}), "constraints['amont']")
    refused(lambda: source({"user_id": Constraint(min=0)}), "constraints['user_id']")
    refused(lambda: source({"amount": Constraint(max_length=3)}), "constraints['amount']")
    refused(lambda: source({"ok": Constraint(min=0)}), "constraints['ok']")
    refused(lambda: source({"amount": {"min": 0}}), "constraints['amount']", kind=DefinitionTypeError)
    refused(lambda: source([("amount", Constraint(min=0))]), "constraints", kind=DefinitionTypeError)


def test_constraint_errors() -> None:
    refused(lambda: Constraint(min=float("inf")), "min")
    refused(lambda: Constraint(min=float("nan")), "min")
    refused(lambda: Constraint(max="9"), "max", kind=DefinitionTypeError)  # type: ignore[arg-type]
    refused(lambda: Constraint(min=2, max=1), "max")
    refused(lambda: Constraint(min_length=3, max_length=2), "max_length")
    refused(lambda: Constraint(max_length=-1), "max_length")
    refused(lambda: Constraint(allowed_characters=""), "allowed_characters")
    refused(lambda: Constraint(allowed_characters="z-a"), "allowed_characters")
    refused(lambda: Constraint(), "<fields>")


def test_aggregation_errors() -> None:
    err = refused(lambda: Aggregation(column="amount", function="avg", window=timedelta(hours=1)), "function")
    assert "valid values" in str(err)
    refused(lambda: Aggregation(column="amount", function="sum", window=timedelta(0)), "window")
    refused(lambda: Aggregation(column="amount", function="sum", window=timedelta(hours=1), default="0"), "default")  # type: ignore[arg-type]
    refused(
        lambda: Aggregation(column="amount", function="sum", window=timedelta(hours=1), default=float("nan")), "default"
    )
    refused(lambda: Aggregation(column="amount", function="sum", window=timedelta(hours=1), name="Bad Name"), "name")
    refused(lambda: Aggregation(column="a b", function="sum", window=timedelta(hours=1)), "column")
    assert Aggregation(column="amount", function="sum", window=timedelta(minutes=90)).output_name == "amount_sum_90m"
    assert Aggregation(column="amount", function="sum", window=timedelta(seconds=30)).output_name == "amount_sum_30s"


def _view(src: EventSource, ent: Entity, /, **kw: Any) -> StreamFeatureView:
    args: dict[str, Any] = {
        "name": "v",
        "source": src,
        "entities": [ent],
        "aggregations": [Aggregation(column="amount", function="sum", window=timedelta(hours=1))],
    }
    args.update(kw)
    return StreamFeatureView(**args)


def test_view_window_must_be_multiple_of_interval(source: EventSource, user: Entity) -> None:
    err = refused(
        lambda: _view(source, user, aggregation_interval=timedelta(minutes=7)), "aggregations[amount_sum_1h].window"
    )
    assert "420000 ms" in str(err) and "3600000 ms" in str(err)


@pytest.mark.parametrize(
    "interval", [timedelta(milliseconds=500), timedelta(seconds=1.5), timedelta(0), timedelta(seconds=-60)]
)
def test_view_interval_whole_seconds(source: EventSource, user: Entity, interval: timedelta) -> None:
    refused(lambda: _view(source, user, aggregation_interval=interval), "aggregation_interval")


def test_view_column_checks(source: EventSource, user: Entity) -> None:
    refused(
        lambda: _view(
            source, user, aggregations=[Aggregation(column="amont", function="sum", window=timedelta(hours=1))]
        ),
        "aggregations[amont_sum_1h].column",
    )
    for fn in ("sum", "mean", "min", "max", "stddev", "last"):
        refused(
            lambda fn=fn: _view(
                source, user, aggregations=[Aggregation(column="event_type", function=fn, window=timedelta(hours=1))]
            ),
            f"aggregations[event_type_{fn}_1h].column",
        )
    counted = _view(
        source, user, aggregations=[Aggregation(column="event_type", function="count", window=timedelta(hours=1))]
    )
    assert counted.column_types["event_type"] == FieldType.STRING
    timed = _view(
        source,
        user,
        aggregations=[Aggregation(column="event_type", function="time_since_last", window=timedelta(hours=1))],
    )
    assert timed.feature_types["event_type_time_since_last_1h"] == FieldType.INT


def test_an_unknown_function_is_refused_with_the_nearest_name_and_every_function() -> None:
    # Nothing in docs/semantics.md is planned-but-refused any more: every function it
    # specifies is accepted, and a misspelt one names the nearest and lists them all.
    err = refused(lambda: Aggregation(column="amount", function="last_m", window=timedelta(hours=1)), "function")
    assert "did you mean 'last_n'?" in str(err)
    for fn in FUNCTIONS:
        assert repr(fn) in str(err), fn


def test_lifetime_window_names_retention_and_fingerprint(source: EventSource, user: Entity) -> None:
    lifetime = Aggregation(column="amount", function="sum", window=None)
    assert lifetime.output_name == "amount_sum_lifetime" and lifetime.window_ms is None
    view = _view(
        source, user, aggregations=[lifetime, Aggregation(column="amount", function="sum", window=timedelta(hours=1))]
    )
    assert view.has_lifetime_window
    # Retention follows the finite windows; the lifetime one is kept as a compacted partial.
    assert view.max_window_ms == 3_600_000
    assert view.retention_ms == 3_600_000 + source.allowed_lateness_ms + view.interval_ms
    only_finite = _view(
        source, user, aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=1))]
    )
    assert not only_finite.has_lifetime_window and only_finite.fingerprint != view.fingerprint


def test_view_join_key_checks(source: EventSource) -> None:
    refused(lambda: _view(source, Entity(name="m", join_keys=["merchant_id"])), "entities")
    refused(lambda: _view(source, Entity(name="a", join_keys=["amount"])), "entities")  # float key
    ok = _view(source, Entity(name="shop", join_keys=["shop_id"]))
    assert ok.join_keys == ("shop_id",)
    refused(lambda: _view(source, Entity(name="u", join_keys=["user_id"]), entities=[]), "entities")
    refused(
        lambda: _view(source, Entity(name="u", join_keys=["user_id"]), entities="user"),
        "entities",
        kind=DefinitionTypeError,
    )


def test_view_duplicate_outputs_filter_tags(source: EventSource, user: Entity) -> None:
    dup = [
        Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
        Aggregation(column="amount", function="max", window=timedelta(hours=1), name="amount_sum_1h"),
    ]
    refused(lambda: _view(source, user, aggregations=dup), "aggregations[amount_sum_1h].name")
    err = refused(lambda: _view(source, user, filter=col("evnt_type") == "X"), "filter")
    assert "did you mean 'event_type'" in str(err)
    refused(lambda: _view(source, user, filter=col("amount") == "10"), "filter")
    refused(lambda: _view(source, user, filter=col("flag") > True), "filter")
    refused(lambda: _view(source, user, filter="event_type == 'X'"), "filter", kind=DefinitionTypeError)
    refused(lambda: _view(source, user, tags={"team": 1}), "tags['team']", kind=DefinitionTypeError)
    refused(lambda: _view(source, user, online="yes"), "online", kind=DefinitionTypeError)
    refused(lambda: _view(source, user, expected_freshness=timedelta(0)), "expected_freshness")
    refused(lambda: _view(source, user, source="transactions"), "source", kind=DefinitionTypeError)


def test_request_source_and_odfv(view: StreamFeatureView) -> None:
    req = RequestSource(name="req", schema={"amount_now": float})
    odfv = OnDemandFeatureView(
        name="ratio", sources=[view, req], schema={"r": "float"}, fn="tests.definitions.odfv_support:ratio"
    )
    assert odfv.request_fields == {"amount_now": FieldType.FLOAT}
    assert odfv.input_types["amount_count_1h"] == FieldType.INT
    assert odfv.feature_names == ("r",)
    refused(lambda: OnDemandFeatureView(name="x", sources=[view], schema={"r": "float"}, fn="no_colon"), "fn")
    refused(
        lambda: OnDemandFeatureView(name="x", sources=[view], schema={"r": "float"}, fn="a.b:c", mode="vector"), "mode"
    )
    refused(lambda: OnDemandFeatureView(name="x", sources=[], schema={"r": "float"}, fn="a.b:c"), "sources")
    refused(lambda: OnDemandFeatureView(name="x", sources=[view], schema={"r": "decimal"}, fn="a.b:c"), "schema['r']")
    refused(
        lambda: OnDemandFeatureView(name="x", sources=[view], schema={"r": "float"}),  # type: ignore[call-arg]
        "fn",
        kind=DefinitionTypeError,
    )
    clash = RequestSource(name="clash", schema={"amount_sum_15m": float})
    refused(lambda: OnDemandFeatureView(name="x", sources=[view, clash], schema={"r": "float"}, fn="a.b:c"), "sources")


def test_odfv_reads_a_selection_of_a_view(view: StreamFeatureView) -> None:
    req = RequestSource(name="req", schema={"amount_now": float})
    odfv = OnDemandFeatureView(
        name="ratio",
        sources=[view[["amount_sum_15m"]], req],
        schema={"r": "float"},
        fn="tests.definitions.odfv_support:ratio",
    )
    assert dict(odfv.input_types) == {"amount_sum_15m": FieldType.FLOAT, "amount_now": FieldType.FLOAT}
    assert odfv.source_views == (view,)
    assert odfv.to_dict()["sources"] == [
        {"kind": "FeatureRef", "name": "user_spend", "features": ["amount_sum_15m"]},
        {"kind": "RequestSource", "name": "req"},
    ]
    # Two selections of one view: the view is read once.
    split = OnDemandFeatureView(
        name="split", sources=[view[["amount_sum_15m"]], view[["qty_max_1d"]]], schema={"r": "float"}, fn="a.b:c"
    )
    assert split.source_views == (view,)
    assert set(split.input_types) == {"amount_sum_15m", "qty_max_1d"}
    # A selection of an on-demand view is refused: transforms read stream views.
    refused(
        lambda: OnDemandFeatureView(name="x", sources=[odfv[["r"]]], schema={"y": "float"}, fn="a.b:c"),
        "sources",
        kind=DefinitionTypeError,
    )
    # Inputs must stay distinct across whole views, selections and request sources.
    clash = RequestSource(name="clash", schema={"amount_sum_15m": float})
    err = refused(
        lambda: OnDemandFeatureView(
            name="x", sources=[view[["amount_sum_15m"]], clash], schema={"r": "float"}, fn="a.b:c"
        ),
        "sources",
    )
    assert "'user_spend'" in str(err) and "'clash'" in str(err)


def test_odfv_resolve_is_lazy_and_reports_bad_paths(view: StreamFeatureView) -> None:
    missing = OnDemandFeatureView(name="x", sources=[view], schema={"r": "float"}, fn="no_such_module_xyz.sub:fn")
    err = refused(missing.resolve, "fn")
    assert "no_such_module_xyz" in str(err)


def test_decorator_records_import_path(view: StreamFeatureView) -> None:
    import tests.definitions.odfv_support as odfv_funcs

    assert isinstance(odfv_funcs.doubled, OnDemandFeatureView)
    assert odfv_funcs.doubled.fn == "tests.definitions.odfv_support:doubled"
    function = odfv_funcs.doubled.resolve()
    assert function({"amount_sum_15m": 2.0}) == {"amount_sum_15m_x2": 4.0}

    def local(row: dict[str, Any]) -> dict[str, Any]:
        return row

    refused(lambda: on_demand_feature_view(name="loc", sources=[view], schema={"a": "float"})(local), "fn")


def test_feature_service(view: StreamFeatureView, source: EventSource) -> None:
    req = RequestSource(name="req", schema={"amount_now": float})
    odfv = OnDemandFeatureView(name="ratio", sources=[view, req], schema={"r": "float"}, fn="a.b:c")
    shop = Entity(name="shop", join_keys=["shop_id"])
    shop_view = StreamFeatureView(
        name="shop_spend",
        source=source,
        entities=[shop],
        aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=1), name="shop_sum_1h")],
    )
    svc = FeatureService(name="svc", features=[view[["qty_max_1d", "amount_sum_15m"]], shop_view, odfv])
    assert svc.feature_names == ("qty_max_1d", "amount_sum_15m", "shop_sum_1h", "r")
    assert svc.entity_join_keys == ("user_id", "shop_id")
    assert dict(svc.request_fields) == {"amount_now": FieldType.FLOAT}
    assert all(isinstance(ref, FeatureRef) for ref in svc.features)
    assert svc.views == (view, shop_view)
    err = refused(lambda: view[["amount_sum_16m"]], "features")
    assert "did you mean 'amount_sum_15m'" in str(err)
    refused(lambda: FeatureService(name="dup", features=[view, view[["amount_sum_15m"]]]), "features")
    refused(lambda: FeatureService(name="empty", features=[]), "features")
    refused(lambda: FeatureService(name="names", features=["user_spend"]), "features", kind=DefinitionTypeError)  # type: ignore[list-item]


def test_tags_accept_mapping_proxy(source: EventSource, user: Entity) -> None:
    view = _view(source, user, tags=MappingProxyType({"b": "2", "a": "1"}))
    assert list(view.tags) == ["a", "b"]


def test_check_on_demand_reports_mismatches(view: StreamFeatureView) -> None:
    from engine.definitions import OnDemandCheckError, check_on_demand

    req = RequestSource(name="req", schema={"amount_now": float})

    def odfv(fn: str, mode: str = "python") -> OnDemandFeatureView:
        return OnDemandFeatureView(name="t", sources=[view, req], schema={"r": "float"}, fn=fn, mode=mode)

    assert check_on_demand(
        odfv("tests.definitions.odfv_support:ratio"), {"amount_now": 3.0, "amount_sum_15m": 1.5}
    ) == {"r": 2.0}
    err = refused(
        lambda: check_on_demand(odfv("tests.definitions.odfv_support:wrong_outputs")),
        "schema['r']",
        "schema['extra']",
        kind=OnDemandCheckError,
    )
    assert "'text' (str)" in str(err)
    err = refused(lambda: check_on_demand(odfv("tests.definitions.odfv_support:raises")), "fn", kind=OnDemandCheckError)
    assert "ZeroDivisionError: boom" in str(err) and "odfv_support.py" in str(err)
    assert check_on_demand(odfv("tests.definitions.odfv_support:batch_ok", "batch"), {"amount_sum_15m": 4.0}) == {
        "r": 8.0
    }
    # One coercion rule for both modes (engine/definitions/transform_runner.py): ints widen to float.
    assert check_on_demand(odfv("tests.definitions.odfv_support:batch_int", "batch")) == {"r": 3.0}
    err = refused(
        lambda: check_on_demand(odfv("tests.definitions.odfv_support:batch_text", "batch")),
        "schema['r']",
        kind=OnDemandCheckError,
    )
    assert "'sample' (str)" in str(err)
    refused(
        lambda: check_on_demand(odfv("tests.definitions.odfv_support:not_a_frame", "batch")),
        "fn",
        kind=OnDemandCheckError,
    )


def test_a_trailing_newline_is_not_part_of_a_valid_name() -> None:
    # "$" in a pattern also matches before a final "\n"; names end up in paths and keys.
    refused(lambda: Entity(name="user\n", join_keys=["user_id"]), "name")
    refused(lambda: Entity(name="user", join_keys=["user_id\n"]), "join_keys")
    refused(lambda: EventSource(name="tx", topic="transactions\n", timestamp_field="ts", schema={"ts": int}), "topic")

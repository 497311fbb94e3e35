"""Bad input, failing transforms, Feast shapes, service listing, health and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from engine.state import RedisOnlineTable
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import T_END, build_test_repo, example_repo, make_app

GOOD = {"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}}
JSON_TYPE = {"content-type": "application/json"}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"]
    return error


def test_unknown_service_is_404_with_suggestion(client: ASGIClient) -> None:
    error = error_of(client.post("/v1/features/fraud_scorin", json=GOOD), 404)
    assert error["code"] == "service_not_found" and "fraud_scoring" in error["hint"]
    assert client.get("/v1/services/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entities": {"user_id": ["u1"]}, "request_data": {"amount": [1.0]}}, "entities.merchant_id"),
        (
            {
                "entities": {"user_id": ["u1"], "merchant_id": ["m"], "card_id": ["c"]},
                "request_data": {"amount": [1.0]},
            },
            "entities.card_id",
        ),
        (
            {"entities": {"user_id": [7], "merchant_id": ["m"]}, "request_data": {"amount": [1.0]}},
            "entities.user_id[0]",
        ),
        ({"entities": {"user_id": "u1", "merchant_id": ["m"]}, "request_data": {"amount": [1.0]}}, "entities.user_id"),
        ({"entities": {"user_id": ["u1"], "merchant_id": ["m"]}}, "request_data"),
        ({"entities": {"user_id": ["u1"], "merchant_id": ["m"]}, "request_data": {}}, "request_data.amount"),
        (
            {"entities": {"user_id": ["u1"], "merchant_id": ["m"]}, "request_data": {"amount": ["x"]}},
            "request_data.amount[0]",
        ),
        (
            {"entities": {"user_id": ["u1", "u2"], "merchant_id": ["m"]}, "request_data": {"amount": [1.0]}},
            "entities.user_id",
        ),
        ({"entities": {"user_id": [], "merchant_id": []}, "request_data": {"amount": []}}, "entities"),
        ({**GOOD, "as_of": "2026-01-01T00:00:00"}, "as_of"),
        ({**GOOD, "as_of": True}, "as_of"),
        ({**GOOD, "include_metadata": "yes"}, "include_metadata"),
        ({**GOOD, "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_bad_fields_are_422_naming_the_field(client: ASGIClient, body: Any, field: str) -> None:
    error = error_of(client.post("/v1/features/fraud_scoring", json=body), 422)
    assert error["field"] == field
    assert error["code"] == "invalid_request"


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b""])
def test_malformed_json_is_400(client: ASGIClient, raw: bytes) -> None:
    error = error_of(client.post("/v1/features/fraud_scoring", content=raw, headers=JSON_TYPE), 400)
    assert error["code"] == "malformed_request"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"],
)
@pytest.mark.parametrize("path", ["/v1/features/fraud_scoring", "/get-online-features"])
def test_feature_routes_require_json_content_type(client: ASGIClient, path: str, content_type: str | None) -> None:
    """A browser's cross-site simple POST (text/plain, form types) must not reach the features."""
    feast = {"feature_service": "fraud_scoring", "entities": GOOD["entities"], "request_context": GOOD["request_data"]}
    body = orjson.dumps(GOOD if path.startswith("/v1") else feast)
    headers = {} if content_type is None else {"content-type": content_type}
    answer = client.post(path, content=body, headers=headers)
    if path.startswith("/v1"):
        error = error_of(answer, 415)
        assert error["code"] == "unsupported_media_type" and "application/json" in error["hint"]
    else:  # the Feast route answers in Feast's error shape (the hint is in the message)
        detail = feast_error_of(answer, 415)
        assert detail["code"] == "unsupported_media_type" and "application/json" in detail["message"]
    for accepted in ("application/json", "Application/JSON; charset=utf-8"):
        assert client.post(path, content=body, headers={"content-type": accepted}).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}, "as_of": 1, '
        b'"as_of": 2}',
        b'{"entities": {"user_id": ["u1"], "user_id": ["u2"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}}',
        # colons in strings and an escaped colon: the cheap count cannot decide, the exact parse does
        b'{"entities": {"user_id": ["u:1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0], "amount": [4.0]}}',
        b'{"entities": {"user_id": ["\\u003a"], "merchant_id": ["m1"], "merchant_id": ["m2"]}, '
        b'"request_data": {"amount": [3.0]}}',
    ],
)
def test_duplicate_json_keys_are_400(client: ASGIClient, raw: bytes) -> None:
    error = error_of(client.post("/v1/features/fraud_scoring", content=raw, headers=JSON_TYPE), 400)
    assert error["code"] == "duplicate_key" and error["field"] in ("as_of", "user_id", "amount", "merchant_id")


def test_colons_and_escapes_without_duplicates_are_served(client: ASGIClient) -> None:
    for raw in (
        b'{"entities": {"user_id": ["u:1"], "merchant_id": ["m\\u003a1"]}, "request_data": {"amount": [3.0]}}',
        b'{"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}, '
        b'"as_of": "2026-01-01T00:00:00Z"}',
    ):
        reply = client.post("/v1/features/fraud_scoring", content=raw, headers=JSON_TYPE)
        assert reply.status_code == 200, reply.text


def test_router_errors_use_the_error_shape(client: ASGIClient) -> None:
    not_found = error_of(client.get("/no/such/route"), 404)
    assert not_found["code"] == "not_found" and "/no/such/route" in not_found["message"]
    reply = client.get("/v1/features/fraud_scoring")
    assert error_of(reply, 405)["code"] == "method_not_allowed" and reply.headers["allow"] == "POST"
    assert error_of(client.get("/ui/secret.txt"), 404)["code"] == "not_found"
    assert error_of(client.request("DELETE", "/v1/services"), 405)["code"] == "method_not_allowed"


def test_too_many_entities_is_413(client: ASGIClient) -> None:  # the fixture allows 50
    n = 51
    body = {"entities": {"user_id": ["u1"] * n, "merchant_id": ["m1"] * n}, "request_data": {"amount": [1.0] * n}}
    assert error_of(client.post("/v1/features/fraud_scoring", json=body), 413)["code"] == "payload_too_large"


def test_body_over_limit_is_413_by_header_and_by_size(client: ASGIClient) -> None:  # limit 20,000 bytes
    big = orjson.dumps({**GOOD, "request_data": {"amount": [1.0] * 10_000}})
    assert len(big) > 20_000
    error_of(client.post("/v1/features/fraud_scoring", content=big, headers=JSON_TYPE), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size read is what counts
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    error_of(client.post("/v1/features/fraud_scoring", content=chunks(), headers=JSON_TYPE), 413)


def test_failing_transform_is_500_naming_it_and_serving_continues(client: ASGIClient) -> None:
    body = {"entities": {"user_id": ["u1"]}, "request_data": {"amount": [13.0]}, "as_of": T_END}
    error = error_of(client.post("/v1/features/with_defaults", json=body), 500)
    assert error["code"] == "transform_failed" and error["transform"] == "flaky"
    assert "unlucky amount 13" in error["message"]
    ok = client.post("/v1/features/with_defaults", json={**body, "request_data": {"amount": [2.0]}})
    assert ok.status_code == 200 and ok.json()["features"][0]["flaky_out"] == 4.0


def test_online_table_down_is_503_with_reason(repo: FeatureRepo, plan: AppliedPlan) -> None:
    table = RedisOnlineTable("redis://127.0.0.1:1/0", socket_timeout_s=0.2)  # nothing listens on port 1
    down = ASGIClient(make_app(repo, plan, table, online="redis", redis_url="redis://127.0.0.1:1/0"))
    try:
        error = error_of(down.post("/v1/features/fraud_scoring", json=GOOD), 503)
        assert error["code"] == "online_table_unavailable" and "127.0.0.1:1" in error["reason"]
        assert error_of(down.get("/readyz"), 503)["reason"]
        assert down.get("/healthz").status_code == 200
        metrics = down.get("/metrics").text
        assert 'streamfeat_online_read_errors_total{backend="redis"}' in metrics
    finally:
        down.close()
        table.close()


def test_feast_shape(client: ASGIClient, repo: FeatureRepo) -> None:
    body = {
        "feature_service": "fraud_scoring",
        "as_of": T_END + 30 * 60_000,
        "entities": {"user_id": ["u0", "nobody"], "merchant_id": ["m0", "m1"], "amount": [2.0, 3.0]},
    }
    response = client.post("/get-online-features", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    names = answer["metadata"]["feature_names"]
    assert names == ["user_id", "merchant_id", *repo.service("fraud_scoring").feature_names]
    assert len(answer["results"]) == len(names)
    columns = dict(zip(names, answer["results"], strict=True))
    assert columns["user_id"]["values"] == ["u0", "nobody"]
    assert columns["user_id"]["statuses"] == ["PRESENT", "PRESENT"]
    for column in answer["results"]:
        assert len(column["values"]) == len(column["statuses"]) == len(column["event_timestamps"]) == 2
    # 30 minutes after the last event the view is stale; the unknown user is NOT_FOUND.
    assert columns["amount_sum_1h"]["statuses"] == ["OUTSIDE_MAX_AGE", "NOT_FOUND"]
    assert columns["amount_sum_1h"]["event_timestamps"][0].startswith("2026-01-01T00:00:")
    fresh = client.post("/get-online-features", json={**body, "as_of": T_END}).json()
    fresh_cols = dict(zip(fresh["metadata"]["feature_names"], fresh["results"], strict=True))
    statuses = dict(zip(fresh_cols["user_id"]["values"], fresh_cols["amount_mean_15m"]["statuses"], strict=True))
    assert statuses["u0"] == "PRESENT"
    full = client.post("/get-online-features", json={**body, "full_feature_names": True}).json()
    assert "user_spend__amount_sum_1h" in full["metadata"]["feature_names"]
    assert full["metadata"]["feature_names"][:2] == ["user_id", "merchant_id"]


def feast_error_of(response: Any, status: int) -> dict[str, Any]:
    """Feast's error detail: a JSON string holding module, class and message."""
    assert response.status_code == status, response.text
    text = response.json()
    assert isinstance(text, str), text
    detail: dict[str, Any] = json.loads(text)
    assert detail["module"] == "feast.errors" and detail["message"], detail
    return detail


def _feast_columns(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))


def test_feast_null_value_and_errors(client: ASGIClient) -> None:
    body = {
        "feature_service": "fraud_scoring",
        "as_of": T_END,
        "entities": {"user_id": ["u3"], "merchant_id": ["m0"]},
        "request_context": {"amount": [1.0]},
    }
    columns = _feast_columns(client.post("/get-online-features", json=body).json())
    if columns["amount_count_15m"]["values"] == [0]:  # u3 has no purchase in the last 15 minutes
        assert columns["amount_mean_15m"]["statuses"] == ["NULL_VALUE"]
    missing = feast_error_of(client.post("/get-online-features", json={**body, "feature_service": "x"}), 404)
    assert missing["class"] == "FeatureServiceNotFoundException" and "fraud_scoring" in missing["message"]
    both = feast_error_of(client.post("/get-online-features", json={**body, "features": ["a:b"]}), 422)
    assert both["class"] == "FeastError" and both["field"] == "features" and "got both" in both["message"]
    neither = feast_error_of(client.post("/get-online-features", json={"entities": {}}), 422)
    assert "got neither" in neither["message"]
    no_amount = {"feature_service": "fraud_scoring", "entities": {"user_id": ["u3"], "merchant_id": ["m0"]}}
    assert feast_error_of(client.post("/get-online-features", json=no_amount), 422)["field"] == "entities.amount"


def test_feast_accepts_what_feasts_client_sends(client: ASGIClient) -> None:
    """The remote online store's body: version-metadata flag, fields a newer Feast may add."""
    body = {
        "feature_service": "fraud_scoring",
        "as_of": T_END,
        "full_feature_names": False,
        "include_feature_view_version_metadata": False,
        "some_future_option": {"x": 1},
        "entities": {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"], "amount": [2.0, 3.0]},
    }
    feast = _feast_columns(client.post("/get-online-features", json=body).json())
    v1 = client.post(
        "/v1/features/fraud_scoring",
        json={
            "entities": {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
            "request_data": {"amount": [2.0, 3.0]},
            "as_of": T_END,
        },
    ).json()["features"]
    for name, column in feast.items():
        assert column["values"] == [row[name] for row in v1], name


def test_feast_skips_entity_columns_the_service_does_not_take(client: ASGIClient) -> None:
    """Feast's own server skips an ``entities`` column that is no join key or request
    field (a label, a row id); so does this route, and it names them in its metadata."""
    body = {
        "feature_service": "fraud_scoring",
        "as_of": T_END,
        "entities": {"user_id": ["u0"], "merchant_id": ["m0"], "amount": [2.0], "row_id": ["r17"], "label": [1]},
    }
    response = client.post("/get-online-features", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["metadata"]["ignored_entity_columns"] == ["row_id", "label"]
    assert "row_id" not in answer["metadata"]["feature_names"]
    plain = {**body, "entities": {"user_id": ["u0"], "merchant_id": ["m0"], "amount": [2.0]}}
    clean = client.post("/get-online-features", json=plain).json()
    assert "ignored_entity_columns" not in clean["metadata"]
    assert clean["results"] == answer["results"]
    # A misspelt join key is not skipped: the missing key is refused, its hint names the spelling.
    typo = {**body, "entities": {"user_idd": ["u0"], "merchant_id": ["m0"], "amount": [2.0]}}
    detail = feast_error_of(client.post("/get-online-features", json=typo), 422)
    assert detail["field"] == "entities.user_idd" and "'user_id'" in detail["message"], detail


def test_feast_feature_references(client: ASGIClient) -> None:
    refs = [
        "user_spend:amount_count_1d",
        "merchant_activity:merchant_txn_count_1h",
        "spend_velocity:spend_velocity_ratio",
        "user_spend:amount_sum_15m",
        "user_spend:amount_count_1d",
    ]
    entities = {"user_id": ["u0", "nobody"], "merchant_id": ["m0", "m1"], "amount": [2.0, 3.0]}
    answer = client.post(
        "/get-online-features",
        json={"features": refs, "entities": entities, "as_of": T_END, "full_feature_names": True},
    )
    assert answer.status_code == 200, answer.text
    columns = _feast_columns(answer.json())
    # Join keys first, then the references grouped by view in first-appearance order, each once.
    assert list(columns) == [
        "user_id",
        "merchant_id",
        "user_spend__amount_count_1d",
        "user_spend__amount_sum_15m",
        "merchant_activity__merchant_txn_count_1h",
        "spend_velocity__spend_velocity_ratio",
    ]
    service = client.post(
        "/get-online-features",
        json={"feature_service": "fraud_scoring", "entities": entities, "as_of": T_END, "full_feature_names": True},
    ).json()
    by_service = _feast_columns(service)
    for name, column in columns.items():
        assert column == by_service[name], name
    assert columns["user_spend__amount_count_1d"]["statuses"][1] == "NOT_FOUND"
    # A view no service reads is served to references too (it is applied as defined).
    unserved = client.post(
        "/get-online-features",
        json={
            "features": ["user_unserved:purchases_1h", "user_spend:amount_count_1h"],
            "as_of": T_END,
            "entities": {"user_id": ["u0", "u1", "nobody"]},
        },
    )
    by_name = _feast_columns(unserved.json())
    assert by_name["purchases_1h"]["values"] == by_name["amount_count_1h"]["values"]
    assert by_name["purchases_1h"]["statuses"][2] == "NOT_FOUND" and by_name["purchases_1h"]["values"][0] >= 1
    # A view without request fields needs none.
    only = client.post(
        "/get-online-features",
        json={"features": ["user_spend:amount_max_1h"], "as_of": T_END, "entities": {"user_id": ["u0"]}},
    )
    assert list(_feast_columns(only.json())) == ["user_id", "amount_max_1h"]


@pytest.mark.parametrize(
    ("refs", "status", "feast_class", "words"),
    [
        (["user_spnd:amount_count_1d"], 404, "FeatureViewNotFoundException", "did you mean 'user_spend'"),
        (["user_spend:amount_count_2d"], 422, "FeastError", "no feature 'amount_count_2d'"),
        (["user_spend"], 422, "FeastError", 'expected "view:feature"'),
        ([], 422, "FeastError", "non-empty list"),
        (["user_spend:amount_sum_1h", "merchant_amounts:amount_sum_1h"], 422, "FeastError", "unique across"),
    ],
)
def test_feast_reference_errors(client: ASGIClient, refs: list[str], status: int, feast_class: str, words: str) -> None:
    body = {"features": refs, "entities": {"user_id": ["u0"], "merchant_id": ["m0"]}, "as_of": T_END}
    detail = feast_error_of(client.post("/get-online-features", json=body), status)
    assert detail["class"] == feast_class and words in detail["message"], detail


def test_feast_unknown_reference_named_by_its_position(client: ASGIClient) -> None:
    refs = ["user_spend:amount_sum_1h", "user_spend:amount_sum_1h", "user_spend:amount_count_2d"]
    body = {"features": refs, "entities": {"user_id": ["u0"]}, "as_of": T_END}
    detail = feast_error_of(client.post("/get-online-features", json=body), 422)
    assert detail["field"] == "features[2]" and "field 'features[2]'" in detail["message"], detail
    view = feast_error_of(client.post("/get-online-features", json={**body, "features": ["user_spnd:x"]}), 404)
    assert view["field"] == "features[0]", view


def test_services_and_health(client: ASGIClient) -> None:
    services = client.get("/v1/services").json()["services"]
    assert [s["name"] for s in services] == sorted(s.name for s in build_test_repo(example_repo()).services)
    fraud = client.get("/v1/services/fraud_scoring").json()
    assert fraud["inputs"]["entities"] == [
        {"name": "user_id", "type": "string"},
        {"name": "merchant_id", "type": "string"},
    ]
    assert fraud["inputs"]["request_data"] == [{"name": "amount", "type": "float"}]
    outputs = {o["name"]: o for o in fraud["outputs"]}
    assert outputs["amount_count_15m"]["type"] == "int" and outputs["spend_velocity_ratio"]["view"] == "spend_velocity"
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/features/{service}" in spec["paths"] and "/get-online-features" in spec["paths"]


def test_services_name_each_features_function_and_window(client: ASGIClient, repo: FeatureRepo) -> None:
    """A stream feature's output says how it is computed, from the view's own definition;
    an on-demand feature says only its on-demand view."""
    declared = {
        agg.output_name: (view.name, agg)
        for view in repo.views
        for declared_agg in view.aggregations
        for agg in declared_agg.expand()
    }
    for service in client.get("/v1/services").json()["services"]:
        for output in service["outputs"]:
            if output["name"] not in declared or output["view"] != declared[output["name"]][0]:
                assert {"function", "column", "window_ms"}.isdisjoint(output), output
                continue
            agg = declared[output["name"]][1]
            window = None if agg.window is None else agg.window // timedelta(milliseconds=1)
            assert (output["function"], output["column"], output["window_ms"]) == (agg.function, agg.column, window)
            if agg.n is not None:
                assert output["parameters"]["n"] == agg.n
            if isinstance(agg.q, float):
                assert output["parameters"]["q"] == agg.q
    outputs = {o["name"]: o for o in client.get("/v1/services/fraud_scoring").json()["outputs"]}
    assert outputs["user_purchases_lifetime"]["window_ms"] is None  # a lifetime window
    assert outputs["amount_p95_30d"]["function"] == "percentile" and outputs["amount_sum_15m"].get("parameters") is None


def test_metrics_histogram_and_freshness(client: ASGIClient) -> None:
    assert client.post("/v1/features/fraud_scoring", json=GOOD).status_code == 200
    client.post("/v1/features/nope", json=GOOD)
    text = client.get("/metrics").text
    assert (
        'streamfeat_request_duration_seconds_bucket{le="0.005",route="/v1/features/{service}",service="fraud_scoring"}'
        in text
    )
    assert 'streamfeat_responses_total{route="/v1/features/{service}",status="404"}' in text
    assert 'streamfeat_view_freshness_lag_seconds{view="user_spend"}' in text
    assert 'service="nope"' not in text  # unknown names do not become label values


def test_validation_and_unexpected_errors_use_the_error_shape(client: ASGIClient) -> None:
    app = client.app

    @app.get("/test-only/typed", include_in_schema=False)
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/test-only/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("boom")

    invalid = error_of(client.get("/test-only/typed", params={"n": "x"}), 422)
    assert invalid["code"] == "invalid_request" and invalid["field"] == "n"

    async def call() -> httpx.Response:
        # The framework re-raises after answering (so the server logs it): do not re-raise here.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving.test") as raw:
            return await raw.get("/test-only/boom")

    error = error_of(client._loop.run_until_complete(call()), 500)
    assert error["code"] == "internal_error" and "RuntimeError" in error["message"]

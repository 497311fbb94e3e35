"""Hostile feature requests: every one gets a clear 4xx naming the field (and the limit), or
an honest answer (never a crash, never a non-finite value labelled PRESENT).

docs/serving.md "Errors"; docs/semantics.md "Online reads and as_of".
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import META_VIEWS, T_END, rocksdb_client

ROUTE = "/v1/features/fraud_scoring"
FEAST_ROUTE = "/get-online-features"
PUSH_ROUTE = "/v1/push/transactions"
JSON_TYPE = {"content-type": "application/json"}


def _body(users: list[Any], amounts: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    n = len(users)
    return {
        "entities": {"user_id": users, "merchant_id": ["m1"] * n},
        "request_data": {"amount": [1.0] * n if amounts is None else amounts},
        **extra,
    }


def _error(client: ASGIClient, body: Any, status: int) -> dict[str, Any]:
    reply = client.post(ROUTE, content=orjson.dumps(body), headers=JSON_TYPE)
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["message"], error
    return error


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"as_of": "2025-02-29T00:00:00Z"}, "as_of", "ISO-8601"),  # no leap day in 2025
        ({"as_of": "2026-01-01T24:00:00Z"}, "as_of", "ISO-8601"),
        ({"as_of": "1767225600000"}, "as_of", "ISO-8601"),  # a number in a string is no time
        ({"as_of": None, "include_metadata": 1}, "include_metadata", "boolean"),
        ({"as_of": [T_END]}, "as_of", "one time per entity row"),  # 2 rows, 1 time
        ({"as_of": [T_END, "x"]}, "as_of[1]", "ISO-8601"),
        ({"as_of": True}, "as_of", "got boolean"),
        ({"as_of": 1_000_000_000_000}, "as_of", "log"),  # 2001: before the first event of the log
    ],
)
def test_bad_as_of_is_422_naming_the_field(client: ASGIClient, changes: dict[str, Any], field: str, words: str) -> None:
    error = _error(client, _body(["u1", "u2"], **changes), 422)
    assert error["field"] == field, error
    assert words in error["message"] + error.get("hint", ""), error


# Every refused number: the message echoes the value received and says what as_of takes;
# the hint says what to send instead. Same answer on the Feast-compatible route.
AS_OF_LIMITS = "valid: 946684800000 (2000-01-01T00:00:00Z) .. 9007199254740991 epoch milliseconds"


def _route_error(client: ASGIClient, route: str, raw: bytes, status: int) -> dict[str, Any]:
    """The error of a refused request: the documented shape, or the Feast route's (a JSON
    string whose message carries the hint)."""
    reply = client.post(route, content=raw, headers=JSON_TYPE)
    assert reply.status_code == status, reply.text
    if route == FEAST_ROUTE:
        error: dict[str, Any] = orjson.loads(reply.json())
        return error
    error = reply.json()["error"]
    error["message"] += f" (hint: {error['hint']})"
    return error


def _with_as_of(route: str, literal: bytes, per_row: bool) -> bytes:
    body = _body(["u1"])
    if route == FEAST_ROUTE:
        body = {"feature_service": "fraud_scoring", "entities": {**body["entities"], **body["request_data"]}}
    body["as_of"] = ["__t__"] if per_row else "__t__"
    return orjson.dumps(body).replace(b'"__t__"', literal)


@pytest.mark.parametrize(
    ("literal", "message", "hint"),
    [
        (
            b"1700000000",
            "1700000000 looks like epoch seconds (2023-11-14T22:13:20Z), and as_of takes epoch milliseconds",
            "multiply by 1000: send 1700000000000",
        ),
        (b"1.7e9", "1700000000.0 looks like epoch seconds", "send 1700000000000"),
        (b"1767225637.123", "1767225637.123 looks like epoch seconds", "send 1767225637123"),
        (
            b"-1",
            "-1 is before 946684800000 ms (2000-01-01T00:00:00Z), the earliest as_of: no event time can be earlier",
            AS_OF_LIMITS,
        ),
        (
            b"0",
            "0 is before 946684800000 ms (2000-01-01T00:00:00Z), the earliest as_of",
            AS_OF_LIMITS,
        ),
        (
            b'"1999-12-31T23:59:59Z"',
            "'1999-12-31T23:59:59Z' (946684799000 ms) is before 946684800000 ms",
            AS_OF_LIMITS,
        ),
        (b"9007199254740992", "9007199254740992 is beyond 9007199254740991 ms, the latest as_of", AS_OF_LIMITS),
        (b"18446744073709551615", "18446744073709551615 is beyond 9007199254740991 ms", AS_OF_LIMITS),
        (
            b"1e20",
            f"1e+20 is beyond 9007199254740991 ms, the latest as_of (event times are integers below 2^53 ms); "
            f"{AS_OF_LIMITS}",
            AS_OF_LIMITS,
        ),
        (b"-1e20", "-1e+20 is before 946684800000 ms", AS_OF_LIMITS),
        (
            b"1767225637123.0",
            "expected whole epoch milliseconds (an integer), got the number 1767225637123.0",
            "send an integer: 1767225637123",
        ),
        (
            b"1767225637123.5",
            "expected whole epoch milliseconds (an integer), got the number 1767225637123.5",
            "send an integer: 1767225637123",
        ),
    ],
)
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE])
def test_refused_as_of_numbers_name_the_value_the_unit_and_the_range(
    client: ASGIClient, route: str, per_row: bool, literal: bytes, message: str, hint: str
) -> None:
    error = _route_error(client, route, _with_as_of(route, literal, per_row), 422)
    field = "as_of[0]" if per_row else "as_of"
    assert error["code"] == "invalid_request" and error["field"] == field, error
    assert f"field '{field}': {message}" in error["message"], error
    assert hint in error["message"], error
    if AS_OF_LIMITS in hint:
        assert "(hint: send epoch milliseconds in that range" in error["message"], error


@pytest.mark.parametrize(
    ("users", "amounts", "field"),
    [
        (["u\x1f1"], None, "entities.user_id[0]"),
        (["u1", 1], None, "entities.user_id[1]"),
        (["u1", 1.0], None, "entities.user_id[1]"),
        (["u1", True], None, "entities.user_id[1]"),
        (["u1", None], None, "entities.user_id[1]"),
        ([["u1"]], None, "entities.user_id[0]"),
        (["u1"], [True], "request_data.amount[0]"),
        (["u1"], ["NaN"], "request_data.amount[0]"),
        (["u1"], [None], "request_data.amount[0]"),
        (["u1"], [{"value": 1.0}], "request_data.amount[0]"),
    ],
)
def test_wrong_types_are_422_naming_the_row(
    client: ASGIClient, users: list[Any], amounts: list[Any] | None, field: str
) -> None:
    assert _error(client, _body(users, amounts), 422)["field"] == field


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE])
def test_non_finite_request_data_is_400_naming_the_number(client: ASGIClient, route: str, literal: bytes) -> None:
    body = _body(["u1"], ["__x__"])
    if route == FEAST_ROUTE:
        body = {"feature_service": "fraud_scoring", "entities": {**body["entities"], **body["request_data"]}}
    raw = orjson.dumps(body).replace(b'"__x__"', literal)
    error = _route_error(client, route, raw, 400)
    assert error["code"] == "malformed_request", error
    offset = raw.index(literal)
    assert f"request body: {literal.decode()} at offset {offset} is not a finite JSON number" in error["message"]
    assert "send a finite number instead" in error["message"], error


def test_the_entity_limit_is_named(client: ASGIClient) -> None:  # the fixture allows 50
    error = _error(client, _body([f"u{i}" for i in range(51)]), 413)
    assert error["field"] == "entities.user_id" and "at most 50" in error["message"], error


def test_hostile_but_valid_ids_and_duplicates_are_answered_row_by_row(client: ASGIClient) -> None:
    users = ["u1", "u1", "\x00", "", " ", "u1 ", "1", "💳", "k" * 5000, "u1"]
    reply = client.post(
        ROUTE, content=orjson.dumps({**_body(users), "as_of": T_END, "include_metadata": True}), headers=JSON_TYPE
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    rows, statuses = body["features"], body["metadata"]["statuses"]
    assert len(rows) == len(users)
    assert rows[0] == rows[1] == rows[-1] and statuses[0] == statuses[1] == statuses[-1]
    assert statuses[0]["amount_count_1d"] == "PRESENT"
    for row, status, user in zip(rows[2:-1], statuses[2:-1], users[2:-1], strict=True):
        assert status["amount_count_1d"] == "NOT_FOUND", user  # no such user: never u1's values
        assert row["amount_count_1d"] == 0, user


def test_a_transform_overflowing_to_infinity_is_invalid_not_present(client: ASGIClient) -> None:
    # 1e308 / the user's 15-minute spend (at least 0.001) is beyond the largest float.
    body = {**_body(["u1", "u1"], [1e308, 10**19]), "as_of": T_END, "include_metadata": True}
    reply = client.post(ROUTE, content=orjson.dumps(body), headers=JSON_TYPE)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    first, second = answer["features"]
    assert first["spend_velocity_ratio"] is None
    assert answer["metadata"]["statuses"][0]["spend_velocity_ratio"] == "INVALID"
    assert isinstance(second["spend_velocity_ratio"], float) and math.isfinite(second["spend_velocity_ratio"])
    assert answer["metadata"]["statuses"][1]["spend_velocity_ratio"] == "PRESENT"


@pytest.fixture(scope="module")
def push_client(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ASGIClient]:
    """The app with push on. No request of these tests is valid enough to reach Kafka (each
    is refused before a record is produced), so the broker address answers nothing."""
    root = tmp_path_factory.mktemp("hostile-push")
    with rocksdb_client(
        root,
        repo,
        plan,
        events,
        meta_for=META_VIEWS,
        push_sources="transactions",
        kafka_bootstrap="127.0.0.1:9",
        max_entities_per_request=50,
        max_request_bytes=20_000,
    ) as test_client:
        yield test_client


FEAST_BODY = {
    "feature_service": "fraud_scoring",
    "entities": {"user_id": ["u1"], "merchant_id": ["m1"], "amount": [1.0]},
    "as_of": T_END,
}
BODIES = {ROUTE: _body(["u1"], as_of=T_END), FEAST_ROUTE: FEAST_BODY, PUSH_ROUTE: {"records": [{"user_id": "u1"}]}}


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "GZIP", "identity, gzip", "x-unknown"])
@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE, PUSH_ROUTE])
def test_a_compressed_body_is_415_naming_the_header_the_value_and_what_is_accepted(
    push_client: ASGIClient, route: str, encoding: str
) -> None:
    raw = orjson.dumps(BODIES[route])
    sent = gzip.compress(raw) if "gzip" in encoding.lower() else raw
    reply = push_client.post(route, content=sent, headers={**JSON_TYPE, "content-encoding": encoding})
    assert reply.status_code == 415, reply.text
    error = orjson.loads(reply.json()) if route == FEAST_ROUTE else reply.json()["error"]
    assert error["code"] == "unsupported_media_type", error
    assert f"header 'Content-Encoding': got {encoding!r}" in error["message"], error
    assert "only an uncompressed body (no Content-Encoding, or identity) is accepted" in error["message"], error
    assert "send the body uncompressed" in error.get("hint", error["message"]), error


@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE])
def test_content_encoding_identity_is_the_body_as_sent(push_client: ASGIClient, route: str) -> None:
    headers = {**JSON_TYPE, "content-encoding": "identity"}
    reply = push_client.post(route, content=orjson.dumps(BODIES[route]), headers=headers)
    plain = push_client.post(route, content=orjson.dumps(BODIES[route]), headers=JSON_TYPE)
    assert reply.status_code == 200, reply.text
    assert reply.json() == plain.json()


def _refused(client: ASGIClient, route: str, raw: bytes, status: int) -> dict[str, Any]:
    reply = client.post(route, content=raw, headers=JSON_TYPE)
    assert reply.status_code == status, reply.text
    assert "Traceback" not in reply.text
    error: dict[str, Any] = orjson.loads(reply.json()) if route == FEAST_ROUTE else reply.json()["error"]
    return error


@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE, PUSH_ROUTE])
def test_non_utf8_bytes_are_400_naming_the_byte_and_its_offset(push_client: ASGIClient, route: str) -> None:
    raw = orjson.dumps(BODIES[route]).replace(b'"u1"', b'"u\xff1"')
    error = _refused(push_client, route, raw, 400)
    offset = raw.index(b"\xff")
    assert error["code"] == "malformed_request", error
    assert (
        f"request body: expected UTF-8 JSON, got byte 0xff at offset {offset}, which is not UTF-8" in error["message"]
    )
    assert "encode the JSON as UTF-8" in error.get("hint", error["message"]), error


@pytest.mark.parametrize("depth", [500, 990, 1010, 1023])
@pytest.mark.parametrize("route", [ROUTE, FEAST_ROUTE, PUSH_ROUTE])
def test_deeply_nested_json_within_the_size_limit_is_a_4xx_never_a_500(
    push_client: ASGIClient, route: str, depth: int
) -> None:
    # orjson parses up to 1024 levels; the repeated-key check once recursed past Python's limit (a 500).
    for raw in (b'{"a":' * depth + b"1" + b"}" * depth, b'{"a":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)):
        reply = push_client.post(route, content=raw, headers=JSON_TYPE)
        assert 400 <= reply.status_code < 500, reply.text
        error = orjson.loads(reply.json()) if route == FEAST_ROUTE else reply.json()["error"]
        assert error["code"] in ("malformed_request", "invalid_request"), error
        assert error.get("field"), error


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"entities": None}, "entities", "got null"),
        ({"entities": ["u1"]}, "entities", "got array"),
        ({"request_context": []}, "request_context", "got array"),
        ({"request_context": "amount"}, "request_context", "got string"),
        ({"full_feature_names": "yes"}, "full_feature_names", 'send "full_feature_names": true or false'),
        ({"feature_service": 3}, "feature_service", "GET /v1/services lists"),
        ({"entities": {"user_id": [], "merchant_id": [], "amount": []}}, "entities", "one value per entity row"),
        ({"entities": {"user_id": ["u\x1f1"], "merchant_id": ["m1"], "amount": [1.0]}}, "entities.user_id[0]", "x1f"),
        (  # an extra column is skipped as Feast skips it, but not while a join key is missing
            {"entities": {"user": ["u1"], "merchant_id": ["m1"], "amount": [1.0], "card": ["c"]}},
            "entities.user",
            "valid",
        ),
        ({"features": ["nocolon"], "feature_service": None}, "features[0]", "one colon"),
    ],
)
def test_feast_route_refusals_name_the_field_and_a_fix(
    client: ASGIClient, changes: dict[str, Any], field: str, words: str
) -> None:
    error = _refused(client, FEAST_ROUTE, orjson.dumps({**FEAST_BODY, **changes}), 422)
    assert error["field"] == field, error
    assert f"field '{field}'" in error["message"] and "(hint: " in error["message"], error
    assert words in error["message"], error


def test_push_refuses_a_field_it_does_not_take(push_client: ASGIClient) -> None:
    error = _refused(push_client, PUSH_ROUTE, orjson.dumps({"records": [{"user_id": "u1"}], "recrods": []}), 422)
    assert error["field"] == "recrods", error
    assert error["message"] == "field 'recrods': not a field of this request", error
    assert error["hint"] == "did you mean 'records'? valid fields: 'records'", error


@pytest.mark.parametrize(
    ("changes", "status", "field", "message", "hint"),
    [
        (
            {"features": ["user_spend:amount_sum_15m"]},
            422,
            "features",
            "field 'features': not a field of this request",
            'POST /get-online-features with "features": [...]',
        ),
        (
            {"feature_service": "fraud_scoring"},
            422,
            "feature_service",
            "field 'feature_service': not a field of this request",
            "this route takes the service in its path: POST /v1/features/{service}",
        ),
        (
            {"entities": {"user_id": ["u1"], "merchant_id": ["m1"], "": ["x"]}},
            422,
            'entities.""',
            "field 'entities.\"\"': not an input of this service (a column with an empty name)",
            "valid names: 'merchant_id', 'user_id'",
        ),
        (
            {"entities": {"user_id": ["u1"], "merchant_id": ["m1"], "card_" + "x" * 500: ["x"]}},
            422,
            "entities.card_" + "x" * 500,
            "field 'entities.card_" + "x" * 42 + "...: not an input of this service",
            "valid names: 'merchant_id', 'user_id'",
        ),
        (
            {"request_data": None},
            422,
            "request_data",
            "field 'request_data': required: service 'fraud_scoring' takes request data 'amount' "
            "(one value per entity row), got none",
            'add "request_data": {"amount": [...]}',
        ),
        (
            {"entities": {"user_id": ["u1", "u2"], "merchant_id": ["m1", "m2"]}, "request_data": {"amount": [1.0]}},
            422,
            "request_data.amount",
            "field 'request_data.amount': expected 2 values (one per entity row, as most lists have), "
            "got 1; list lengths: entities.user_id 2, entities.merchant_id 2, request_data.amount 1",
            "row i of the request is the i-th value of every list",
        ),
        (
            {"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [None]}},
            422,
            "request_data.amount[0]",
            "field 'request_data.amount[0]': expected float, got null",
            "every value of a column has the declared type",
        ),
        (
            {"entities": {"user_id": [f"u{i}" for i in range(51)], "merchant_id": ["m1"]}},
            413,
            "entities.user_id",
            "field 'entities.user_id': 51 entities, at most 50 per request",
            "split the request",
        ),
    ],
)
def test_v1_refusals_of_fields_names_and_counts_name_the_field_and_the_fix(
    client: ASGIClient, changes: dict[str, Any], status: int, field: str, message: str, hint: str
) -> None:
    body = {**_body(["u1"]), **changes}
    body = {k: v for k, v in body.items() if v is not None}
    error = _error(client, body, status)
    assert error["field"] == field, error
    assert error["message"] == message, error
    assert hint in error["hint"], error


def test_an_unknown_service_is_404_and_a_long_name_is_not_echoed_whole(client: ASGIClient) -> None:
    for name, shown in [("fraud_scorng", "'fraud_scorng' is not defined"), ("s" * 5000, f"'{'s' * 56}... is not")]:
        reply = client.post(f"/v1/features/{name}", content=orjson.dumps(_body(["u1"])), headers=JSON_TYPE)
        assert reply.status_code == 404, reply.text
        error = reply.json()["error"]
        assert error["code"] == "service_not_found" and error["field"] == "service", error
        assert shown in error["message"] and len(error["message"]) < 120, error
        assert "valid services: " in error["hint"], error
    error = _refused(client, FEAST_ROUTE, orjson.dumps({**FEAST_BODY, "feature_service": "s" * 5000}), 404)
    assert error["class"] == "FeatureServiceNotFoundException" and f"'{'s' * 56}... is not" in error["message"], error


@pytest.mark.parametrize(
    ("entities", "field", "words"),
    [
        # (beside every join key an unknown column is skipped, as Feast's server skips it)
        ({"": ["x"]}, 'entities.""', "(a column with an empty name) (hint: valid names: 'user_id')"),
        ({}, "entities.user_id", 'required (string values, one per entity row) (hint: add "user_id": [...]'),
        ({"user_id": []}, "entities", "expected at least one entity, got empty lists"),
        ({"user_id": [f"u{i}" for i in range(51)]}, "entities.user_id", "51 entities, at most 50 per request"),
    ],
)
def test_feast_feature_references_with_empty_or_too_many_entities_name_the_field(
    client: ASGIClient, entities: dict[str, Any], field: str, words: str
) -> None:
    body = {"features": ["user_spend:amount_sum_15m"], "entities": entities, "as_of": T_END}
    status = 413 if "at most" in words else 422
    error = _refused(client, FEAST_ROUTE, orjson.dumps(body), status)
    assert error["field"] == field and words in error["message"], error


@pytest.mark.parametrize(
    ("raw", "status", "field", "message", "hint"),
    [
        (b'{"records": "x"}', 422, "records", "expected a non-empty list of event objects, got string", "{...}"),
        (b'{"records": []}', 422, "records", "expected a non-empty list of event objects, got an empty list", "{...}"),
        (b"{}", 422, "records", "expected a non-empty list of event objects, got null", '{"records": [{...}'),
        (b"[]", 422, "body", "request body: expected a JSON object, got array", 'send {"records": [{...}, ...]}'),
        (
            orjson.dumps({"records": [{"user_id": "u1"}] * 51}),
            413,
            "records",
            "field 'records': 51 records, at most 50 per request",
            "split the request",
        ),
    ],
)
def test_push_refusals_name_what_was_received_and_the_shape_to_send(
    push_client: ASGIClient, raw: bytes, status: int, field: str, message: str, hint: str
) -> None:
    error = _refused(push_client, PUSH_ROUTE, raw, status)
    assert error["field"] == field and message in error["message"], error
    assert hint in error["hint"], error


def test_push_to_an_unknown_source_is_404_and_a_long_name_is_cut(push_client: ASGIClient) -> None:
    for name, shown in [("transaction", "'transaction' is not defined"), ("x" * 3000, f"'{'x' * 56}... is not")]:
        reply = push_client.post(f"/v1/push/{name}", content=orjson.dumps(BODIES[PUSH_ROUTE]), headers=JSON_TYPE)
        assert reply.status_code == 404, reply.text
        error = reply.json()["error"]
        assert error["code"] == "source_not_found" and shown in error["message"], error
        assert len(error["message"]) < 120 and error["hint"].endswith("valid sources: 'transactions'"), error

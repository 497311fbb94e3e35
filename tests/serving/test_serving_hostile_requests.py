"""Hostile feature requests: every one gets a clear 4xx naming the field (and the limit), or
an honest answer (never a crash, never a non-finite value labelled PRESENT).

docs/serving.md "Errors"; docs/semantics.md "Online reads and as_of".
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import T_END

ROUTE = "/v1/features/fraud_scoring"
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
        ({"as_of": -1}, "as_of", "0 <= ms < 2^53"),
        ({"as_of": 2**53}, "as_of", "0 <= ms < 2^53"),
        ({"as_of": 2**64 - 1}, "as_of", "0 <= ms < 2^53"),
        ({"as_of": 1.767e12}, "as_of", "epoch milliseconds"),
        ({"as_of": "2025-02-29T00:00:00Z"}, "as_of", "ISO-8601"),  # no leap day in 2025
        ({"as_of": "2026-01-01T24:00:00Z"}, "as_of", "ISO-8601"),
        ({"as_of": "1767225600000"}, "as_of", "ISO-8601"),  # a number in a string is no time
        ({"as_of": None, "include_metadata": 1}, "include_metadata", "boolean"),
        ({"as_of": [T_END]}, "as_of", "one time per entity row"),  # 2 rows, 1 time
        ({"as_of": [T_END, "x"]}, "as_of[1]", "ISO-8601"),
        ({"as_of": 0}, "as_of", "log"),  # before the first event any log holds
    ],
)
def test_bad_as_of_is_422_naming_the_field(client: ASGIClient, changes: dict[str, Any], field: str, words: str) -> None:
    error = _error(client, _body(["u1", "u2"], **changes), 422)
    assert error["field"] == field, error
    assert words in error["message"] + error.get("hint", ""), error


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


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_request_data_is_400_not_a_transform_input(client: ASGIClient, literal: bytes) -> None:
    raw = orjson.dumps(_body(["u1"], ["__x__"])).replace(b'"__x__"', literal)
    reply = client.post(ROUTE, content=raw, headers=JSON_TYPE)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "malformed_request"


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

"""Served values against the brute-force reference, for both online tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.definitions import FeatureRepo, StreamFeatureView
from engine.plan import AppliedPlan
from engine.state import RedisOnlineTable
from serving.registry import build_registry
from tests.engine.streaming_support import expected_values
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import MERCHANTS, T_END, USERS, passes

MINUTE = 60_000


def post(client: ASGIClient, service: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/features/{service}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def expected(
    view: StreamFeatureView, events: list[dict[str, Any]], entity: str | tuple[str, ...], t: int
) -> dict[str, Any]:
    """The reference values of ``view``; ``entity`` is a tuple for a view of several join keys."""
    keys = view.join_keys
    rows = [
        {
            **e,  # the list functions read their own column (merchant_id)
            "entity": e[keys[0]] if len(keys) == 1 else tuple(e[k] for k in keys),
            "e": e["ts"],
            "partition": e["partition"],
            "offset": e["offset"],
            "value": e["amount"],
            "merchant_id": e["merchant_id"],
            "card_id": e["card_id"],
        }
        for e in passes(view, events)
    ]
    return expected_values(view, rows, entity, t, filter=None)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list) or isinstance(b, list):  # the list functions: exact
        return bool(a == b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def fraud_body(users: list[str], merchants: list[str], amounts: list[float], t: int) -> dict[str, Any]:
    return {
        "entities": {"user_id": users, "merchant_id": merchants},
        "request_data": {"amount": amounts},
        "as_of": t,
        "include_metadata": True,
    }


@pytest.mark.parametrize("offset_ms", [0, 7 * MINUTE, 50 * MINUTE, 25 * 60 * MINUTE])
def test_many_entities_match_reference(
    backend_client: ASGIClient,
    repo: FeatureRepo,
    events: list[dict[str, Any]],
    offset_ms: int,
) -> None:
    t = T_END + offset_ms
    users = [*USERS, "u0"]
    merchants = [MERCHANTS[i % len(MERCHANTS)] for i in range(len(users))]
    amounts = [12.5 * (i + 1) for i in range(len(users))]
    body = post(backend_client, "fraud_scoring", fraud_body(users, merchants, amounts, t))
    assert body["as_of"] == t
    assert len(body["features"]) == len(users)
    service = repo.service("fraud_scoring")
    user_spend, merchant_activity = repo.view("user_spend"), repo.view("merchant_activity")
    pair_view = repo.view("user_merchant_spend")
    for user, merchant, amount, row in zip(users, merchants, amounts, body["features"], strict=True):
        assert list(row) == ["user_id", "merchant_id", *service.feature_names]
        assert (row["user_id"], row["merchant_id"]) == (user, merchant)
        want_user = expected(user_spend, events, user, t)
        want_merchant = expected(merchant_activity, events, merchant, t)
        for name in user_spend.feature_names:
            assert close(row[name], want_user[name]), (name, user, row[name], want_user[name])
        for name in ("merchant_txn_count_15m", "merchant_txn_count_1h"):
            assert row[name] == want_merchant[name]
        # The user x merchant view is read in the same request, keyed by both join keys.
        want_pair = expected(pair_view, events, (user, merchant), t)
        for name in pair_view.feature_names:
            assert close(row[name], want_pair[name]), (name, user, merchant, row[name], want_pair[name])
        ratio = amount / max(want_user["amount_sum_15m"] or 0.0, 0.001)
        assert close(row["spend_velocity_ratio"], ratio)
        merchant_sum = want_merchant["merchant_amount_sum_1h"] or 0.0
        share = (want_user["amount_sum_1h"] or 0.0) / merchant_sum if merchant_sum > 0 else 0.0
        assert close(row["user_merchant_share_1h"], share)


@pytest.mark.parametrize("n_users", [1, len(USERS) + 1])
def test_a_service_selecting_few_features_matches_reference(
    backend_client: ASGIClient,
    repo: FeatureRepo,
    events: list[dict[str, Any]],
    n_users: int,
) -> None:
    t = T_END + 3 * MINUTE
    users = [*USERS, "u0"][:n_users]
    merchants = [MERCHANTS[i % len(MERCHANTS)] for i in range(n_users)]
    body = post(backend_client, "user_subset", {"entities": {"user_id": users, "merchant_id": merchants}, "as_of": t})
    user_spend, merchant_activity = repo.view("user_spend"), repo.view("merchant_activity")
    for user, merchant, row in zip(users, merchants, body["features"], strict=True):
        assert list(row) == ["merchant_id", "user_id", "merchant_txn_count_1h", "amount_max_1h"]
        assert row["merchant_txn_count_1h"] == expected(merchant_activity, events, merchant, t)["merchant_txn_count_1h"]
        assert close(row["amount_max_1h"], expected(user_spend, events, user, t)["amount_max_1h"])


@pytest.mark.parametrize("n_users", [1, len(USERS) + 1])
def test_a_name_in_two_views_is_read_from_the_declared_one(
    backend_client: ASGIClient,
    repo: FeatureRepo,
    events: list[dict[str, Any]],
    n_users: int,
) -> None:
    t = T_END + 5 * MINUTE
    users = [*USERS, "u0"][:n_users]
    merchants = [MERCHANTS[i % len(MERCHANTS)] for i in range(n_users)]
    amounts = [40.0 + i for i in range(n_users)]
    body = post(
        backend_client,
        "shadowed",
        {"entities": {"user_id": users, "merchant_id": merchants}, "request_data": {"amount": amounts}, "as_of": t},
    )
    user_spend, merchant_amounts = repo.view("user_spend"), repo.view("merchant_amounts")
    for user, merchant, amount, row in zip(users, merchants, amounts, body["features"], strict=True):
        user_sum = expected(user_spend, events, user, t)["amount_sum_1h"]
        merchant_sum = expected(merchant_amounts, events, merchant, t)["amount_sum_1h"]
        assert user_sum != merchant_sum
        assert close(row["amount_sum_1h"], user_sum)
        assert close(row["merchant_ratio"], amount / max(merchant_sum or 0.0, 0.001))


def test_services_evaluate_only_the_windows_they_use(repo: FeatureRepo, plan: AppliedPlan) -> None:
    registry = build_registry(repo, plan)
    subset = {v.name: v for v in registry.service("user_subset").views}
    assert subset["user_spend"].spec.output_names == ("amount_max_1h",)
    assert subset["user_spend"].plan.names == ("amount_max_1h",)
    assert subset["merchant_activity"].feature_names == ("merchant_txn_count_1h",)
    # batch_review returns three user_spend features; its transform reads two of them.
    review = registry.service("batch_review").views[0]
    assert set(review.feature_names) == {"amount_sum_1d", "amount_mean_1d", "amount_stddev_1d"}
    full = repo.view("user_spend").feature_names
    fraud = {v.name: v for v in registry.service("fraud_scoring").views}
    assert fraud["user_spend"].feature_names == full  # the service returns the whole view
    assert fraud["merchant_activity"].feature_names == (  # two returned, one for a transform
        "merchant_txn_count_15m",
        "merchant_txn_count_1h",
        "merchant_amount_sum_1h",
    )
    assert registry.views["user_spend"].feature_names == full


def test_single_entity_equals_batch_row(backend_client: ASGIClient) -> None:
    batch = post(backend_client, "fraud_scoring", fraud_body(list(USERS), ["m1"] * 5, [30.0] * 5, T_END))
    for i, user in enumerate(USERS):
        single = post(backend_client, "fraud_scoring", fraud_body([user], ["m1"], [30.0], T_END))
        # evaluate (one entity) and evaluate_many sum tiles in different orders: compare with tolerance.
        one, many = single["features"][0], batch["features"][i]
        assert list(one) == list(many)
        assert all(v == many[k] if isinstance(v, str) else close(v, many[k]) for k, v in one.items())
        assert single["metadata"]["statuses"][0] == batch["metadata"]["statuses"][i]


def test_window_decays_and_turns_stale(backend_client: ASGIClient, repo: FeatureRepo) -> None:
    now = post(backend_client, "fraud_scoring", fraud_body(["u0"], ["m0"], [1.0], T_END))
    assert now["features"][0]["amount_count_15m"] >= 1
    assert set(now["metadata"]["statuses"][0].values()) == {"PRESENT"}
    view_meta = now["metadata"]["views"]["user_spend"]
    assert view_meta["stale"] is False and 0 <= view_meta["freshness_lag_ms"] < 5 * MINUTE
    later = post(backend_client, "fraud_scoring", fraud_body(["u0"], ["m0"], [1.0], T_END + 17 * MINUTE))
    row, statuses = later["features"][0], later["metadata"]["statuses"][0]
    assert row["amount_count_15m"] == 0 and row["amount_sum_15m"] == 0.0 and row["amount_mean_15m"] is None
    assert row["amount_count_1h"] >= 1  # the longer window still holds the events
    assert later["metadata"]["views"]["user_spend"]["stale"] is True
    assert later["metadata"]["views"]["user_spend"]["freshness_lag_ms"] > 5 * MINUTE
    assert {statuses[f] for f in repo.view("user_spend").feature_names} == {"STALE"}
    assert statuses["spend_velocity_ratio"] == "STALE"


def test_unknown_entity_is_not_found(backend_client: ASGIClient) -> None:
    body = post(backend_client, "fraud_scoring", fraud_body(["nobody", "u1"], ["m0", "m0"], [5.0, 5.0], T_END))
    row, statuses = body["features"][0], body["metadata"]["statuses"][0]
    assert row["amount_count_1d"] == 0 and row["amount_sum_1d"] == 0.0 and row["amount_max_1h"] is None
    assert statuses["amount_count_1d"] == "NOT_FOUND"
    assert statuses["spend_velocity_ratio"] == "NOT_FOUND"  # reads the missing user
    assert statuses["merchant_txn_count_1h"] == "PRESENT"
    assert row["spend_velocity_ratio"] == 5.0 / 0.001
    assert body["metadata"]["statuses"][1]["amount_count_1d"] == "PRESENT"


def test_default_applies_to_empty_window(backend_client: ASGIClient) -> None:
    body = {
        "entities": {"user_id": ["u0", "nobody"]},
        "request_data": {"amount": [4.0, 4.0]},
        "as_of": T_END + 20 * MINUTE,
        "include_metadata": True,
    }
    result = post(backend_client, "with_defaults", body)
    row, statuses = result["features"][0], result["metadata"]["statuses"][0]
    assert row["amount_max_15m_or_default"] == -1.0
    assert statuses["amount_max_15m_or_default"] == "DEFAULTED"
    assert row["purchases_30m"] >= 1 and statuses["purchases_30m"] == "PRESENT"
    assert row["flaky_out"] == 8.0
    assert result["metadata"]["statuses"][1]["amount_max_15m_or_default"] == "NOT_FOUND"
    meta = result["metadata"]["views"]["user_defaults"]
    assert meta["freshness_lag_ms"] is None and meta["stale"] is False  # no ingest metadata: unknown


def backend_of(client: ASGIClient) -> str:
    return "redis" if isinstance(client.app.state.serving.online.table, RedisOnlineTable) else "rocksdb"


def test_as_of_forms_and_exact_head_tile(
    backend_client: ASGIClient, repo: FeatureRepo, events: list[dict[str, Any]]
) -> None:
    iso = datetime.fromtimestamp(T_END / 1000, UTC).isoformat()
    by_int = post(backend_client, "fraud_scoring", fraud_body(["u2"], ["m2"], [3.0], T_END))
    by_iso = post(backend_client, "fraud_scoring", {**fraud_body(["u2"], ["m2"], [3.0], T_END), "as_of": iso})
    assert by_iso == by_int
    # u0's last event is at T_END - 2 s: as of T_END - 2.5 s its tile holds a newer event, so the
    # online record cannot answer; the Parquet log does (both tables record how far it is published).
    t = T_END - 2_500
    body = fraud_body(["u0", "u3"], ["m0", "m0"], [1.0, 1.0], t)
    head = post(backend_client, "fraud_scoring", body)
    assert head["metadata"]["sources"][0]["user_spend"] == "log"
    assert head["metadata"]["sources"][1]["user_spend"] == "online"
    assert "as_of_in_head_tile" not in head["metadata"]
    user_spend = repo.view("user_spend")
    for user, row in zip(["u0", "u3"], head["features"], strict=True):
        want = expected(user_spend, events, user, t)
        for name in user_spend.feature_names:
            assert close(row[name], want[name]), (user, name, row[name], want[name])
    assert head["metadata"]["statuses"][0]["amount_sum_15m"] == "PRESENT"


@pytest.mark.redis
def test_redis_without_offset_records_refuses_log_rows(backend_client: ASGIClient, repo: FeatureRepo) -> None:
    """A Redis copy written before it recorded offsets cannot tell how far the log is
    published: rows that need the log are refused (422) with why, never guessed."""
    import redis

    from engine.state.records import redis_offsets_key

    if backend_of(backend_client) != "redis":
        pytest.skip("the RocksDB table always has its shards' offset records")
    table = backend_client.app.state.serving.online.table
    topic = repo.view("user_spend").source.topic
    client = redis.Redis.from_url(table.url)
    saved: dict[str | bytes, bytes | float | int | str] = {
        k: v for k, v in client.hgetall(redis_offsets_key(topic)).items()
    }
    client.delete(redis_offsets_key(topic))
    try:
        response = backend_client.post(
            "/v1/features/fraud_scoring", json=fraud_body(["u0"], ["m0"], [1.0], T_END - 2_500)
        )
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert f"holds no offset records of topic '{topic}'" in message and "written by `streamfeat run`" in message
        # Rows the online record answers exactly are still served.
        assert post(backend_client, "fraud_scoring", fraud_body(["u0"], ["m0"], [1.0], T_END))["features"]
    finally:
        client.hset(redis_offsets_key(topic), mapping=saved)
        client.close()


def test_one_as_of_per_row(client: ASGIClient, repo: FeatureRepo, events: list[dict[str, Any]]) -> None:
    backend_client = client  # RocksDB: row 1 needs the Parquet log
    times = [T_END, T_END - 3 * 3_600_000, T_END + 10 * MINUTE]
    users = ["u1", "u1", "u2"]
    body = {**fraud_body(users, ["m0", "m1", "m2"], [1.0, 2.0, 3.0], T_END), "as_of": times}
    answer = post(backend_client, "fraud_scoring", body)
    assert answer["as_of"] == times
    user_spend = repo.view("user_spend")
    for user, t, row in zip(users, times, answer["features"], strict=True):
        want = expected(user_spend, events, user, t)
        for name in user_spend.feature_names:
            assert close(row[name], want[name]), (user, t, name)
    # The same rows asked one at a time answer the same values.
    for i, t in enumerate(times):
        single = post(
            backend_client, "fraud_scoring", fraud_body([users[i]], [["m0", "m1", "m2"][i]], [[1.0, 2.0, 3.0][i]], t)
        )
        assert all(
            close(single["features"][0][k], v) for k, v in answer["features"][i].items() if not isinstance(v, str)
        )
    # The Feast route takes the same per-row times.
    feast = backend_client.post(
        "/get-online-features",
        json={
            "feature_service": "fraud_scoring",
            "as_of": times,
            "entities": {"user_id": users, "merchant_id": ["m0", "m1", "m2"], "amount": [1.0, 2.0, 3.0]},
        },
    ).json()
    column = feast["results"][feast["metadata"]["feature_names"].index("amount_sum_1d")]["values"]
    assert all(close(a, row["amount_sum_1d"]) for a, row in zip(column, answer["features"], strict=True))
    wrong = backend_client.post("/v1/features/fraud_scoring", json={**body, "as_of": times[:2]})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "as_of"
    bad_item = backend_client.post("/v1/features/fraud_scoring", json={**body, "as_of": [T_END, "x", T_END]})
    assert bad_item.status_code == 422 and bad_item.json()["error"]["field"] == "as_of[1]"


# Any: an as_of as a caller may send it (number or string)
def _refused_as_of(client: ASGIClient, as_of: Any) -> dict[str, Any]:
    """The 422 error of a one-row fraud_scoring request at ``as_of``, checked to name the field."""
    response = client.post(
        "/v1/features/fraud_scoring", json={**fraud_body(["u1"], ["m1"], [1.0], T_END), "as_of": as_of}
    )
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["field"] == "as_of"
    return error


@pytest.mark.parametrize("as_of", [253_402_300_799_000, "9999-12-31T23:59:59Z"])
def test_absurd_as_of_is_refused_with_the_allowed_range(client: ASGIClient, as_of: Any) -> None:
    error = _refused_as_of(client, as_of)
    assert "outside the times view" in error["message"] and "max_future_skew" in error["message"]
    assert "first event in the Parquet log" in error["message"]


@pytest.mark.parametrize("as_of", [0, "1970-01-01T00:00:00Z"])
def test_as_of_before_any_event_time_is_refused_with_the_range(client: ASGIClient, as_of: Any) -> None:
    error = _refused_as_of(client, as_of)
    assert "is before 946684800000 ms (2000-01-01T00:00:00Z), the earliest as_of" in error["message"], error
    assert "valid: 946684800000 (2000-01-01T00:00:00Z) .. 9007199254740991 epoch milliseconds" in error["message"]


def test_default_time_is_wall_clock(backend_client: ASGIClient) -> None:
    before = datetime.now(UTC).timestamp() * 1000
    body = post(
        backend_client,
        "fraud_scoring",
        {"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [1.0]}},
    )
    assert before - 1 <= body["as_of"] <= datetime.now(UTC).timestamp() * 1000 + 1
    assert "metadata" not in body


def test_batch_mode_transform_matches_reference(
    backend_client: ASGIClient, repo: FeatureRepo, events: list[dict[str, Any]]
) -> None:
    users = list(USERS)
    amounts = [40.0 + 7.5 * i for i in range(len(users))]
    body = post(
        backend_client,
        "batch_review",
        {"entities": {"user_id": users}, "request_data": {"amount": amounts}, "as_of": T_END},
    )
    user_spend = repo.view("user_spend")
    assert len(body["features"]) == len(users)
    for user, amount, row in zip(users, amounts, body["features"], strict=True):
        want = expected(user_spend, events, user, T_END)
        for name in ("amount_sum_1d", "amount_mean_1d", "amount_stddev_1d"):
            assert close(row[name], want[name]), (name, user)
        mean, spread = want["amount_mean_1d"], max(want["amount_stddev_1d"] or 0.0, 1.0)
        score = 0.0 if mean is None else (amount - mean) / spread
        assert close(row["amount_zscore_1d"], score), user

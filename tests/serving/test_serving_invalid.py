"""Hostile values at serving: overflowed windows are INVALID, never PRESENT, and a
future-dated event cannot keep a view fresh (issue 14, items 1 and 2).

Two purchases of 1e308 overflow the user's sums: before the INVALID status they were served
as null with status PRESENT (and the Feast route said PRESENT too) and a numpy warning went
to stderr (pytest turns it into an error here). One event 4 minutes ahead of the wall clock
used to count as the newest event time, so freshness looked 4 minutes better than it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import META_VIEWS, T_END, rocksdb_client

MINUTE = 60_000
FUTURE_MS = 4 * MINUTE  # the freshness records say: newest event T_END + 4 min, written at T_END


def _huge(offset: int, ts: int) -> dict[str, Any]:
    return {
        "transaction_id": f"huge{offset}",
        "user_id": "huge",
        "merchant_id": "m0",
        "card_id": "c0",
        "amount": 1e308,
        "event_type": "PURCHASE",
        "ts": ts,
        "partition": 1,
        "offset": offset,
    }


@pytest.fixture(scope="module")
def huge_client(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ASGIClient]:
    # Two different tiles, so the overflow happens in the window merge, not in one tile.
    ahead = {**_huge(2, T_END + FUTURE_MS), "user_id": "ahead", "amount": 1.0}
    rows = [*events, _huge(0, T_END - 200_000), _huge(1, T_END - 3_000), ahead]
    with rocksdb_client(tmp_path_factory.mktemp("huge"), repo, plan, rows, meta_for=META_VIEWS) as client:
        yield client


def test_overflowed_sums_are_invalid_and_counted(huge_client: ASGIClient) -> None:
    body = {
        "entities": {"user_id": ["huge", "u0"], "merchant_id": ["m1", "m1"]},
        "request_data": {"amount": [5.0, 5.0]},
        "as_of": T_END,
        "include_metadata": True,
    }
    response = huge_client.post("/v1/features/fraud_scoring", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    row, statuses = answer["features"][0], answer["metadata"]["statuses"][0]
    for name in ("amount_sum_15m", "amount_mean_15m", "amount_sum_1d", "amount_stddev_1d"):
        assert row[name] is None and statuses[name] == "INVALID", (name, row[name], statuses[name])
    assert row["amount_count_15m"] == 2 and statuses["amount_count_15m"] == "PRESENT"
    assert row["amount_max_1h"] == 1e308 and statuses["amount_max_1h"] == "PRESENT"
    # The transform reads the overflowed sum: its finite output is INVALID too.
    assert statuses["spend_velocity_ratio"] == "INVALID"
    assert set(answer["metadata"]["statuses"][1].values()) == {"PRESENT"}
    metrics = huge_client.get("/metrics").text
    assert 'streamfeat_invalid_values_total{view="user_spend"}' in metrics
    # Feast has no INVALID: a null value it is.
    feast = huge_client.post(
        "/get-online-features",
        json={
            "feature_service": "fraud_scoring",
            "as_of": T_END,
            "entities": {"user_id": ["huge"], "merchant_id": ["m1"], "amount": [5.0]},
        },
    ).json()
    columns = dict(zip(feast["metadata"]["feature_names"], feast["results"], strict=True))
    assert columns["amount_sum_15m"]["values"] == [None]
    assert columns["amount_sum_15m"]["statuses"] == ["NULL_VALUE"]


def test_future_dated_newest_event_does_not_make_a_view_look_fresh(huge_client: ASGIClient) -> None:
    # Six minutes after the write: the lag is 6 minutes (beyond expected_freshness, 5), not
    # the 2 minutes that the future-dated event time would give.
    body = {
        "entities": {"user_id": ["u0"], "merchant_id": ["m0"]},
        "request_data": {"amount": [1.0]},
        "as_of": T_END + 6 * MINUTE,
        "include_metadata": True,
    }
    answer = huge_client.post("/v1/features/fraud_scoring", json=body).json()
    view = answer["metadata"]["views"]["user_spend"]
    assert view["max_event_ts_ms"] == T_END + FUTURE_MS
    assert view["freshness_lag_ms"] == 6 * MINUTE
    assert view["stale"] is True
    assert answer["metadata"]["statuses"][0]["amount_count_1h"] == "STALE"

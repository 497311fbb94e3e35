"""Where exact answers end: a Parquet log not yet published, and events stamped after the
evaluation time at wall-clock reads (docs/semantics.md section 3, docs/serving.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.clock import wall_clock_ms
from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from engine.state import OffsetRecord, RocksDBOnlineTable, RocksDBStore
from engine.state.offsets import INT64_MIN
from serving.history import log_complete_through
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import N_SHARDS, T_END, make_app, write_log, write_rocksdb

LATENESS = 5 * 60_000  # the example source's allowed_lateness


def test_log_complete_through_takes_the_least_published_watermark() -> None:
    published = OffsetRecord(10, (5_000,), 10, (5_000,))
    lagging = OffsetRecord(20, (9_000,), 15, (7_000,))
    behind = OffsetRecord(30, (9_500,), 12, (8_000,))
    assert log_complete_through([{0: published}], LATENESS) is None
    assert log_complete_through([{0: published, 1: lagging}, {1: behind}], 1_000) == 7_000 - 1_000 - 1
    assert log_complete_through([{0: OffsetRecord(3, (100,), -1, ())}], 1_000) == INT64_MIN
    # With one outlier tolerated the watermark follows the second largest time.
    assert log_complete_through([{1: OffsetRecord(20, (9_000, 8_000), 15, (90_000, 7_000))}], 1_000, 2) == 5_999


def fraud(users: list[str], t: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "entities": {"user_id": users, "merchant_id": ["m0"] * len(users)},
        "request_data": {"amount": [1.0] * len(users)},
        "include_metadata": True,
    }
    if t is not None:
        body["as_of"] = t
    return body


def write_state_and_log(root: Path, repo: FeatureRepo, events: list[dict[str, Any]], meta_for: tuple[str, ...]) -> None:
    write_log(str(root / "log"), repo.views, events)
    write_rocksdb(root / "state", repo.views, events, meta_for=meta_for)


def publish_log_only_to_event_300(root: Path, events: list[dict[str, Any]]) -> int:
    """Shard 0 has published partition 0 only up to event 300; the state holds all of them.
    Returns the time through which the log is complete."""
    cut = events[300]
    with RocksDBStore(root / "state", N_SHARDS) as store:
        txn = store.partition(0).begin()
        txn.set_offset(
            "transactions",
            0,
            OffsetRecord(len(events) - 1, (T_END - 2_000, T_END - 3_000), 300, (cut["ts"], cut["ts"] - 1_000)),
        )
        txn.commit()
    # The example source tolerates one outlier: the watermark follows the second largest time.
    complete: int = cut["ts"] - 1_000 - LATENESS - 1
    return complete


@contextmanager
def served(root: Path, repo: FeatureRepo, plan: AppliedPlan, log_dir: str = "log") -> Iterator[ASGIClient]:
    """An ASGI client of the app over ``root``'s state and ``root / log_dir``."""
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    client = ASGIClient(make_app(repo, plan, table, log_root=str(root / log_dir)))
    try:
        yield client
    finally:
        client.close()
        table.close()


def test_a_log_behind_the_state_refuses_what_it_lacks(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    write_state_and_log(tmp_path, repo, events, ("user_spend", "merchant_activity"))
    complete = publish_log_only_to_event_300(tmp_path, events)
    with served(tmp_path, repo, plan) as client:
        # u0 has newer events than T_END - 2.5 s: only the log could answer, and it is not
        # published that far.
        refused = client.post("/v1/features/fraud_scoring", json=fraud(["u0"], T_END - 2_500))
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert f".. {complete} (" in message and "cannot be answered exactly for row 0" in message
        # Before the published bound the log answers.
        answered = client.post("/v1/features/fraud_scoring", json=fraud(["u0"], complete))
        assert answered.status_code == 200, answered.text
        assert answered.json()["metadata"]["sources"][0]["user_spend"] == "log"


def test_lifetime_view_answers_old_as_of_from_the_log_or_names_the_compacted_horizon(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    write_state_and_log(tmp_path, repo, events, ("user_spend", "user_lifetime"))
    complete = publish_log_only_to_event_300(tmp_path, events)
    view = repo.view("user_lifetime")
    purchases = [e for e in events if e["user_id"] == "u0" and e["event_type"] == "PURCHASE"]
    newest = max(e["ts"] for e in purchases)
    with served(tmp_path, repo, plan) as client:
        refused = client.post("/v1/features/lifetime", json={"entities": {"user_id": ["u0"]}, "as_of": T_END - 2_500})
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert f"before {newest - view.retention_ms} (" in message and "compacted horizon" in message
        for t in (complete, newest):  # from the log, then from the online record
            answer = client.post(
                "/v1/features/lifetime", json={"entities": {"user_id": ["u0"]}, "as_of": t, "include_metadata": True}
            )
            assert answer.status_code == 200, answer.text
            row = answer.json()["features"][0]
            mine = [e for e in purchases if e["ts"] <= t]
            assert row["user_purchases_lifetime"] == len(mine)
            assert row["user_first_seen_lifetime"] == min(e["ts"] for e in mine)
            assert row["user_amount_sum_lifetime"] == pytest.approx(sum(e["amount"] for e in mine), rel=1e-9)
            source = answer.json()["metadata"]["sources"][0]["user_lifetime"]
            assert source == ("log" if t == complete else "online")


@pytest.mark.parametrize("route", ["/v1/features/fraud_scoring", "/get-online-features"])
def test_events_after_the_wall_clock_are_never_present(
    repo: FeatureRepo, plan: AppliedPlan, tmp_path: Path, route: str
) -> None:
    now = wall_clock_ms()
    # Accepted within the source's max_future_skew: one event 10 minutes ahead, one now.
    events = [
        {
            "transaction_id": f"f{i}",
            "user_id": "ahead",
            "merchant_id": "m0",
            "card_id": "c0",
            "amount": amount,
            "event_type": "PURCHASE",
            "ts": ts,
            "partition": 0,
            "offset": i,
        }
        for i, (ts, amount) in enumerate([(now - 1_000, 5.0), (now + 10 * 60_000, 100.0)])
    ]
    write_state_and_log(tmp_path, repo, events, ())
    with served(tmp_path, repo, plan) as client:
        if route == "/get-online-features":
            body = {
                "feature_service": "fraud_scoring",
                "entities": {"user_id": ["ahead"], "merchant_id": ["m0"], "amount": [1.0]},
            }
            answer = client.post(route, json=body).json()
            names = answer["metadata"]["feature_names"]
            statuses = answer["results"][names.index("amount_sum_1d")]["statuses"]
            assert statuses == ["INVALID"]
            return
        wall = client.post(route, json=fraud(["ahead"], None)).json()
        assert wall["metadata"]["statuses"][0]["amount_sum_1d"] == "FUTURE_EVENTS"
        assert wall["metadata"]["statuses"][0]["spend_velocity_ratio"] == "FUTURE_EVENTS"
        # The same time as an explicit as_of is answered exactly from the log.
        exact = client.post(route, json=fraud(["ahead"], wall["as_of"])).json()
        assert exact["features"][0]["amount_sum_1d"] == 5.0
        assert exact["metadata"]["statuses"][0]["amount_sum_1d"] == "PRESENT"
        assert exact["metadata"]["sources"][0]["user_spend"] == "log"


def test_an_event_far_ahead_marks_what_retention_may_have_cut(
    repo: FeatureRepo, plan: AppliedPlan, tmp_path: Path
) -> None:
    """One event 20 hours ahead (inside the default 1-day max_future_skew) moves the view's
    newest event time: retention measured against it may drop tiles of everyone's 1-day
    windows, so wall-clock values of the view are not PRESENT, and as_of reads use the log."""
    now = wall_clock_ms()
    events = [
        {
            "transaction_id": f"q{i}",
            "user_id": user,
            "merchant_id": "m0",
            "card_id": "c0",
            "amount": amount,
            "event_type": "PURCHASE",
            "ts": ts,
            "partition": 0,
            "offset": i,
        }
        for i, (user, ts, amount) in enumerate([("quiet", now - 3_600_000, 7.0), ("ahead", now + 20 * 3_600_000, 1.0)])
    ]
    write_state_and_log(tmp_path, repo, events, ("user_spend", "merchant_activity"))
    with served(tmp_path, repo, plan) as client:
        wall = client.post("/v1/features/fraud_scoring", json=fraud(["quiet"], None)).json()
        assert wall["metadata"]["statuses"][0]["amount_sum_1d"] == "FUTURE_EVENTS"
        exact = client.post("/v1/features/fraud_scoring", json=fraud(["quiet"], wall["as_of"])).json()
        assert exact["metadata"]["sources"][0]["user_spend"] == "log"
        assert exact["features"][0]["amount_sum_1d"] == 7.0
        # The fixture's metadata says it was written at T_END, so freshness (capped by the
        # write time) is stale; what matters is that the exact value is not FUTURE_EVENTS.
        assert exact["metadata"]["statuses"][0]["amount_sum_1d"] in ("PRESENT", "STALE")


def test_rows_needing_an_absent_log_name_the_setting(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    write_rocksdb(tmp_path / "state", repo.views, events, meta_for=("user_spend", "merchant_activity"))
    with served(tmp_path, repo, plan, log_dir="no-log-here") as client:
        refused = client.post("/v1/features/fraud_scoring", json=fraud(["u0"], T_END - 2_500))
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert f"nothing is published under {tmp_path / 'no-log-here'} (setting log_root" in message
        assert "cannot be answered exactly for row 0" in message

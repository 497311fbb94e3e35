"""Events pushed with ``POST /v1/push/{source}`` flow through ``streamfeat run`` (real broker)
into served values equal to the brute-force reference (tests/reference.py); a refused
record of the same push reaches neither the topic nor the values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import copy_repo
from engine.clock import wall_clock_ms
from engine.config import load_settings
from engine.definitions import load_repo
from serving.app import create_app
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    expected_values,
    read_topic,
    reference_events,
    streamfeat,
)
from tests.serving.asgi_support import ASGIClient

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
USERS = ("u0", "u1", "u2")
MINUTE = 60_000


def pushed_events(start: int) -> list[dict[str, Any]]:
    """30 events over 29 minutes for three users (every fifth a refund: filtered by the views)."""
    return [
        {
            "transaction_id": f"p{i}",
            "user_id": USERS[i % 3],
            "merchant_id": f"m{i % 2}",
            "card_id": "c1",
            "amount": round(5.0 + 3.7 * i, 2),
            "currency": "EUR",
            "event_type": "REFUND" if i % 5 == 4 else "PURCHASE",
            "ts": start + i * MINUTE + 123,
        }
        for i in range(30)
    ]


def test_pushed_events_flow_through_run_into_served_values(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    repo_dir = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo_dir), "--data-dir", str(data)]
    streamfeat("apply", *common, "--shards", "2")
    settings = load_settings(
        env={},
        overrides={
            "repo": repo_dir,
            "data_dir": data,
            "kafka_bootstrap": kafka_bootstrap,
            "push_sources": "transactions",
        },
    )
    events = pushed_events(wall_clock_ms() - 40 * MINUTE)
    pusher = ASGIClient(create_app(settings))
    try:
        first = pusher.post("/v1/push/transactions", json={"records": events[:20]})
        assert first.status_code == 200 and first.json()["accepted"] == 20, first.text
        bad = {**events[20], "amount": "a lot"}
        second = pusher.post("/v1/push/transactions", json={"records": [bad, *events[21:]]})
        assert second.status_code == 422 and second.json()["error"]["accepted"] == 9, second.text
    finally:
        pusher.close()

    streamfeat("run", *common, "--bootstrap", kafka_bootstrap, "--until-caught-up")

    on_topic = reference_events(read_topic(kafka_bootstrap, topic, 1))
    assert [e["e"] for e in on_topic] == [e["ts"] for e in events if e is not events[20]]
    repo = load_repo(repo_dir)
    view = repo.view("user_spend")
    applied = applied_events(on_topic, int(view.source.allowed_lateness.total_seconds() * 1000))
    t_end = max(e["ts"] for e in events) + 1
    reader = ASGIClient(create_app(settings))
    try:
        answer = reader.post(
            "/v1/features/fraud_scoring",
            json={
                "entities": {"user_id": list(USERS), "merchant_id": ["m0"] * 3},
                "request_data": {"amount": [1.0] * 3},
                "as_of": t_end,
                "include_metadata": True,
            },
        )
    finally:
        reader.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for user, row, statuses in zip(USERS, body["features"], body["metadata"]["statuses"], strict=True):
        want = expected_values(view, applied, user, t_end)
        assert want["amount_count_1d"] > 0
        assert_close({k: row[k] for k in want}, want, f"user_spend {user}")
        assert all(statuses[k] == "PRESENT" for k in want if want[k] is not None), statuses

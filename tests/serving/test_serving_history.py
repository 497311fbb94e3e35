"""Historical ``as_of`` reads through the HTTP API equal the training set (docs/semantics.md
section 3, "Online reads and as_of"): state and Parquet log written by a real backfill of
the example repo, quiet entities swept by retention, every entity at many times (just
before, at and after its events, on tile boundaries, and long past retention)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.definitions import FeatureRepo, load_repo
from engine.offline.training import get_training_set
from engine.plan import apply_plan
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.backfill.backfill_support import (
    SHARDS,
    START_MS,
    random_events,
    run_backfill,
    write_history,
)
from tests.engine.streaming_support import REPO
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import make_app, sweep_all

HOUR = 3_600_000
SPAN = 3 * 24 * HOUR  # three days: the 1-day windows of early times lose tiles to retention
CHUNK = 400  # rows per request (below max_entities_per_request)


class History:
    def __init__(self, client: ASGIClient, repo: FeatureRepo, log_root: str, events: list[dict[str, Any]]) -> None:
        self.client = client
        self.repo = repo
        self.log_root = log_root
        self.events = events


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("history")
    rng = np.random.default_rng(13)
    events = random_events(rng, 3_000, users=25, merchants=8, start_ms=START_MS, span_ms=SPAN)
    # Two users go quiet after the first day: the sweep deletes their records.
    for event in events:
        if event["user_id"] in ("u0", "u1") and event["ts"] > START_MS + 20 * HOUR:
            event["user_id"] = "u2"
    files = [write_history(events, root / "history" / "part-0.parquet")]
    run_backfill(root, files, START_MS - HOUR, START_MS + SPAN + HOUR)
    repo = load_repo(REPO)
    assert sweep_all(root / "state", repo.views, SHARDS) > 0
    _, plan = apply_plan(repo, root / "plan.json", shards=SHARDS, check_transforms=False)
    table = RocksDBOnlineTable(root / "state", SHARDS, root / "secondary", background=False)
    client = ASGIClient(make_app(repo, plan, table, log_root=str(root / "log")))
    try:
        yield History(client, repo, str(root / "log"), events)
    finally:
        client.close()
        table.close()


def first_logged(events: Sequence[dict[str, Any]]) -> int:
    """The earliest time every view's log covers (user_spend logs purchases only)."""
    return int(max(min(e["ts"] for e in events), min(e["ts"] for e in events if e["event_type"] == "PURCHASE")))


def probe_rows(events: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(user, merchant, t): around a sample of events (1 ms before, at, 1 ms after, the next
    tile boundary), plus random times over the whole span, for every user."""
    rows: list[tuple[str, str, int]] = []
    first = first_logged(events)
    for index in rng.choice(len(events), size=120, replace=False).tolist():
        event = events[index]
        e = event["ts"]
        for t in (e - 1, e, e + 1, (e // 60_000 + 1) * 60_000, (e // 60_000 + 1) * 60_000 - 1):
            if t >= first:
                rows.append((event["user_id"], event["merchant_id"], t))
    users = sorted({e["user_id"] for e in events})
    merchants = sorted({e["merchant_id"] for e in events})
    end = max(e["ts"] for e in events)
    for user in users:
        last = max(e["ts"] for e in events if e["user_id"] == user)
        # Random times over the span, and times at or after the user's last event (which
        # the online record answers when no retention can have trimmed it).
        times = [
            *rng.integers(first, end + 2 * HOUR, size=12).tolist(),
            last,
            last + 1,
            *rng.integers(end, end + 2 * HOUR, size=4).tolist(),
        ]
        for t in times:
            rows.append((user, merchants[int(rng.integers(len(merchants)))], int(t)))
    return rows


def same(served: Any, offline: Any, exact: bool) -> bool:
    if served is None or offline is None:
        return served is None and offline is None
    if exact or not isinstance(served, float) or not isinstance(offline, float):
        return bool(served == offline)
    return math.isclose(served, offline, rel_tol=1e-9, abs_tol=1e-9)


def test_historical_reads_equal_the_training_set(history: History) -> None:
    rng = np.random.default_rng(5)
    rows = probe_rows(history.events, rng)
    amounts = [float(round(rng.uniform(1, 300), 2)) for _ in rows]
    spine = pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "merchant_id": [m for _, m, _ in rows],
            "amount": amounts,
            "event_timestamp": pl.Series([t for _, _, t in rows], dtype=pl.Int64),
        }
    )
    offline = get_training_set(history.repo, "fraud_scoring", spine, history.log_root)
    service = history.repo.service("fraud_scoring")
    features = service.feature_names
    owner = {name: view.name for view in history.repo.views for name in view.feature_names}
    sources: dict[str, int] = {"online": 0, "log": 0}
    not_found = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        body = {
            "entities": {"user_id": [u for u, _, _ in chunk], "merchant_id": [m for _, m, _ in chunk]},
            "request_data": {"amount": amounts[start : start + CHUNK]},
            "as_of": [t for _, _, t in chunk],
            "include_metadata": True,
        }
        response = history.client.post("/v1/features/fraud_scoring", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        for i, (row, origin, statuses) in enumerate(
            zip(answer["features"], answer["metadata"]["sources"], answer["metadata"]["statuses"], strict=True)
        ):
            want = offline.row(start + i, named=True)
            sources[origin["user_spend"]] += 1
            not_found += statuses["amount_count_1d"] == "NOT_FOUND"
            assert "FUTURE_EVENTS" not in statuses.values()
            for name in features:
                # A view's rows answered from the log run the training set's own code: bit for
                # bit equal. The online tiles add floats in another order (1e-9, semantics 3).
                exact = name in owner and origin.get(owner[name]) == "log"
                assert same(row[name], want[name], exact), (chunk[i], origin, name, row[name], want[name])
    # Both ways of answering were exercised, and swept (quiet) users were among the rows.
    assert sources["online"] > 50 and sources["log"] > 50, sources
    assert not_found > 0


def test_feast_event_timestamps_never_follow_the_as_of_time(history: History) -> None:
    """Feast's ``event_timestamps`` of an ``as_of`` row: the user's newest purchase at or
    before that time (the record's newest event when the record answers, the newest the
    log read when the log answers), never an event after it."""
    rng = np.random.default_rng(21)
    rows = probe_rows(history.events, rng)[::5]
    purchases: dict[str, list[int]] = {}
    for event in history.events:
        if event["event_type"] == "PURCHASE":
            purchases.setdefault(event["user_id"], []).append(event["ts"])
    checked = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        body = {
            "features": ["user_spend:amount_sum_1d"],
            "entities": {"user_id": [u for u, _, _ in chunk]},
            "as_of": [t for _, _, t in chunk],
        }
        response = history.client.post("/get-online-features", json=body)
        assert response.status_code == 200, response.text
        column = response.json()["results"][1]
        for (user, _, t), status, stamp in zip(chunk, column["statuses"], column["event_timestamps"], strict=True):
            if status == "NOT_FOUND":
                continue
            newest = max(ts for ts in purchases[user] if ts <= t)
            want = datetime.fromtimestamp(newest / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert stamp == want, (user, t, stamp, want)
            checked += 1
    assert checked > 100, checked


def test_one_row_requests_answer_the_same(history: History) -> None:
    """The one-entity path (WindowPlan) decides and answers like the batch path."""
    rng = np.random.default_rng(9)
    rows = probe_rows(history.events, rng)[::37]
    for user, merchant, t in rows:
        body = {
            "entities": {"user_id": [user], "merchant_id": [merchant]},
            "request_data": {"amount": [5.0]},
            "as_of": t,
        }
        single = history.client.post("/v1/features/fraud_scoring", json=body)
        batch = history.client.post(
            "/v1/features/fraud_scoring",
            json={
                **body,
                "entities": {"user_id": [user, "u3"], "merchant_id": [merchant, "m1"]},
                "request_data": {"amount": [5.0, 1.0]},
            },
        )
        assert single.status_code == 200 and batch.status_code == 200, (single.text, batch.text)
        one, first = single.json()["features"][0], batch.json()["features"][0]
        for name, value in one.items():
            assert same(value, first[name], False), (user, t, name)


def test_times_the_log_does_not_cover_are_refused(history: History) -> None:
    first = first_logged(history.events)
    body = {
        "entities": {"user_id": ["u3"], "merchant_id": ["m1"]},
        "request_data": {"amount": [5.0]},
        "as_of": first - 1,
    }
    response = history.client.post("/v1/features/fraud_scoring", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "as_of" and str(first) in error["message"]


def test_only_reads_of_the_parquet_log_leave_the_event_loop(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """An as_of row the online record answers is computed on the event loop; a worker
    thread is used exactly when a row is read from the Parquet log."""
    from starlette.concurrency import run_in_threadpool as real

    threaded: list[str] = []

    async def counting(func: Any, *args: Any) -> Any:
        threaded.append(func.__name__)
        return await real(func, *args)

    monkeypatch.setattr("serving.pipeline.run_in_threadpool", counting)
    monkeypatch.setattr(history.client.app.state.serving.history, "first_ttl_s", 3600.0)  # no refresh mid-test
    rows = probe_rows(history.events, np.random.default_rng(21))[::7]
    seen = {"online": 0, "log": 0}
    for index, (user, merchant, t) in enumerate(rows):
        threaded.clear()
        body = {
            "entities": {"user_id": [user], "merchant_id": [merchant]},
            "request_data": {"amount": [5.0]},
            "as_of": t,
            "include_metadata": True,
        }
        response = history.client.post("/v1/features/fraud_scoring", json=body)
        assert response.status_code == 200, response.text
        if index == 0:
            continue  # the first request reads each view's first logged time (a file)
        logged = "log" in response.json()["metadata"]["sources"][0].values()
        seen["log" if logged else "online"] += 1
        assert threaded == (["replace_from_log"] if logged else []), (user, t)
    assert seen["online"] > 0 and seen["log"] > 0, seen

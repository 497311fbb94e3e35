"""An on-demand output whose input is invalid (an overflowed window) has no value: null
with the status INVALID on every serving path, null in the training set (docs/semantics.md
section 3, "Numbers").

Before: the python-mode transforms computed a number from the infinity serving passed
them (``spend_velocity_ratio`` 0.0, labelled INVALID), a training set passed them null
instead, which reads as an empty window (25000.0 for the same row, with no status to tell),
and an ``as_of`` row answered from the Parquet log served the overflowed sum itself as
null labelled PRESENT.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.definitions import FeatureRepo, load_repo
from engine.offline.training import get_training_set
from engine.plan import apply_plan
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.backfill.backfill_support import SHARDS, START_MS, random_events, run_backfill, write_history
from tests.engine.streaming_support import REPO
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import make_app

HOUR = 3_600_000
SPAN = 2 * HOUR
# After every other event (an as_of before a view's newest event may need the log):
HUGE_AT = (START_MS + SPAN + 60_000, START_MS + SPAN + 120_000)  # two purchases of 1e308: the sums overflow
SMALL_AT = START_MS + SPAN + 180_000  # a later purchase: earlier as_of rows come from the log
ONLINE_T = SMALL_AT + 1_000  # the online record answers (no event after it)
LOG_T = SMALL_AT - 1_000  # the record holds an event after it: answered from the log
OVERFLOWED = ("amount_sum_15m", "amount_sum_1h", "amount_mean_15m", "amount_stddev_1d")
OUTPUTS = ("spend_velocity_ratio", "user_merchant_share_1h")


@dataclass(frozen=True)
class Served:
    client: ASGIClient
    repo: FeatureRepo
    log_root: str


def _purchase(name: str, ts: int, amount: float) -> dict[str, Any]:
    return {
        "transaction_id": name,
        "user_id": "huge",
        "merchant_id": "m0",
        "card_id": "c0",
        "amount": amount,
        "currency": "EUR",
        "event_type": "PURCHASE",
        "ts": ts,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("invalid_inputs")
    events = random_events(np.random.default_rng(5), 400, users=6, merchants=3, start_ms=START_MS, span_ms=SPAN)
    events += [
        _purchase("huge0", HUGE_AT[0], 1e308),
        _purchase("huge1", HUGE_AT[1], 1e308),
        _purchase("small", SMALL_AT, 2.0),
    ]
    events.sort(key=lambda e: int(e["ts"]))
    files = [write_history(events, root / "history" / "part-0.parquet")]
    run_backfill(root, files, START_MS - HOUR, START_MS + SPAN + HOUR)
    repo = load_repo(REPO)
    _, plan = apply_plan(repo, root / "plan.json", shards=SHARDS, check_transforms=False)
    table = RocksDBOnlineTable(root / "state", SHARDS, root / "secondary", background=False)
    client = ASGIClient(make_app(repo, plan, table, log_root=str(root / "log")))
    try:
        yield Served(client, repo, str(root / "log"))
    finally:
        client.close()
        table.close()


def _ask(served: Served, t_ms: int, *, metadata: bool = True) -> dict[str, Any]:
    body = {
        "entities": {"user_id": ["huge"], "merchant_id": ["m0"]},
        "request_data": {"amount": [25.0]},
        "as_of": t_ms,
        "include_metadata": metadata,
    }
    response = served.client.post("/v1/features/fraud_scoring", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(("t_ms", "source"), [(ONLINE_T, "online"), (LOG_T, "log")])
def test_invalid_inputs_make_null_invalid_outputs_on_every_path(served: Served, t_ms: int, source: str) -> None:
    answer = _ask(served, t_ms)
    row, statuses = answer["features"][0], answer["metadata"]["statuses"][0]
    assert answer["metadata"]["sources"][0]["user_spend"] == source
    for name in (*OVERFLOWED, *OUTPUTS):
        assert row[name] is None and statuses[name] == "INVALID", (name, row[name], statuses[name])
    counted = 3 if t_ms > SMALL_AT else 2
    assert row["amount_count_15m"] == counted and statuses["amount_count_15m"] == "PRESENT"
    # The one-row answer (no metadata, its own code path) holds the same values.
    if source == "online":
        assert _ask(served, t_ms, metadata=False)["features"][0] == row


def test_the_training_set_holds_null_where_serving_answers_invalid(served: Served) -> None:
    spine = pl.DataFrame(
        {
            "user_id": ["huge", "huge"],
            "merchant_id": ["m0", "m0"],
            "amount": [25.0, 25.0],
            "event_timestamp": [ONLINE_T, LOG_T],
        }
    )
    frame = get_training_set(served.repo, "fraud_scoring", spine, served.log_root)
    for i, t_ms in enumerate((ONLINE_T, LOG_T)):
        served_row = _ask(served, t_ms)["features"][0]
        offline_row = frame.row(i, named=True)
        for name in (*OVERFLOWED, *OUTPUTS):
            assert offline_row[name] is None, (t_ms, name, offline_row[name])
        mismatched = {
            name: (served_row[name], offline_row[name])
            for name in served_row
            if name in offline_row and not _same(served_row[name], offline_row[name])
        }
        assert not mismatched, (t_ms, mismatched)


def test_batch_mode_output_of_an_invalid_input_is_null_in_both(served: Served) -> None:
    body = {
        "entities": {"user_id": ["huge", "u1"]},
        "request_data": {"amount": [25.0, 25.0]},
        "as_of": ONLINE_T,
        "include_metadata": True,
    }
    answer = served.client.post("/v1/features/batch_review", json=body).json()
    assert answer["features"][0]["amount_zscore_1d"] is None
    assert answer["metadata"]["statuses"][0]["amount_zscore_1d"] == "INVALID"
    spine = pl.DataFrame({"user_id": ["huge"], "amount": [25.0], "event_timestamp": [ONLINE_T]})
    frame = get_training_set(served.repo, "batch_review", spine, served.log_root)
    assert frame.get_column("amount_zscore_1d").to_list() == [None]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b

"""Live, end to end: events produced to a real broker, `streamfeat run` tailing the topic
and `streamfeat serve` answering over HTTP, every served value compared with the
brute-force reference of docs/semantics.md at several ``as_of`` times, then again
after more events arrive while both processes keep running."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.servers import server
from engine.definitions import StreamFeatureView, load_repo
from engine.generate import GeneratorConfig, produce_events
from engine.ports import free_port
from serving.client import FeatureClient
from serving.client_async import AsyncFeatureClient
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    copy_repo,
    expected_values,
    read_topic,
    reference_events,
    streamfeat,
    wait_for_progress,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_781_000_000_000  # 2026-06-09, in the past: nothing is dropped as from the future
SHARDS = 4
MINUTE = 60_000


# The lifetime features the example's fraud_scoring service selects.
LIFETIME_FEATURES = next(
    ref.features
    for ref in load_repo(Path(__file__).resolve().parents[2] / "feature_defs").service("fraud_scoring").refs
    if ref.view.name == "user_lifetime"
)


def _expected_rows(
    views: dict[str, StreamFeatureView],
    applied: list[dict[str, Any]],
    users: list[str],
    merchants: list[str],
    amounts: list[float],
    t: int,
) -> list[dict[str, Any]]:
    """Per request row: the reference value of every served feature (transforms included)."""
    rows = []
    for user, merchant, amount in zip(users, merchants, amounts, strict=True):
        mine = [e for e in applied if e["entity"] == user]
        theirs = [e for e in applied if e["merchant"] == merchant]
        want = expected_values(views["user_spend"], mine, user, t)
        shop = expected_values(views["merchant_activity"], theirs, merchant, t, key_field="merchant")
        want["merchant_txn_count_15m"] = shop["merchant_txn_count_15m"]
        want["merchant_txn_count_1h"] = shop["merchant_txn_count_1h"]
        want.update(expected_values(views["user_merchant_spend"], applied, (user, merchant), t, key_field="pair"))
        lifetime = expected_values(views["user_lifetime"], mine, user, t)
        want.update({name: lifetime[name] for name in LIFETIME_FEATURES})
        want.update(expected_values(views["user_amount_profile"], mine, user, t))
        want["spend_velocity_ratio"] = amount / max(want["amount_sum_15m"] or 0.0, 0.001)
        shop_sum = shop["merchant_amount_sum_1h"] or 0.0
        want["user_merchant_share_1h"] = (want["amount_sum_1h"] or 0.0) / shop_sum if shop_sum > 0 else 0.0
        rows.append(want)
    return rows


def _served_equals_reference(
    client: FeatureClient,
    views: dict[str, StreamFeatureView],
    applied: list[dict[str, Any]],
    t: int,
) -> None:
    users = sorted({str(e["entity"]) for e in applied})
    merchants = sorted({str(e["merchant"]) for e in applied})
    pairs = [merchants[i % len(merchants)] for i in range(len(users))]
    amounts = [5.0 + i for i in range(len(users))]
    wanted = _expected_rows(views, applied, users, pairs, amounts, t)
    answer = client.get_feature_vectors(
        "fraud_scoring", {"user_id": users, "merchant_id": pairs}, {"amount": amounts}, as_of=t
    )
    assert answer["as_of"] == t and len(users) >= 40
    assert any(want["amount_count_1d"] for want in wanted), "no user has a purchase in the last day"
    for user, merchant, row, want in zip(users, pairs, answer["features"], wanted, strict=True):
        assert (row.pop("user_id"), row.pop("merchant_id")) == (user, merchant)
        assert_close(row, want, f"user {user} merchant {merchant} as of {t}")


def _eventually(check: Callable[[], None], timeout_s: float = 20.0) -> None:
    """The server's secondaries catch up every 100 ms: retry a mismatch until then."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_served_values_follow_a_live_stream(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    first = GeneratorConfig(events=3_000, users=50, merchants=8, seed=21, start_ms=START_MS, rate=5.0, jitter_ms=20_000)
    produce_events(first, topic, kafka_bootstrap)
    repo_dir = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo_dir), "--data-dir", str(data)]
    streamfeat("apply", *common, "--shards", str(SHARDS))
    repo = load_repo(repo_dir)
    views = {v.name: v for v in repo.views}
    lateness = repo.source("transactions").allowed_lateness_ms
    port = free_port()
    flow = ["-m", "cli", "run", *common, "--bootstrap", kafka_bootstrap]
    serve = ["-m", "cli", "serve", "--repo", str(repo_dir), "--port", str(port)]
    with (
        server([sys.executable, *flow], "", port=-1, wait=False) as dataflow,
        server([sys.executable, *serve], "/readyz", port=port, env={"STREAMFEAT_DATA_DIR": str(data)}),
        FeatureClient(f"http://127.0.0.1:{port}", timeout=10.0) as client,
    ):
        assert wait_for_progress(dataflow, data / "state", SHARDS, topic, first.events)
        applied = applied_events(reference_events(read_topic(kafka_bootstrap, topic, 3)), lateness)
        t_end = max(e["e"] for e in applied)
        for t in (t_end, t_end + 7 * MINUTE, t_end + 61 * MINUTE):  # the 15-minute and 1-hour windows decay
            _eventually(functools.partial(_served_equals_reference, client, views, applied, t))

        # More events while both keep running: the server sees them without a restart.
        second = GeneratorConfig(
            events=2_000, users=50, merchants=8, seed=22, start_ms=START_MS + 20 * MINUTE, rate=5.0, jitter_ms=20_000
        )
        produce_events(second, topic, kafka_bootstrap)
        assert wait_for_progress(dataflow, data / "state", SHARDS, topic, first.events + second.events)
        applied = applied_events(reference_events(read_topic(kafka_bootstrap, topic, 3)), lateness)
        assert max(e["e"] for e in applied) > t_end
        t_end = max(e["e"] for e in applied)
        for t in (t_end, t_end + 16 * MINUTE):
            _eventually(functools.partial(_served_equals_reference, client, views, applied, t))

        # The async client reads the same live server and gets the same answer.
        users = sorted({str(e["entity"]) for e in applied})
        entities = {"user_id": users, "merchant_id": ["m0000"] * len(users)}
        amounts = {"amount": [7.0] * len(users)}

        async def async_answer() -> dict[str, Any]:
            async with AsyncFeatureClient(f"http://127.0.0.1:{port}", timeout=10.0) as fc:
                return await fc.get_feature_vectors("fraud_scoring", entities, amounts, as_of=t_end)

        assert asyncio.run(async_answer()) == client.get_feature_vectors(
            "fraud_scoring", entities, amounts, as_of=t_end
        )

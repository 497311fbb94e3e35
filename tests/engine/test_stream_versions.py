"""Two versions of a view computed from one topic in one pass through a real broker: each
version's state equals the brute-force reference of its own definition."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.testing import run_main

from dataflows.stream import build_flow
from engine.definitions import Aggregation, StreamFeatureView
from engine.generate import GeneratorConfig, generate, produce_events
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    example_views,
    expected_values,
    make_job,
    online_values,
    read_topic,
    reference_events,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_500_000_000


def test_two_versions_of_a_view_in_one_pass(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=2)
    config = GeneratorConfig(events=3_000, users=40, merchants=10, seed=11, start_ms=START_MS, rate=5.0)
    produce_events(config, topic, kafka_bootstrap)
    _, views = example_views(topic)
    v1 = next(v for v in views if v.name == "user_spend")
    v2 = StreamFeatureView(
        name="user_spend",
        version=2,
        source=v1.source,
        entities=v1.entities,
        filter=v1.filter,
        aggregations=[
            Aggregation("amount", "sum", timedelta(minutes=30)),
            Aggregation("amount", "count", timedelta(minutes=30)),
        ],
    )
    assert v2.name == "user_spend__v2" and v2.fingerprint != v1.fingerprint
    job = make_job(tmp_path, topic, kafka_bootstrap, views=(*views, v2))
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    events = reference_events(read_topic(kafka_bootstrap, topic, 2), generate(config))
    applied = applied_events(events, v1.source.allowed_lateness_ms)
    t_end = max(e["e"] for e in applied)
    table = RocksDBOnlineTable(tmp_path / "state", 4, tmp_path / "secondary", background=False)
    try:
        checked = 0
        for user in sorted({e["entity"] for e in applied}):
            mine = [e for e in applied if e["entity"] == user]
            for view in (v1, v2):
                got = online_values(table, view, user, t_end)
                if got is None:
                    assert not any(e["event_type"] == "PURCHASE" for e in mine), f"{view.name} {user} missing"
                    continue
                assert_close(got, expected_values(view, mine, user, t_end), f"{view.name} {user}")
                checked += 1
        assert checked >= 20
    finally:
        table.close()

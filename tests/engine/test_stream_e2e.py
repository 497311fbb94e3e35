"""End to end through a real broker: generated events -> dataflow -> RocksDB state,
compared with the brute-force reference for every entity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bytewax.testing import run_main

from dataflows.stream import build_flow
from engine.generate import (
    EXPECTED_DLQ_REASON,
    GeneratorConfig,
    MalformedKind,
    generate,
    produce_events,
)
from engine.io.dead_letters import read_dead_letters
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    expected_values,
    make_job,
    online_values,
    read_topic,
    reference_events,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000  # 2026-05-28, comfortably in the past


def test_stream_matches_reference(tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=3)
    config = GeneratorConfig(
        events=20_000,
        users=300,
        merchants=40,
        seed=7,
        start_ms=START_MS,
        rate=20.0,
        jitter_ms=400_000,
        malformed_fraction=0.01,
    )
    produce_events(config, topic, kafka_bootstrap)
    job = make_job(tmp_path, topic, kafka_bootstrap)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    records = read_topic(kafka_bootstrap, topic, 3)
    assert len(records) == config.events
    events = reference_events(records, generate(config))
    applied = applied_events(events, job.source.allowed_lateness_ms)
    late = sum(1 for e in events if e["valid"]) - len(applied)
    assert late > 0, "the jitter should make some events late"

    letters = read_dead_letters(kafka_bootstrap, job.source.dlq_topic)
    invalid = sum(1 for e in events if not e["valid"])
    assert len(letters) == invalid + late
    # Every malformed record is in the dead-letter topic with the reason its kind must
    # get, and every late event with reason late_event: counts are exact per reason.
    generated = generate(config)
    expected_reasons = Counter(
        EXPECTED_DLQ_REASON[list(MalformedKind)[code]] for code in generated.malformed.tolist() if code >= 0
    )
    expected_reasons["late_event"] += late
    got_reasons = Counter(getattr(letter.reason, "value", str(letter.reason)) for letter in letters)
    assert got_reasons == expected_reasons
    assert len(set(expected_reasons)) >= 4, "every kind of malformed record should occur"
    by_value = {v: code for v, code in zip(generated.values, generated.malformed.tolist(), strict=True)}
    for letter in letters:
        if getattr(letter.reason, "value", str(letter.reason)) != "late_event":
            assert letter.value is not None and by_value[letter.value] >= 0, (
                "a good record went to the dead-letter topic"
            )

    t_end = max(e["e"] for e in applied)
    user_view = next(v for v in job.views if v.name == "user_spend")
    merchant_view = next(v for v in job.views if v.name == "merchant_activity")
    table = RocksDBOnlineTable(job.state_dir, job.shards, tmp_path / "secondary", background=False)
    try:
        users = sorted({e["entity"] for e in applied})
        merchants = sorted({e["merchant"] for e in applied})
        by_user = {u: [e for e in applied if e["entity"] == u] for u in users}
        by_merchant = {m: [e for e in applied if e["merchant"] == m] for m in merchants}
        compared = 0
        for t in (t_end, t_end + 60_000 * 7, t_end + 3_600_000 + 1):
            for user in users:
                got = online_values(table, user_view, user, t)
                want = expected_values(user_view, by_user[user], user, t)
                if got is None:  # never bought anything: the view never saw the user
                    assert not any(e["event_type"] == "PURCHASE" for e in by_user[user]), user
                    continue
                assert_close(got, want, f"user {user} at {t}")
                compared += 1
            for merchant in merchants:
                got = online_values(table, merchant_view, merchant, t)
                want = expected_values(merchant_view, by_merchant[merchant], merchant, t, key_field="merchant")
                if got is None:
                    assert not any(e["event_type"] == "PURCHASE" for e in by_merchant[merchant]), merchant
                    continue
                assert_close(got, want, f"merchant {merchant} at {t}")
                compared += 1
        assert compared >= 3 * (len(users) + len(merchants)) * 0.9
    finally:
        table.close()

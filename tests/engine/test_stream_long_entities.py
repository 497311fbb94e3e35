"""Entities with hours of minute tiles, streamed end to end through a real broker: records
past ``SPILL_ABOVE`` tiles are stored as hot and cold parts (engine/view_merge.py), the
lifetime view folds expired tiles out of them, and a state directory lost and restored
from the changelog comes back with its cold parts; every value of every entity equals the
brute-force reference (nothing lost, nothing counted twice)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bytewax.testing import run_main

import engine.view_merge as view_merge
from dataflows.stream import build_flow
from engine.generate import GeneratorConfig, produce_events
from engine.kernel.codec import has_cold
from engine.state.records import COLD_PREFIX, TILE_PREFIX
from engine.state.rocksdb_store import RocksDBStore
from tests.engine.streaming_support import check_job_state, make_job, read_topic, truncate_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_781_000_000_000
SHARDS = 2
# Few users and merchants, one event every 2 s for 133 minutes: every user, merchant and
# pair has events in most minutes, so its records grow well past SPILL_ABOVE (64) tiles.
EVENTS, RATE = 4_000, 0.5


def _split_entities(state_dir: Path) -> int:
    """How many tile records are flagged hot parts; checks that each has its cold part
    and that no cold part is left without one."""
    store = RocksDBStore(state_dir, SHARDS)
    try:
        flagged = {k[1:] for p in store.partitions for k, v in p.scan_prefix(TILE_PREFIX) if has_cold(v)}
        cold = {k[1:] for p in store.partitions for k, _ in p.scan_prefix(COLD_PREFIX)}
    finally:
        store.close()
    assert flagged == cold, "a hot part without its cold part, or the other way round"
    return len(flagged)


def _config(seed: int, start_ms: int) -> GeneratorConfig:
    return GeneratorConfig(
        events=EVENTS,
        users=4,
        merchants=3,
        seed=seed,
        start_ms=start_ms,
        rate=RATE,
        jitter_ms=120_000,  # late events inside the source's 5-minute allowed lateness
        malformed_fraction=0.0,
    )


def test_long_lived_entities_in_parts_equal_the_reference_and_survive_a_restore(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    assert view_merge.SPILL_ABOVE < EVENTS / RATE / 60 - 30  # minutes with events, with room
    topic = kafka_topic(partitions=2)
    first = _config(31, START_MS)
    produce_events(first, topic, kafka_bootstrap)
    job = make_job(tmp_path, topic, kafka_bootstrap, shards=SHARDS, changelog=True)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    before = read_topic(kafka_bootstrap, topic, 2)
    assert check_job_state(job, before, tmp_path / "secondary-1") > 10
    assert _split_entities(job.state_dir) > 0, "no entity grew past SPILL_ABOVE tiles: nothing tested parts"

    # The disk is gone and Kafka no longer holds the first 133 minutes: only the
    # changelog, cold parts included, can give the right values now.
    shutil.rmtree(job.state_dir)
    truncate_topic(kafka_bootstrap, topic, 2)
    second = _config(32, START_MS + int(EVENTS / RATE * 1000))
    produce_events(second, topic, kafka_bootstrap)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]  # restores, then resumes

    records = before + read_topic(kafka_bootstrap, topic, 2)
    assert len(records) == first.events + second.events
    assert check_job_state(job, records, tmp_path / "secondary-2") > 10
    assert _split_entities(job.state_dir) > 0

"""Exactly-once across restore: a dataflow whose whole state directory is lost, restored
from the changelog, resumes Kafka from the restored offsets and ends equal to the
brute-force reference (nothing lost, nothing counted twice)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bytewax.testing import run_main

from dataflows.stream import build_flow
from engine.generate import GeneratorConfig, produce_events
from tests.engine.streaming_support import (
    check_job_state,
    make_job,
    read_topic,
    truncate_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000


def test_lost_state_directory_restores_from_changelog_exactly_once(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    first = GeneratorConfig(
        events=6_000,
        users=200,
        merchants=30,
        seed=11,
        start_ms=START_MS,
        rate=20.0,
        jitter_ms=200_000,
        malformed_fraction=0.0,
    )
    produce_events(first, topic, kafka_bootstrap)
    job = make_job(tmp_path, topic, kafka_bootstrap, changelog=True)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    before = read_topic(kafka_bootstrap, topic, 3)
    # The host's disk is gone AND Kafka no longer holds the first half (retention):
    # only a restore from the changelog can give the right values now.
    shutil.rmtree(job.state_dir)
    truncate_topic(kafka_bootstrap, topic, 3)
    second = GeneratorConfig(
        events=6_000,
        users=200,
        merchants=30,
        seed=12,
        start_ms=START_MS + 400_000,
        rate=20.0,
        jitter_ms=200_000,
        malformed_fraction=0.0,
    )
    produce_events(second, topic, kafka_bootstrap)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]  # restores, then resumes

    records = before + read_topic(kafka_bootstrap, topic, 3)
    assert len(records) == first.events + second.events
    assert (
        check_job_state(job, records, tmp_path / "secondary") > 200
    )  # users, merchants and pairs that bought something

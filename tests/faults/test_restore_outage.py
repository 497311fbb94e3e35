"""A broker outage in the middle of a shard restore: the restore is retried with a
bounded backoff, reported (a warning, and the owner record that `streamfeat status` and
the dashboard show), never half-applied, and the restored state resumed from Kafka ends
equal to the brute-force reference."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from dataflows.stream import build_flow
from engine import kafka_local
from engine.generate import GeneratorConfig, produce_events
from engine.state import committed_reader
from engine.state.progress import read_cluster_progress
from tests.engine.streaming_support import (
    check_job_state,
    make_job,
    read_topic,
    truncate_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000
OUTAGE_S = 4.0


def _events(seed: int, start_ms: int) -> GeneratorConfig:
    return GeneratorConfig(
        events=8_000,
        users=300,
        merchants=30,
        seed=seed,
        start_ms=start_ms,
        rate=20.0,
        jitter_ms=200_000,
        malformed_fraction=0.0,
    )


class _OutageMidRestore:
    """Wraps the restore's changelog reader: after the first batch of the first restore
    it stops the broker (waiting for the JVM to exit), and starts it again ``OUTAGE_S``
    later from another thread, while the restore goes on."""

    def __init__(self, broker: kafka_local.BrokerConfig) -> None:
        self.broker = broker
        self.restart: threading.Thread | None = None
        self.batches_before = 0
        self._real = committed_reader.read_to_end

    def _stop_then_restart(self) -> None:
        kafka_local.stop_broker(config=self.broker)

        def restart() -> None:
            time.sleep(OUTAGE_S)
            kafka_local.start_broker(config=self.broker)

        self.restart = threading.Thread(target=restart)
        self.restart.start()

    def __call__(self, consumer: Any, topic: str, partition: int, start: int) -> Iterator[list[Any]]:
        for batch in self._real(consumer, topic, partition, start):
            yield batch
            if self.restart is None:
                self.batches_before += 1
                self._stop_then_restart()


def test_broker_stopped_mid_restore_is_retried_and_the_state_equals_the_reference(
    tmp_path: Path,
    private_broker: kafka_local.BrokerConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = private_broker.bootstrap
    topic = "restore-outage"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)
    produce_events(_events(91, START_MS), topic, bootstrap)
    job = make_job(tmp_path, topic, bootstrap, changelog=True, batch_size=500)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    # The host's disk is gone and Kafka no longer holds what was applied: only the
    # changelog can carry the state on, and its restore meets the outage.
    before = read_topic(bootstrap, topic, 3)
    shutil.rmtree(job.state_dir)
    truncate_topic(bootstrap, topic, 3)
    produce_events(_events(92, START_MS + 500_000), topic, bootstrap)
    # Small reads and a small prefetch, so the outage finds most of the changelog unread.
    monkeypatch.setattr(committed_reader, "READ_BATCH", 200)
    monkeypatch.setattr(committed_reader, "PREFETCH_KBYTES", 16)
    # Whether the client reports the lost broker in time (it suppresses repeated
    # errors) is its business: a read that stalls for a fraction of the outage counts
    # as interrupted either way, so the outage is always met, never ridden out.
    monkeypatch.setattr(committed_reader, "STALL_S", OUTAGE_S / 2)
    outage = _OutageMidRestore(private_broker)
    monkeypatch.setattr("engine.state.changelog.read_to_end", outage)
    caplog.set_level(logging.WARNING, logger="streamfeat.restore")
    try:
        run_main(build_flow(job))  # type: ignore[no-untyped-call]  # restores (through the outage), then resumes
    finally:
        if outage.restart is not None:
            outage.restart.join(timeout=120)
    assert outage.restart is not None, "the restore read no batch: the outage did not land mid-restore"

    interrupted = [r.getMessage() for r in caplog.records if "restore interrupted" in r.getMessage()]
    assert interrupted, "the outage was not reported"
    # The owner records say how often the restore was retried, and that it finished.
    owners = read_cluster_progress(bootstrap, topic, job.shards).owners
    assert sorted(owners) == list(range(job.shards))
    assert all(not o.restoring for o in owners.values()), owners
    assert any(o.retries >= 1 and o.last_error for o in owners.values()), owners

    records = before + read_topic(bootstrap, topic, 3)
    assert check_job_state(job, records, tmp_path / "secondary") > 200
    print(f"restore outage: {len(interrupted)} interruption(s) reported: {interrupted[0]}")

"""The dataflow as real processes under faults: kill -9 at random moments, and a broker
that stops and comes back mid-ingest. Both end equal to the brute-force reference."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine import kafka_local
from engine.generate import GeneratorConfig, generate, produce_events
from tests.engine.streaming_support import (
    copy_repo,
    kill_mid_run,
    read_topic,
    reference_events,
    streamfeat,
    wait_for_progress,
)
from tests.faults.faults_support import long_mode, streamfeat_cmd, trials
from tests.faults.pipeline_support import check_against_reference

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000


def _config(events: int, seed: int) -> GeneratorConfig:
    return GeneratorConfig(
        events=events,
        users=2_000,
        merchants=50,
        seed=seed,
        start_ms=START_MS,
        rate=50.0,
        jitter_ms=400_000,
        malformed_fraction=0.005,
    )


def _run(common: list[str], stderr: Path, *extra: str) -> subprocess.Popen[bytes]:
    with stderr.open("ab") as err:
        return subprocess.Popen(
            streamfeat_cmd("run", *common, "--until-caught-up", *extra),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def test_kill_9_at_random_points_then_restart_equals_reference(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    config = _config(300_000 if long_mode() else 60_000, seed=23)
    produce_events(config, topic, kafka_bootstrap)
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", kafka_bootstrap]
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    rng = random.Random(int(os.environ.get("STREAMFEAT_FAULTS_SEED", "2027")))
    n_trials = trials(3, 10)
    killed = 0
    stderr = tmp_path / "run.stderr"
    for _ in range(n_trials):
        child = _run(common, stderr, "--batch-size", "1000")
        # Kill once a random share of the remaining records is applied, so the kill lands
        # inside ingestion however fast the machine is.
        if kill_mid_run(child, data / "state", 4, topic, config.events, rng.uniform(0.1, 0.5)):
            killed += 1
        child.wait(timeout=600)
        assert child.returncode in (0, -signal.SIGKILL), stderr.read_text()[-3000:]
    assert killed >= n_trials - 1, f"only {killed} of {n_trials} kills landed mid-run"
    streamfeat("run", *common, "--until-caught-up", timeout=600)
    events = reference_events(read_topic(kafka_bootstrap, topic, 3), generate(config))
    counts = check_against_reference(repo, data, kafka_bootstrap, topic, events, tmp_path / "secondary")
    print(f"kill -9: {killed} kills of {n_trials} trials survived; {counts}")


def test_broker_stop_and_restart_mid_ingest_loses_nothing(
    tmp_path: Path, private_broker: kafka_local.BrokerConfig
) -> None:
    bootstrap = private_broker.bootstrap
    topic = "faults-broker"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)
    config = _config(150_000 if long_mode() else 60_000, seed=31)
    produce_events(config, topic, bootstrap)
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", bootstrap]
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    outages = trials(1, 3)
    stderr = tmp_path / "run.stderr"
    child = _run(common, stderr, "--batch-size", "500")
    try:
        for outage in range(outages):
            # Stop the broker once a share of the records is applied (not after a fixed
            # sleep), so the outage lands inside ingestion however fast the machine is.
            target = config.events * (outage + 1) // (outages + 2)
            reached = wait_for_progress(child, data / "state", 4, topic, target)
            assert reached, f"the run ended before the outage:\n{stderr.read_text()[-3000:]}"
            kafka_local.stop_broker(config=private_broker)  # SIGTERM, waits for the JVM to exit
            time.sleep(3.0)
            # The run may finish from records it had already fetched; it must not fail.
            assert child.poll() in (None, 0), f"the run died while the broker was down:\n{stderr.read_text()[-3000:]}"
            kafka_local.start_broker(config=private_broker)
        assert child.wait(timeout=600) == 0, stderr.read_text()[-3000:]
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    events = reference_events(read_topic(bootstrap, topic, 3), generate(config))
    counts = check_against_reference(repo, data, bootstrap, topic, events, tmp_path / "secondary")
    print(f"broker restart: {outages} outages survived; {counts}")

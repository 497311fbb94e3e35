"""The dataflow as real processes: kill -9 at random moments, and 1 vs 2 processes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.definitions import load_repo
from engine.generate import GeneratorConfig, generate, produce_events
from engine.io.log_reader import read_log
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    check_online_values,
    copy_repo,
    kill_mid_run,
    read_topic,
    reference_events,
    streamfeat,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000


def _produce(bootstrap: str, topic: str, events: int, seed: int) -> GeneratorConfig:
    config = GeneratorConfig(
        events=events,
        users=2_000,
        merchants=50,
        seed=seed,
        start_ms=START_MS,
        rate=50.0,
        jitter_ms=400_000,
        malformed_fraction=0.005,
    )
    produce_events(config, topic, bootstrap)
    return config


def _check_against_reference(
    repo: Path, data_dir: Path, bootstrap: str, topic: str, config: GeneratorConfig, secondary: Path
) -> None:
    views = {v.name: v for v in load_repo(repo).views}
    events = reference_events(read_topic(bootstrap, topic, 3), generate(config))
    applied = applied_events(events, 300_000)
    table = RocksDBOnlineTable(data_dir / "state", 4, secondary, background=False)
    try:
        check_online_values(table, views, applied)
        for view_name in ("user_spend", "merchant_activity"):
            # The deduplicated Parquet log holds exactly the applied purchases, once each.
            log = read_log(str(data_dir / "log"), view_name)
            purchases = {(e["partition"], e["offset"]) for e in applied if e["event_type"] == "PURCHASE"}
            logged = set(zip(log["partition"].to_list(), log["offset"].to_list(), strict=True))
            assert logged == purchases, view_name
    finally:
        table.close()


def test_kill_9_at_random_points_loses_and_doubles_nothing(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    config = _produce(kafka_bootstrap, topic, 150_000, seed=11)
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", kafka_bootstrap]
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    rng = random.Random(2026)
    killed_mid_run = 0
    stderr_file = tmp_path / "run.stderr"
    for _ in range(5):
        with stderr_file.open("wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "cli", "run", *common, "--until-caught-up", "--batch-size", "2000"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
            if kill_mid_run(child, data / "state", 4, topic, config.events, rng.uniform(0.1, 0.5)):
                killed_mid_run += 1
            child.wait(timeout=600)
        assert child.returncode in (0, -signal.SIGKILL), stderr_file.read_text()
    assert killed_mid_run >= 3, "the kills should land while the dataflow is running"
    streamfeat("run", *common, "--until-caught-up", timeout=600)
    _check_against_reference(repo, data, kafka_bootstrap, topic, config, tmp_path / "secondary")


def test_one_and_two_processes_compute_the_same_values(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    config = _produce(kafka_bootstrap, topic, 30_000, seed=5)
    repo = copy_repo(tmp_path, topic)
    for processes in (1, 2):
        data = tmp_path / f"data-{processes}"
        streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
        streamfeat(
            "run",
            "--repo",
            str(repo),
            "--data-dir",
            str(data),
            "--bootstrap",
            kafka_bootstrap,
            "--until-caught-up",
            "--processes",
            str(processes),
            timeout=600,
        )
        _check_against_reference(repo, data, kafka_bootstrap, topic, config, tmp_path / f"secondary-{processes}")

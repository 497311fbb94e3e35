"""Several "hosts" on one machine: each a separate process group with its own data
directory and loopback address (127.0.0.2, .3, .4), sharing only Kafka and the shard
changelog. Losing a host's disk and rescaling 2 -> 3 -> 1 are restarts; the state the
cluster leaves (restored from the changelog into a fresh directory) equals the reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.definitions import load_repo
from engine.generate import GeneratorConfig, produce_events
from engine.ports import free_port
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.restore import restore_shards
from tests.engine.streaming_support import (
    Record,
    applied_events,
    check_online_values,
    copy_repo,
    read_topic,
    reference_events,
    streamfeat,
    truncate_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000
SHARDS = 4
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _run_cluster(repo: Path, data_dirs: list[Path], bootstrap: str) -> None:
    """One `streamfeat run --cluster` per host, each in its own process group, until caught up."""
    cluster = ",".join(f"{HOSTS[i]}:{free_port(HOSTS[i])}" for i in range(len(data_dirs)))
    env = {**os.environ, "STREAMFEAT_STATE_BACKUP": "kafka"}
    procs = []
    for index, data in enumerate(data_dirs):
        if not (data / "plan.json").exists():
            streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", str(SHARDS))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "run",
                    "--repo",
                    str(repo),
                    "--data-dir",
                    str(data),
                    "--bootstrap",
                    bootstrap,
                    "--cluster",
                    cluster,
                    "--process-index",
                    str(index),
                    "--until-caught-up",
                    "--batch-size",
                    "2000",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]


def _produce(bootstrap: str, topic: str, seed: int, offset_ms: int) -> None:
    produce_events(
        GeneratorConfig(
            events=4_000,
            users=300,
            merchants=30,
            seed=seed,
            start_ms=START_MS + offset_ms,
            rate=20.0,
            jitter_ms=100_000,
            malformed_fraction=0.0,
        ),
        topic,
        bootstrap,
    )


def _check_durable_state(repo: Path, tmp_path: Path, bootstrap: str, topic: str, seen: list[Record]) -> None:
    """Restore the whole cluster's state into a fresh directory and compare with the reference."""
    fresh = tmp_path / "verify" / "state"
    restore_shards(bootstrap, topic, fresh, SHARDS)
    views = {v.name: v for v in load_repo(repo).views}
    applied = applied_events(reference_events(seen), 300_000)
    table = RocksDBOnlineTable(fresh, SHARDS, tmp_path / "verify" / "secondary", background=False)
    try:
        assert check_online_values(table, views, applied) > 100
    finally:
        table.close()
    shutil.rmtree(tmp_path / "verify")


@pytest.mark.parametrize("sizes", [(3, 3), (2, 3, 1)], ids=["host-loss", "rescale-2-3-1"])
def test_cluster_phases_end_equal_to_reference(
    sizes: tuple[int, ...], tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    repo = copy_repo(tmp_path, topic)
    seen: list[Record] = []
    for phase, size in enumerate(sizes):
        if phase > 0:
            # What Kafka held is applied: drop it (as retention would), so only the
            # changelog can carry the state into this phase.
            seen += read_topic(kafka_bootstrap, topic, 3)
            truncate_topic(kafka_bootstrap, topic, 3)
        _produce(kafka_bootstrap, topic, seed=20 + phase, offset_ms=phase * 250_000)
        if phase > 0 and sizes[phase - 1] == size:  # the same size again: host 1 lost its disk
            shutil.rmtree(tmp_path / "host-1")
        _run_cluster(repo, [tmp_path / f"host-{i}" for i in range(size)], kafka_bootstrap)
        _check_durable_state(repo, tmp_path, kafka_bootstrap, topic, seen + read_topic(kafka_bootstrap, topic, 3))

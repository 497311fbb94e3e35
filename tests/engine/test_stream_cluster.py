"""Several "hosts" on one machine: each a separate process group with its own data
directory and loopback address (127.0.0.2, .3, .4), sharing only Kafka and the shard
changelog. Losing a host's disk and rescaling 2 -> 3 -> 1 are restarts; the state the
cluster leaves (restored from the changelog into a fresh directory) equals the reference."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import rocksdict

from engine.definitions import load_repo
from engine.metrics import kafka_end_offsets
from engine.processes import stop_process_group
from engine.state.layout import reader_options, shard_path
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.records import CHANGELOG_IDENTITY_KEY
from engine.state.restore import restore_shards
from engine.state.secondary import read_offset_records
from tests.engine.cluster_support import SHARDS, cluster_addresses, produce, run_cluster, start_host
from tests.engine.streaming_support import (
    Record,
    applied_events,
    check_online_values,
    copy_repo,
    read_topic,
    reference_events,
    truncate_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _opened_shards(data_dir: Path) -> set[int]:
    """The shards this host opened: only an opened shard holds a changelog identity
    record (engine/state/records.py), the others stay empty directories."""
    opened: set[int] = set()
    for shard in range(SHARDS):
        path = shard_path(data_dir / "state", shard)
        db = rocksdict.Rdict(str(path), reader_options(), access_type=rocksdict.AccessType.read_only())
        try:
            if db.get(CHANGELOG_IDENTITY_KEY) is not None:
                opened.add(shard)
        finally:
            db.close()
    return opened


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
    first_owners: list[set[int]] = []
    for phase, size in enumerate(sizes):
        if phase > 0:
            # What Kafka held is applied: drop it (as retention would), so only the
            # changelog can carry the state into this phase.
            seen += read_topic(kafka_bootstrap, topic, 3)
            truncate_topic(kafka_bootstrap, topic, 3)
        produce(kafka_bootstrap, topic, seed=20 + phase, offset_ms=phase * 250_000)
        if phase > 0 and sizes[phase - 1] == size:  # the same size again: host 1 lost its disk
            shutil.rmtree(tmp_path / "host-1")
        run_cluster(repo, [tmp_path / f"host-{i}" for i in range(size)], kafka_bootstrap)
        if phase == 0:  # every host opened (and wrote) only its own shards, each shard on one host
            first_owners = [_opened_shards(tmp_path / f"host-{i}") for i in range(size)]
            assert sorted(s for owned in first_owners for s in owned) == list(range(SHARDS)), first_owners
        elif sizes[phase - 1] == size:  # the replacement restored exactly the lost host's shards
            assert _opened_shards(tmp_path / "host-1") == first_owners[1]
        _check_durable_state(repo, tmp_path, kafka_bootstrap, topic, seen + read_topic(kafka_bootstrap, topic, 3))
    _check_status(repo, tmp_path / "host-0", kafka_bootstrap, topic, hosts=sizes[-1])


def _check_status(repo: Path, data: Path, bootstrap: str, topic: str, hosts: int) -> None:
    """`streamfeat status` on one host shows the whole cluster: every shard with its owner
    (one of the last run's processes), none restoring, nothing behind, durable to the end."""
    settings = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", bootstrap]
    done = subprocess.run(
        [sys.executable, "-m", "cli", "status", *settings, "--sample", "0", "--json"],
        env={**os.environ, "STREAMFEAT_STATE_BACKUP": "kafka"},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    status = orjson.loads(done.stdout)
    ends = {p: end for p, end in kafka_end_offsets(bootstrap, topic).items()}
    assert [s["shard"] for s in status["shards"]] == list(range(SHARDS))
    assert all(s["restoring"] is False and s["lag"] == 0 for s in status["shards"]), status["shards"]
    assert all(dict(s["durable_through"]) == {p: e - 1 for p, e in ends.items()} for s in status["shards"])
    assert len(status["hosts"]) == hosts and sorted(x for h in status["hosts"] for x in h["shards"]) == list(
        range(SHARDS)
    )
    # partition lag from every shard's progress, although this host holds only its own shards
    assert [(p["partition"], p["lag"]) for p in status["sources"][0]["partitions"]] == [(p, 0) for p in sorted(ends)]


def test_hosts_started_with_different_settings_refuse_before_applying_anything(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    repo = copy_repo(tmp_path, topic)
    produce(kafka_bootstrap, topic, seed=70, offset_ms=0, events=2_000)
    hosts = [tmp_path / "host-0", tmp_path / "host-1"]
    cluster = cluster_addresses(2)
    procs = [
        start_host(repo, hosts[0], kafka_bootstrap, cluster, 0, until_caught_up=True),
        start_host(repo, hosts[1], kafka_bootstrap, cluster, 1, until_caught_up=True, state_backup=""),
    ]
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            stop_process_group(proc, signal.SIGINT, timeout_s=10, kill_timeout_s=10)
    assert all(code != 0 for code in codes), codes
    for host in hosts:  # every process says why, not only the one that compared
        errors = (host / "run.stderr").read_text(errors="replace")
        assert "started with different settings: state_backup" in errors, (host, errors[-3000:])
        assert "has 'kafka'" in errors and "has 'off'" in errors and "hint: start every process" in errors
        assert "panicked" not in errors, (host, errors[-3000:])  # a clean end, not a lost connection
    for host in hosts:  # no shard of either host applied a record
        assert all(not records for records in read_offset_records(host / "state", SHARDS, topic))

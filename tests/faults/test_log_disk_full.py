"""The Parquet log's disk fills during ingest (a 256 KiB tmpfs), then space comes back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.generate import GeneratorConfig, generate, produce_events
from engine.io.log_reader import read_log
from engine.state.offsets import NO_OFFSET
from engine.state.rocksdb_store import RocksDBStore
from tests.engine.streaming_support import copy_repo, read_topic, reference_events, streamfeat
from tests.faults.faults_support import long_mode, streamfeat_cmd
from tests.faults.pipeline_support import applied_linear, check_against_reference

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "logdisk"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_full_log_disk_keeps_state_going_and_the_log_catches_up(
    tmp_path: Path, tiny_disk: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    config = GeneratorConfig(
        events=200_000 if long_mode() else 60_000,
        users=2_000,
        merchants=50,
        seed=41,
        start_ms=1_780_000_000_000,
        rate=50.0,
        jitter_ms=400_000,
        malformed_fraction=0.005,
    )
    produce_events(config, topic, kafka_bootstrap)
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    log_root = tiny_disk / "log"
    common = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", kafka_bootstrap]
    env = {**os.environ, "STREAMFEAT_LOG_ROOT": str(log_root)}
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    full = subprocess.run(
        [*streamfeat_cmd("run", *common, "--until-caught-up")], capture_output=True, text=True, timeout=600, env=env
    )
    assert full.returncode == 0, full.stderr[-3000:]
    assert "Parquet log publish failed" in full.stderr and "No space left on device" in full.stderr, full.stderr[-3000:]
    events = reference_events(read_topic(kafka_bootstrap, topic, 3), generate(config))
    applied = applied_linear(events)
    # State kept going: every shard's applied offset reached the end of every partition.
    ends = {p: max(e["offset"] for e in events if e["partition"] == p) for p in range(3)}
    store = RocksDBStore(data / "state", 4)
    try:
        records = [dict(part.read_offsets(topic)) for part in store.partitions]
    finally:
        store.close()
    behind = [r for shard in records for r in shard.values() if r.log_offset < r.applied_offset]
    assert behind, "the full disk should have left some log offsets behind the applied offsets"
    for p, end in ends.items():
        assert max(shard[p].applied_offset for shard in records if p in shard) == end
    assert all(r.log_offset == NO_OFFSET or r.log_offset <= r.applied_offset for s in records for r in s.values())
    # Readers see only whole files: no .tmp left behind, every visible file reads.
    assert not [p for p in log_root.rglob("*") if p.name.endswith(".tmp")]
    purchases = {(e["partition"], e["offset"]) for e in applied if e["event_type"] == "PURCHASE"}
    for view in ("user_spend", "merchant_activity"):
        if (log_root / view).exists():
            seen = read_log(str(log_root), view)
            assert set(zip(seen["partition"].to_list(), seen["offset"].to_list(), strict=True)) <= purchases
    # Space returns: the next run replays the unpublished records into the log only.
    grown = subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], capture_output=True, text=True)
    assert grown.returncode == 0, grown.stderr
    again = subprocess.run(
        streamfeat_cmd("run", *common, "--until-caught-up"), capture_output=True, text=True, timeout=600, env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "publish failed" not in again.stderr
    data_log = data / "log"
    data_log.symlink_to(log_root)  # check_against_reference reads <data>/log
    counts = check_against_reference(repo, data, kafka_bootstrap, topic, events, tmp_path / "secondary")
    print(f"disk full: log caught up; {counts}")

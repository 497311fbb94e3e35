"""Several "hosts" on one machine for the cluster tests: each `streamfeat run --cluster`
is its own process group with its own data directory and loopback address (127.0.0.2,
.3, .4), sharing only Kafka (and Redis when asked) and the shard changelog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.generate import GeneratorConfig, produce_events
from engine.ports import free_port
from engine.processes import stop_process_group
from tests.engine.streaming_support import streamfeat

START_MS = 1_780_000_000_000
SHARDS = 4
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
USERS = 300


def cluster_addresses(size: int) -> str:
    return ",".join(f"{HOSTS[i]}:{free_port(HOSTS[i])}" for i in range(size))


def start_host(
    repo: Path,
    data: Path,
    bootstrap: str,
    cluster: str,
    index: int,
    *extra: str,
    until_caught_up: bool,
    state_backup: str = "kafka",
) -> subprocess.Popen[bytes]:
    """One host's `streamfeat run --cluster` (applying the plan into a fresh data dir first);
    its stderr goes to ``<data>/run.stderr``."""
    if not (data / "plan.json").exists():
        streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", str(SHARDS))
    data.mkdir(parents=True, exist_ok=True)
    with (data / "run.stderr").open("wb") as stderr:
        return subprocess.Popen(
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
                "--batch-size",
                "2000",
                *(["--until-caught-up"] if until_caught_up else []),
                *extra,
            ],
            env={**os.environ, "STREAMFEAT_STATE_BACKUP": state_backup},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def run_cluster(repo: Path, data_dirs: list[Path], bootstrap: str, *extra: str) -> None:
    """Every host until caught up; each must end cleanly."""
    cluster = cluster_addresses(len(data_dirs))
    procs = [
        start_host(repo, data, bootstrap, cluster, index, *extra, until_caught_up=True)
        for index, data in enumerate(data_dirs)
    ]
    # Until every host has exited, or one has failed (the others would wait for it).
    deadline = time.monotonic() + 300
    try:
        while (codes := [proc.poll() for proc in procs]) and time.monotonic() < deadline:
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.2)
    finally:
        # Every host is stopped and reaped before any is judged: a host left running
        # would outlive the test (and its Popen would warn in the next one).
        for proc in procs:
            stop_process_group(proc, signal.SIGINT, timeout_s=20, kill_timeout_s=10)
    assert None not in codes, f"hosts still running after 300 s: exit codes {codes}"
    for data, proc in zip(data_dirs, procs, strict=True):
        assert proc.returncode == 0, (data / "run.stderr").read_text(errors="replace")[-3000:]


def produce(bootstrap: str, topic: str, seed: int, offset_ms: int, events: int = 4_000) -> None:
    produce_events(
        GeneratorConfig(
            events=events,
            users=USERS,
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

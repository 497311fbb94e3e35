"""The dashboard of a cluster with durable shards shows, per host and per shard, what
`streamfeat status` shows: owner, lag, last durable point, restore in progress."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.metrics import kafka_end_offsets
from engine.state.changelog import ShardChangelog
from engine.state.progress import ShardOwner
from tests.engine.cluster_support import SHARDS, produce, run_cluster
from tests.engine.streaming_support import copy_repo
from tests.faults.faults_support import serve
from tests.ops.cdp_support import Browser, chromium_or_skip

pytestmark = [pytest.mark.kafka, pytest.mark.browser, pytest.mark.slow]

DURABLE = {"STREAMFEAT_STATE_BACKUP": "kafka"}
REPLACEMENT = "replacement-host pid 4242"


def _status(repo: Path, data: Path, bootstrap: str) -> dict[str, Any]:
    settings = ["--repo", str(repo), "--data-dir", str(data), "--bootstrap", bootstrap]
    done = subprocess.run(
        [sys.executable, "-m", "cli", "status", *settings, "--sample", "0", "--json"],
        env={**os.environ, **DURABLE},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    status: dict[str, Any] = orjson.loads(done.stdout)
    return status


def _cells(browser: Browser, table: str) -> list[list[str]]:
    rows: list[list[str]] = browser.evaluate(
        f"[...document.querySelectorAll('#{table} tbody tr')].map(tr => [...tr.children].map(td => td.textContent))"
    )
    return rows


def test_dashboard_shows_every_shard_and_host_as_status_does(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    binary = chromium_or_skip()
    topic = kafka_topic(partitions=3)
    repo = copy_repo(tmp_path, topic)
    produce(kafka_bootstrap, topic, seed=80, offset_ms=0, events=2_000)
    hosts = [tmp_path / "host-0", tmp_path / "host-1"]
    run_cluster(repo, hosts, kafka_bootstrap)
    # A replacement host has just opened shard 0: the owner record its process writes
    # before restoring (engine/state/rocksdb_store.py), so the shard shows as restoring.
    changelog = ShardChangelog(kafka_bootstrap, topic, 0)
    try:
        changelog.announce(ShardOwner(REPLACEMENT, True, time.time_ns() // 1_000_000))
    finally:
        changelog.close()
    status = _status(repo, hosts[0], kafka_bootstrap)

    # The server reads the cluster from kafka_bootstrap: the session's broker, never the default port.
    served_env = {**DURABLE, "STREAMFEAT_KAFKA_BOOTSTRAP": kafka_bootstrap}
    with (
        serve(hosts[0], env=served_env, repo=repo) as served,
        Browser(tmp_path / "chromium-profile", binary) as browser,
    ):
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{served.url}/ui")
        browser.wait_for("document.readyState === 'complete'", 30)
        browser.wait_for(
            f"!document.getElementById('cluster').hidden"
            f" && document.querySelectorAll('#cluster-shards tbody tr').length === {SHARDS}",
            60,
        )
        shard_rows = _cells(browser, "cluster-shards")
        host_rows = _cells(browser, "cluster-hosts")
        assert browser.evaluate("document.getElementById('cluster-error').hidden") is True

    want_shards = [
        [
            s["topic"],
            str(s["shard"]),
            s["owner"],
            "RESTORING" if s["restoring"] else "owned",
            str(s["lag"]),
            " ".join(f"{p}:{o}" for p, o in s["durable_through"]),
            str(s["changelog_end"]),
        ]
        for s in status["shards"]
    ]
    # the state column also says since when (formatted by the page)
    assert [[*row[:3], row[3].split(" since ")[0], *row[4:]] for row in shard_rows] == want_shards
    assert all(" since 20" in row[3] for row in shard_rows), shard_rows
    want_hosts = [
        [h["owner"], ",".join(map(str, h["shards"])), ",".join(map(str, h["restoring"])) or "-", str(h["lag"])]
        for h in status["hosts"]
    ]
    assert host_rows == want_hosts
    # what those rows say: shard 0 is restoring on the replacement, the two hosts of the
    # run own the others, nothing is behind, every shard is durable to the topic's end
    assert shard_rows[0][2] == REPLACEMENT and shard_rows[0][3].startswith("RESTORING")
    assert [REPLACEMENT, "0", "0", "0"] in host_rows
    run_owners = {row[2] for row in shard_rows[1:]}
    assert len(run_owners) <= len(hosts) and REPLACEMENT not in run_owners
    assert all(row[3].startswith("owned") and row[4] == "0" for row in shard_rows[1:])
    durable_end = " ".join(f"{p}:{end - 1}" for p, end in sorted(kafka_end_offsets(kafka_bootstrap, topic).items()))
    assert all(row[5] == durable_end for row in shard_rows), (durable_end, shard_rows)

"""`streamfeat status` of a cluster: shards grouped per owner, restoring shards named."""

from __future__ import annotations

import io

from rich.console import Console

from cli.status_cluster import render_cluster
from engine.state.cluster_status import HostStatus, ShardStatus, hosts_of


def _shard(shard: int, owner: str | None, restoring: bool | None, lag: int | None) -> ShardStatus:
    return ShardStatus("tx", shard, owner, restoring, None if owner is None else 1_780_000_000_000, lag, ((0, 9),), 42)


def test_hosts_group_their_shards_restoring_ones_and_lag() -> None:
    shards = (
        _shard(0, "a pid 1", False, 3),
        _shard(1, "b pid 2", True, 5),
        _shard(2, "a pid 1", False, 4),
        _shard(3, None, None, None),
    )
    assert hosts_of(shards) == (
        HostStatus("(no owner yet)", (3,), (), None),
        HostStatus("a pid 1", (0, 2), (), 7),
        HostStatus("b pid 2", (1,), (1,), 5),
    )


def test_the_rendered_tables_name_owner_state_lag_and_durable_point() -> None:
    shards = (_shard(0, "a pid 1", False, 3), _shard(1, "b pid 2", True, 0))
    out = io.StringIO()
    render_cluster(Console(file=out, width=200), shards, hosts_of(shards))
    text = out.getvalue()
    for expected in ("a pid 1", "b pid 2", "RESTORING", "owned since 2026-", "0:9", "42"):
        assert expected in text, (expected, text)


def test_a_restore_the_broker_interrupted_shows_its_retries_and_last_error() -> None:
    shard = ShardStatus("tx", 0, "a pid 1", True, 1_780_000_000_000, 3, ((0, 9),), 42, 2, "broker down")
    out = io.StringIO()
    render_cluster(Console(file=out, width=300), (shard,), hosts_of((shard,)))
    assert "restore retried 2x, last: broker down" in out.getvalue()

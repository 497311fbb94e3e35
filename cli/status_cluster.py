"""``streamfeat status`` with durable shards (``state_backup: kafka``): the per-shard and
per-host tables of engine/state/cluster_status.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.state.cluster_status import HostStatus, ShardStatus

if TYPE_CHECKING:  # rich is imported when a table is drawn
    from rich.console import Console


def render_cluster(console: Console, shards: tuple[ShardStatus, ...], hosts: tuple[HostStatus, ...]) -> None:
    from rich.table import Table

    from engine.timefmt import iso_utc

    table = Table(title="shards (state_backup: kafka)")
    for column in ("topic", "shard", "owner", "state", "lag", "durable through (partition:offset)", "changelog end"):
        table.add_column(column)
    for s in shards:
        state = "never opened" if s.restoring is None else ("RESTORING" if s.restoring else "owned")
        since = "" if s.owner_since_ms is None else f" since {iso_utc(s.owner_since_ms)}"
        if s.restore_retries:  # a broker outage interrupted the restore; it was retried
            since += f" (restore retried {s.restore_retries}x, last: {s.restore_error})"
        table.add_row(
            s.topic,
            str(s.shard),
            s.owner or "-",
            state + since,
            "?" if s.lag is None else str(s.lag),
            " ".join(f"{p}:{o}" for p, o in s.durable_through) or "-",
            "?" if s.changelog_end is None else str(s.changelog_end),
        )
    console.print(table)
    per_host = Table(title="hosts")
    for column in ("owner", "shards", "restoring", "lag"):
        per_host.add_column(column)
    for h in hosts:
        per_host.add_row(
            h.owner,
            ",".join(map(str, h.shards)),
            ",".join(map(str, h.restoring)) or "-",
            "?" if h.lag is None else str(h.lag),
        )
    console.print(per_host)

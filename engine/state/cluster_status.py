"""The cluster's state with durable shards (``state_backup: kafka``): per shard and per
host, who owns it, whether it is restoring, how far behind it is and how far it is
durable. ``streamfeat status`` prints it (cli/status_cluster.py) and the dashboard draws
it (serving/routes_ops.py): both read it here.

Everything comes from Kafka, so any host (or a laptop with the settings) sees the whole
cluster: the progress topic holds every shard's offset records and owner record
(engine/state/progress.py), the changelog's end offsets say how far each shard's durable
copy reaches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardStatus:
    topic: str
    shard: int
    owner: str | None  # host and process id of the last process that opened it; None: never opened
    restoring: bool | None
    owner_since_ms: int | None
    lag: int | None  # source records this shard has not applied yet (None: broker ends unknown)
    durable_through: tuple[tuple[int, int], ...]  # (partition, applied offset) in the changelog
    changelog_end: int | None  # next offset of the shard's changelog partition
    restore_retries: int = 0  # restore attempts a broker outage interrupted (engine/state/restore_retry.py)
    restore_error: str = ""  # what interrupted the last of them


@dataclass(frozen=True)
class HostStatus:
    owner: str
    shards: tuple[int, ...]
    restoring: tuple[int, ...]
    lag: int | None


def progress_applied(bootstrap: str, topic: str, n_shards: int) -> list[dict[int, int]]:
    """Each shard's applied offset per partition, from the progress topic (every shard,
    also the ones this host does not own)."""
    from engine.state.progress import read_cluster_progress

    offsets = read_cluster_progress(bootstrap, topic, n_shards).offsets
    return [{p: r.applied_offset for p, r in offsets.get(s, {}).items()} for s in range(n_shards)]


def collect_shards(bootstrap: str, topic: str, n_shards: int, ends: dict[int, int] | None) -> tuple[ShardStatus, ...]:
    from engine.state.changelog import changelog_topic
    from engine.state.committed_reader import committed_consumer, watermarks
    from engine.state.progress import read_cluster_progress

    progress = read_cluster_progress(bootstrap, topic, n_shards)
    consumer = committed_consumer(bootstrap, "streamfeat-status")
    changelog_ends: list[int | None]
    try:
        changelog_ends = [watermarks(consumer, changelog_topic(topic), s)[1] for s in range(n_shards)]
    except Exception:  # the changelog is missing or the broker went away: show the rest
        changelog_ends = [None] * n_shards
    finally:
        consumer.close()
    rows: list[ShardStatus] = []
    for shard in range(n_shards):
        applied = {p: r.applied_offset for p, r in progress.offsets.get(shard, {}).items()}
        owner = progress.owners.get(shard)
        lag = None if ends is None else sum(max(0, end - (applied.get(p, -1) + 1)) for p, end in ends.items())
        rows.append(
            ShardStatus(
                topic=topic,
                shard=shard,
                owner=None if owner is None else owner.owner,
                restoring=None if owner is None else owner.restoring,
                owner_since_ms=None if owner is None else owner.since_ms,
                lag=lag,
                durable_through=tuple(sorted(applied.items())),
                changelog_end=changelog_ends[shard],
                restore_retries=0 if owner is None else owner.retries,
                restore_error="" if owner is None else owner.last_error,
            )
        )
    return tuple(rows)


def hosts_of(shards: tuple[ShardStatus, ...]) -> tuple[HostStatus, ...]:
    """Per owner: its shards, the ones it is restoring, and their summed lag."""
    owners = sorted({s.owner or "(no owner yet)" for s in shards})
    hosts: list[HostStatus] = []
    for owner in owners:
        mine = [s for s in shards if (s.owner or "(no owner yet)") == owner]
        lags = [s.lag for s in mine]
        hosts.append(
            HostStatus(
                owner=owner,
                shards=tuple(s.shard for s in mine),
                restoring=tuple(s.shard for s in mine if s.restoring),
                lag=None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags),
            )
        )
    return tuple(hosts)

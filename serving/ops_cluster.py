"""The cluster view of the dashboard (``state_backup: kafka``): per host and per shard the
owner, lag, last durable point and whether a restore is in progress, the same rows as
``streamfeat status`` (both read engine/state/cluster_status.py).

Reading the progress topic to its end costs a round trip to Kafka and grows with the
commits since its last compaction, so the summary reuses one reading for
:data:`CLUSTER_CACHE_S` seconds; a broker that does not answer is reported in the
document, never as a failed summary.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

from engine.config import Settings
from engine.json_types import JSONObject
from serving.registry import Registry

CLUSTER_CACHE_S = 5.0


@dataclass(frozen=True)
class ClusterWatch:
    """Where to read the cluster's shards: the broker, the source topics, the shard count."""

    bootstrap: str
    topics: tuple[str, ...]
    shards: int

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("ClusterWatch: field 'topics': expected at least one source topic, got none")
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
            raise ValueError(f"ClusterWatch: field 'shards': expected an int >= 1, got {self.shards!r}")


def cluster_watch(settings: Settings, registry: Registry) -> ClusterWatch | None:
    """What to watch when the shards are durable (``state_backup: kafka``), else None."""
    topics = tuple(sorted({v.definition.source.topic for v in registry.views.values()}))
    if settings.state_backup != "kafka" or not topics:
        return None
    return ClusterWatch(settings.kafka_bootstrap, topics, registry.n_shards)


def read_cluster(watch: ClusterWatch) -> JSONObject:
    """``{"shards": [...], "hosts": [...], "error": None}``, or the rows read so far and why
    the rest are missing."""
    from engine.metrics import kafka_end_offsets
    from engine.state.cluster_status import ShardStatus, collect_shards, hosts_of

    shards: list[ShardStatus] = []
    error: str | None = None
    try:
        for topic in watch.topics:
            try:
                ends: dict[int, int] | None = kafka_end_offsets(watch.bootstrap, topic)
            except Exception:  # the lag is unknown, the rest may still be read
                ends = None
            shards += collect_shards(watch.bootstrap, topic, watch.shards, ends)
    except Exception as exc:  # no broker: say so on the page
        error = f"{type(exc).__name__}: {exc}"
    rows = tuple(shards)
    return {
        "shards": [asdict(s) for s in rows],
        "hosts": [asdict(h) for h in hosts_of(rows)] if rows else [],
        "error": error,
    }


class ClusterReader:
    """:func:`read_cluster` off the event loop, at most once per :data:`CLUSTER_CACHE_S`."""

    def __init__(self, watch: ClusterWatch | None) -> None:
        self.watch = watch
        self._cached: tuple[float, JSONObject] | None = None
        self._lock = asyncio.Lock()

    async def read(self) -> JSONObject | None:
        if self.watch is None:
            return None
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= CLUSTER_CACHE_S:
                self._cached = (now, await asyncio.to_thread(read_cluster, self.watch))
            return self._cached[1]

"""Online-table access for serving: tile reads, per-view freshness, value statuses.

Freshness comes from the per-view metadata record the ingest sink writes
(key ``b"M" + fingerprint`` in every RocksDB shard, ``b"sf:meta:" + fingerprint hex``
in Redis; value ``struct '<qq'`` = (max event time seen in ms, wall clock when written
in ms)). The freshest shard wins. ``RocksDBOnlineTable.read_meta`` reads it from every
shard; :func:`meta_reader_for` adapts Redis here (see docs/serving.md).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.state import (
    OffsetRecord,
    OnlineTable,
    OnlineTableUnavailable,
    RedisOnlineTable,
    RocksDBOnlineTable,
)
from serving.exceptions import OnlineTableUnavailableError
from serving.metrics import ServingMetrics
from serving.registry import CompiledView

REDIS_META_PREFIX = b"sf:meta:"
META_RECORD = struct.Struct("<qq")

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
DEFAULTED = "DEFAULTED"
STALE = "STALE"
FUTURE_EVENTS = "FUTURE_EVENTS"


class MetaReader(Protocol):
    def read_meta(self, fingerprint: bytes) -> list[bytes | None]:
        """The view's metadata record in every place it is kept (None where absent)."""
        ...


class _RedisMeta:
    def __init__(self, table: RedisOnlineTable) -> None:
        self.table = table

    def read_meta(self, fingerprint: bytes) -> list[bytes | None]:
        value: bytes | None = self.table._client.get(REDIS_META_PREFIX + fingerprint.hex().encode())
        return [value]


class _NoMeta:
    def read_meta(self, fingerprint: bytes) -> list[bytes | None]:
        return []


def meta_reader_for(table: OnlineTable) -> MetaReader:
    if hasattr(table, "read_meta"):
        reader: MetaReader = table  # type: ignore[assignment]
        return reader
    if isinstance(table, RedisOnlineTable):
        return _RedisMeta(table)
    return _NoMeta()


@dataclass(frozen=True, slots=True)
class Freshness:
    """What serving knows about how current a view's state is."""

    max_event_ts_ms: int | None  # None: no metadata record yet (freshness unknown)
    written_at_ms: int | None

    def lag_ms(self, t_ms: int) -> int | None:
        """Event-time lag as of ``t_ms``: how far ``t_ms`` is past the newest applied event."""
        if self.max_event_ts_ms is None:
            return None
        return max(0, t_ms - self.max_event_ts_ms)


UNKNOWN = Freshness(None, None)


def decode_meta(values: Sequence[bytes | None]) -> Freshness:
    best: tuple[int, int] | None = None
    for value in values:
        if value is None or len(value) != META_RECORD.size:
            continue
        record: tuple[int, int] = META_RECORD.unpack(value)
        if best is None or record > best:
            best = record
    return UNKNOWN if best is None else Freshness(best[0], best[1])


class OnlineAccess:
    """Reads for serving: maps state-layer failures to HTTP 503 and counts them.

    Freshness is cached per view for ``freshness_ttl_s`` (default 0.1 s, the
    secondaries' catch-up interval): reading every shard's metadata on every request
    would cost more than the tile read itself.
    """

    def __init__(
        self,
        table: OnlineTable,
        metrics: ServingMetrics,
        *,
        backend: str,
        freshness_ttl_s: float = 0.1,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.backend = backend
        self.freshness_ttl_s = freshness_ttl_s
        self._meta = meta_reader_for(table)
        self._freshness: dict[bytes, tuple[float, Freshness]] = {}

    def read_views(self, requests: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[list[bytes | None]]:
        try:
            return self.table.read_views(requests)
        except OnlineTableUnavailable as exc:
            self.metrics.online_read_errors.labels(self.backend).inc()
            raise OnlineTableUnavailableError(exc.reason, hint=exc.hint) from exc

    def freshness(self, view: CompiledView, *, cached_ok: bool = True) -> Freshness:
        """The view's freshness; ``cached_ok=False`` reads it now (historical reads need a
        value read after their records, see serving/history.py)."""
        now = time.monotonic()
        cached = self._freshness.get(view.fingerprint)
        if cached_ok and cached is not None and now - cached[0] < self.freshness_ttl_s:
            return cached[1]
        try:
            found = decode_meta(self._meta.read_meta(view.fingerprint))
        except Exception:  # freshness is advisory: a failed read must not fail the request
            self.metrics.online_read_errors.labels(self.backend).inc()
            found = cached[1] if cached is not None else UNKNOWN
        self._freshness[view.fingerprint] = (now, found)
        return found

    def read_offsets(self, topic: str) -> list[dict[int, OffsetRecord]] | None:
        """Every shard's offset records of ``topic``, or None when the online table does
        not keep them (Redis)."""
        if not isinstance(self.table, RocksDBOnlineTable):
            return None
        try:
            return self.table.read_offsets(topic)
        except OnlineTableUnavailable as exc:
            self.metrics.online_read_errors.labels(self.backend).inc()
            raise OnlineTableUnavailableError(exc.reason, hint=exc.hint) from exc

    def ready(self) -> tuple[bool, str]:
        health = self.table.health()
        return health.ready, health.detail if health.ready or not health.last_error else (
            f"{health.detail}; last error: {health.last_error}")

    def update_freshness_gauges(self, views: Mapping[str, CompiledView]) -> None:
        now_ms = time.time_ns() // 1_000_000
        for view in views.values():
            lag = self.freshness(view).lag_ms(now_ms)
            self.metrics.freshness_lag.labels(view.name).set(float("nan") if lag is None else lag / 1000.0)

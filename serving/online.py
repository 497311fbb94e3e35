"""Online-table access for serving: tile reads, per-view freshness, value statuses.

Freshness comes from the per-view metadata record the ingest writer keeps in every
shard; ``OnlineTable.read_meta`` returns the freshest shard's (formats and rule:
engine/state/records.py; see docs/serving.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from engine.clock import wall_clock_ms
from engine.kernel.codec import FLAG_COLD, has_cold, join_parts, stored_cold_part
from engine.state import (
    UNKNOWN_FRESHNESS,
    Freshness,
    OffsetRecord,
    OnlineTable,
    OnlineTableUnavailable,
)
from serving.exceptions import OnlineTableUnavailableError
from serving.metrics import ServingMetrics
from serving.plan_watch import PlanWatch
from serving.registry import CompiledService, CompiledView
from serving.window_cache import WindowCache

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
DEFAULTED = "DEFAULTED"
STALE = "STALE"
FUTURE_EVENTS = "FUTURE_EVENTS"
#: The window holds events but its value overflowed or is not a number (for example sums
#: of values near 1e308); the value is served as null (docs/serving.md).
INVALID = "INVALID"
# An exact count_distinct whose window holds more distinct values than its max_distinct.
OVER_BOUND = "OVER_BOUND"
#: The window reaches before the time its view joined a running stream (engine/plan.py):
#: events before then are missing until a backfill; the value counts only those after.
INCOMPLETE = "INCOMPLETE"


def _joined(hot: bytes | None, cold: bytes | None, entity_key: bytes) -> bytes | None:
    """The whole record of a (tile record, cold part) pair read together: the tile
    record alone when a merge has made it whole again since the first read."""
    if hot is None or not has_cold(hot):
        return hot
    return join_parts(stored_cold_part(cold, entity_key), hot)


class OnlineAccess:
    """Reads for serving: maps state-layer failures to HTTP 503 and counts them.

    Freshness is cached per view for ``freshness_ttl_s`` (default 0.1 s, a few of the
    secondaries' catch-ups at the default ``catch_up_interval_ms`` of 25): reading every
    shard's metadata on every request would cost more than the tile read itself, and a
    staleness threshold is minutes, so a status at most 0.1 s old decides the same.
    """

    def __init__(
        self,
        table: OnlineTable,
        metrics: ServingMetrics,
        *,
        backend: str,
        freshness_ttl_s: float = 0.1,
        window_cache: WindowCache | None = None,
    ) -> None:
        self.table = table
        # One entity's evaluated windows, reused while its record is byte for byte the
        # same (serving/window_cache.py); None: every read is evaluated.
        self.window_cache = window_cache
        self.metrics = metrics
        self.backend = backend
        self.freshness_ttl_s = freshness_ttl_s
        self._freshness: dict[bytes, tuple[float, Freshness]] = {}
        # What the applied plan says of the served views (joins, changes): set by the app.
        self.plan: PlanWatch | None = None

    def read_views(self, requests: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[list[bytes | None]]:
        """Every entity's whole record: a hot part and its cold part (engine/kernel/codec.py,
        "Hot and cold parts") read again together and joined; entities without a cold
        part cost one test of a header byte of the record read."""
        try:
            records = self.table.read_views(requests)
            for found in records:
                for record in found:
                    # has_cold inlined: this runs for every record served (a truncated
                    # record is left to the decoder, which names what is wrong).
                    if record is not None and len(record) > 1 and record[1] & FLAG_COLD:
                        return self._with_cold_parts(requests, records)
            return records
        except OnlineTableUnavailable as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OnlineTableUnavailable) -> OnlineTableUnavailableError:
        """A table's failure, counted, as this layer's 503."""
        self.metrics.online_read_errors.labels(self.backend).inc()
        return OnlineTableUnavailableError(exc.reason, hint=exc.hint)

    def _with_cold_parts(
        self, requests: Sequence[tuple[bytes, Sequence[bytes]]], records: list[list[bytes | None]]
    ) -> list[list[bytes | None]]:
        """``records`` with every flagged hot part replaced by its whole record."""
        for (fingerprint, keys), found in zip(requests, records, strict=True):
            flagged = [i for i, record in enumerate(found) if record is not None and has_cold(record)]
            if flagged:
                parts = self.table.read_parts(fingerprint, [keys[i] for i in flagged])
                for i, (hot, cold) in zip(flagged, parts, strict=True):
                    found[i] = _joined(hot, cold, keys[i])
        return records

    def freshness(self, view: CompiledView, *, cached_ok: bool = True) -> Freshness:
        """The view's freshness; ``cached_ok=False`` reads it now (historical reads need a
        value read after their records, see serving/history.py)."""
        now = time.monotonic()
        cached = self._freshness.get(view.fingerprint)
        if cached_ok and cached is not None and now - cached[0] < self.freshness_ttl_s:
            return cached[1]
        try:
            found = self.table.read_meta(view.fingerprint)
        except Exception:  # freshness is advisory: a failed read must not fail the request
            self.metrics.online_read_errors.labels(self.backend).inc()
            found = cached[1] if cached is not None else UNKNOWN_FRESHNESS
        self._freshness[view.fingerprint] = (now, found)
        return found

    def fresh_freshness(self, views: Sequence[CompiledView]) -> list[Freshness]:
        """Every view's freshness read now, together (one Redis round trip): what an
        ``as_of`` request reads after its records (serving/history.py). Cached as
        :meth:`freshness` caches."""
        now = time.monotonic()
        try:
            found = self.table.read_metas([view.fingerprint for view in views])
        except OnlineTableUnavailable as exc:
            raise self._unavailable(exc) from exc
        for view, fresh in zip(views, found, strict=True):
            self._freshness[view.fingerprint] = (now, fresh)
        return found

    def read_offsets(self, topic: str) -> list[dict[int, OffsetRecord]] | None:
        """Every shard's offset records of ``topic``, or None when the online table has
        none (a Redis copy written before it recorded them)."""
        try:
            return self.table.read_offsets(topic)
        except OnlineTableUnavailable as exc:
            raise self._unavailable(exc) from exc

    def reopen_if_behind(self, topic: str) -> bool:
        """:meth:`OnlineTable.reopen_if_behind`, its failures as this layer's 503."""
        try:
            return self.table.reopen_if_behind(topic)
        except OnlineTableUnavailable as exc:
            raise self._unavailable(exc) from exc

    def joins(self) -> Mapping[bytes, int]:
        """Served views that joined their running stream: fingerprint -> join time."""
        return self.plan.joins if self.plan is not None else {}

    def check_plan(self, service: CompiledService) -> None:
        """503 ``plan_changed`` for a service reading a view no longer applied as served."""
        if self.plan is not None:
            self.plan.check(service)

    def ready(self) -> tuple[bool, str]:
        health = self.table.health()
        if health.ready or not health.last_error or health.last_error == health.detail:
            return health.ready, health.detail
        return health.ready, f"{health.detail}; last error: {health.last_error}"

    def update_freshness_gauges(self, views: Mapping[str, CompiledView]) -> None:
        now_ms = wall_clock_ms()
        for view in views.values():
            lag = self.freshness(view).lag_ms(now_ms)
            self.metrics.freshness_lag.labels(view.name).set(float("nan") if lag is None else lag / 1000.0)

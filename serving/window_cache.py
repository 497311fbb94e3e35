"""A cache of one entity's evaluated windows, keyed by the exact bytes they came from.

A view's values for one entity as of ``t`` are a function of the entity's stored record
and of ``t`` (docs/semantics.md section 3). ``t`` enters in two ways only: through the
current tile ``t // g``, which fixes every window's tile rows, and through
``time_since_last``, which is ``t`` minus the window's newest event time. So values
computed from a record as of ``t0`` are the values as of ``t`` whenever the record
read now is byte for byte the same and ``t // g == t0 // g``, once each
``time_since_last`` is moved by ``t - t0`` (integer milliseconds, exact).

That is what a hit checks: the record just read is compared with the cached record in
full (``bytes ==``, a ``memcmp``), so a write, a retention trim or a rebuilt state
dir -- anything that changes the bytes -- misses and is evaluated afresh. Nothing is
trusted that the record itself does not prove: there is no time to live and no
invalidation to forget. A hit skips decoding and every window merge (the sketch
merges, DDSketch quantiles and HyperLogLog estimates are most of a one-entity request).

When the record has changed, its sketch windows still need not be merged from scratch:
the entity's last evaluation left, per sketch slot and window, the blobs of the window's
closed tiles (those before the current tile) and their merge. If the new record's
closed tiles of that window hold the very same blobs (compared element by element), the
stored merge is merged with the current tile only (merging is order-free and associative
to the byte, ``engine.kernel.sketches.merge_window``). A 30-day percentile over hourly
tiles then merges two blobs per request after a write instead of 720.

Many-entity requests use the same cache row by row (serving/evaluate.py): the rows it
cannot answer are evaluated together by the vectorized kernel and remembered under keys
of their own.

The cache is bounded by the bytes of the records and closed-tile blobs it holds (first
in, first out).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

from engine.kernel.window import ClosedMerges, Value, tile_id
from engine.kernel.window_plan import WindowPlan, decode_record

#: Default bound of the records the cache holds, in bytes.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# (view projection, entity key): CompiledView.cache_prefix and the stored entity key.
CacheKey = tuple[bytes, bytes]
# Per-entry bookkeeping counted against the bound besides the record itself.
_ENTRY_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class CachedWindows:
    """One entity's values (declared order), empty flags and newest event time (None:
    no record)."""

    values: Sequence[Value]  # a tuple when shared with the cache (no list value in it)
    empty: tuple[bool, ...]
    max_event_ts: int | None


@dataclass(frozen=True, slots=True)
class _Entry:
    record: bytes
    current_tile: int
    t_ms: int
    # The answer as of t_ms, handed out as it is on a hit when nothing in it moves with
    # the time or may be changed by the caller (no time_since_last, no list value).
    answer: CachedWindows
    closed: ClosedMerges  # sketch windows' closed-tile merges, carried to the next record
    cost: int  # bytes counted against the bound


def evaluate_record(
    plan: WindowPlan,
    record: bytes | None,
    t_ms: int,
    cache: WindowCache | None = None,
    key: CacheKey | None = None,
) -> CachedWindows:
    """One entity's windows as of ``t_ms`` from its stored ``record`` (None: no record),
    from ``cache`` when it holds them for these very bytes, else decoded and evaluated
    (and remembered under ``key``). Raises the codec's ``TileCodecError`` for a record
    that cannot be decoded."""
    if record is None:
        values, empty = plan.evaluate(None, t_ms)
        return CachedWindows(values, tuple(empty), None)
    closed = None
    if cache is not None and key is not None:
        hit = cache.get(key, plan, record, t_ms)
        if hit is not None:
            return hit
        closed = cache.closed_merges(key)
    layout = plan.spec.layout
    # A projection reading no blob leaves them undecoded (the section's length is checked).
    decoded = decode_record(record, layout.width, len(layout.sketch_slots) if plan.has_sketches else 0)
    values, empty = plan.evaluate(decoded, t_ms, closed)
    if cache is not None and key is not None and closed is not None:
        cache.put(key, plan, record, t_ms, values, empty, decoded.max_event_ts, closed)
    return CachedWindows(values, tuple(empty), decoded.max_event_ts)


class WindowCache:
    """Evaluated windows per (view projection, entity), valid while the record is unchanged.

    ``max_bytes`` bounds the stored records plus a small overhead per entry; 0 disables
    the cache. Safe to share between the event loop and worker threads.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"WindowCache: field 'max_bytes': expected an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: dict[CacheKey, _Entry] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: CacheKey, plan: WindowPlan, record: bytes, t_ms: int) -> CachedWindows | None:
        """The values of ``record`` as of ``t_ms`` if they were cached from the same bytes
        in the same current tile, else None. ``key`` is the view projection's
        ``cache_prefix`` and the entity key."""
        # One row without get_rows' comprehensions (a one-entity request asks once per view);
        # the same proof: the very bytes the values came from, in the same current tile.
        entry = self._entries.get(key)
        if entry is None or entry.current_tile != tile_id(t_ms, plan.spec.interval_ms) or entry.record != record:
            self.misses += 1
            return None
        self.hits += 1
        if not plan.time_linear and not plan.list_valued:  # nothing to move or copy
            return entry.answer
        return _moved(entry, plan, t_ms)

    def get_rows(
        self,
        prefix: bytes,
        plan: WindowPlan,
        records: Sequence[bytes | None],
        keys: Sequence[bytes],
        times: int | Sequence[int],
    ) -> list[CachedWindows | None]:
        """:meth:`get` of many rows of one view projection (``prefix``) in one call, as of
        one time for every row or one per row; a row without a record (None) is None,
        and counts neither as a hit nor as a miss."""
        get = self._entries.get
        interval = plan.spec.interval_ms
        # A hit: an entry of the very bytes the values came from, in the same current tile.
        # (A row without a record never matches: no entry holds None.)
        row_times = [times] * len(records) if isinstance(times, int) else times
        tiles = (
            [tile_id(times, interval)] * len(records)
            if isinstance(times, int)
            else [tile_id(t, interval) for t in times]
        )
        found = [
            entry if entry is not None and entry.current_tile == tile and entry.record == record else None
            for entry, record, tile in zip(map(get, zip(repeat(prefix), keys)), records, tiles, strict=True)
        ]
        absent = records.count(None)
        misses = found.count(None) - absent
        self.misses += misses
        self.hits += len(found) - misses - absent
        if not plan.time_linear and not plan.list_valued:  # nothing to move or copy
            return [None if entry is None else entry.answer for entry in found]
        return [
            None if entry is None else _moved(entry, plan, t_ms) for entry, t_ms in zip(found, row_times, strict=True)
        ]

    def closed_merges(self, key: CacheKey) -> ClosedMerges:
        """The closed-tile merges of the entity's last evaluation (a new record of it
        reuses those whose tiles still hold the same blobs), or an empty memo."""
        entry = self._entries.get(key)
        return {} if entry is None else entry.closed

    def put(
        self,
        key: CacheKey,
        plan: WindowPlan,
        record: bytes,
        t_ms: int,
        values: Sequence[Value],
        empty: Sequence[bool],
        max_event_ts: int,
        closed: ClosedMerges,
    ) -> None:
        """Remember ``values`` (as evaluated from ``record`` as of ``t_ms``) and the
        closed-tile merges made on the way."""
        kept = sum(len(merged) + sum(map(len, blobs)) for blobs, merged in closed.values())
        cost = len(record) + len(key[1]) + kept + _ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        stored = tuple(list(v) if isinstance(v, list) else v for v in values)
        answer = CachedWindows(stored, tuple(empty), max_event_ts)
        entry = _Entry(record, tile_id(t_ms, plan.spec.interval_ms), t_ms, answer, closed, cost)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            while self._entries and self._bytes + cost > self.max_bytes:
                self._bytes -= self._entries.pop(next(iter(self._entries))).cost
            self._entries[key] = entry
            self._bytes += cost


def _moved(entry: _Entry, plan: WindowPlan, t_ms: int) -> CachedWindows:
    """A hit's values as of ``t_ms``: each ``time_since_last`` moved by ``t_ms`` minus the
    cached time, and fresh copies of list values (callers may change their lists)."""
    answer = entry.answer
    values = list(answer.values)
    shift = t_ms - entry.t_ms
    for i in plan.time_linear:
        if not answer.empty[i]:
            values[i] += shift  # type: ignore[operator]  # time_since_last: an int
    for i in plan.list_valued:
        values[i] = list(values[i])  # type: ignore[arg-type]
    return CachedWindows(values, answer.empty, answer.max_event_ts)

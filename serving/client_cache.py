"""The client's TTL cache for hot entities: per-view TTL classes, LRU size bound, counters.

A cached feature row lives as long as the shortest TTL of the views its service
reads (streaming views a few seconds, slower views longer), so an answer is never
older than its fastest view allows. Rows are keyed by service, join-key values and
request data: an on-demand output computed from one request's data is never served
for another's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from engine.json_types import JSONValue


@dataclass(frozen=True)
class CacheConfig:
    """``view_ttl_s`` overrides ``default_ttl_s`` per view name; ``max_entries`` bounds memory."""

    max_entries: int = 10_000
    default_ttl_s: float = 2.0
    view_ttl_s: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.max_entries, bool) or not isinstance(self.max_entries, int) or self.max_entries < 1:
            raise ValueError(f"CacheConfig.max_entries: expected an integer >= 1, got {self.max_entries!r}")
        for name, ttl in {"default_ttl_s": self.default_ttl_s, **self.view_ttl_s}.items():
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
                raise ValueError(
                    f"CacheConfig TTL of {name!r}: expected seconds > 0, got {ttl!r}; "
                    "leave the cache off (cache=None) to disable it"
                )

    def ttl_for(self, views: list[str]) -> float:
        """The row TTL of a service reading ``views``: the shortest of their TTLs."""
        return min((self.view_ttl_s.get(v, self.default_ttl_s) for v in views), default=self.default_ttl_s)


@dataclass
class CacheStats:
    """Counters of one cache (``FeatureClient.cache.stats``); a miss counts an expired row too."""

    hits: int = 0
    misses: int = 0
    expired: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class FeatureRowCache:
    """LRU of feature rows with a deadline each; not thread-safe (one per client)."""

    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = CacheStats()
        self._clock = clock
        self._rows: OrderedDict[Hashable, tuple[float, dict[str, JSONValue]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: Hashable) -> dict[str, JSONValue] | None:
        entry = self._rows.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._rows.move_to_end(key)
                self.stats.hits += 1
                return dict(entry[1])  # a copy: the caller may change its row
            del self._rows[key]
            self.stats.expired += 1
        self.stats.misses += 1
        return None

    def put(self, key: Hashable, row: Mapping[str, JSONValue], ttl_s: float) -> None:
        self._rows[key] = (self._clock() + ttl_s, dict(row))
        self._rows.move_to_end(key)
        while len(self._rows) > self.config.max_entries:
            self._rows.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        self._rows.clear()

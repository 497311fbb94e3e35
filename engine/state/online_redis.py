"""Online table read from Redis (key formats: engine/state/records.py).

A Redis that lost its data (restarted without persistence, flushed, evicted) would
answer NOT_FOUND for every entity it lost. Each dataflow shard marks its whole copy
(:func:`redis_copied_key`). Given the topic of each view and the shard count, the
table reads the marks of the shards holding the requested entities in the same MGET as
their records (one atomic snapshot, no extra round trip) and refuses the read when one
is missing: 503 naming the shards, never a wrong NOT_FOUND. The dataflow refills Redis
from its shards and sets the marks again; reads resume by themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from engine.state.closing import ClosesOnExit
from engine.state.exceptions import OnlineTableUnavailable
from engine.state.keys import shards_of
from engine.state.offsets import OffsetRecord
from engine.state.protocols import OnlineTableHealth
from engine.state.records import (
    Freshness,
    freshest,
    parse_redis_offsets_field,
    redis_cold_key,
    redis_copied_key,
    redis_key,
    redis_meta_key,
    redis_offsets_key,
)
from engine.state.redis_client import (
    REDIS_ERRORS,
    close_client,
    describe_redis_error,
    open_checked_client,
    redacted_url,
)


class RedisOnlineTable(ClosesOnExit):
    """Batch reads with one MGET per call (:meth:`read_views`: one for several views).

    A Redis outage raises :class:`OnlineTableUnavailable` (serving answers 503);
    the connection pool reconnects on its own once Redis is back, so the same object
    keeps working without being recreated.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 0.5,
        max_connections: int = 32,
        view_topics: Mapping[bytes, str] | None = None,
        n_shards: int = 0,
    ) -> None:
        """``view_topics`` (view fingerprint -> its source topic) and ``n_shards`` turn on
        the copy check (module docstring); without them every read is trusted."""
        self.url = url
        self._client = open_checked_client(url, socket_timeout_s=socket_timeout_s, max_connections=max_connections)
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self.error_count = 0
        self._view_topics = dict(view_topics or {})
        self._n_shards = n_shards
        self._mark_keys = {
            topic: [redis_copied_key(topic, shard) for shard in range(n_shards)]
            for topic in sorted(set(self._view_topics.values()))
        }

    def _marks_of(self, requests: Iterable[tuple[bytes, Sequence[bytes]]]) -> list[tuple[str, int]]:
        """The (topic, shard) copy marks a read of these entities depends on: the shards
        holding them (routing of engine/state/keys.py), each once."""
        if not self._view_topics or self._n_shards <= 0:
            return []
        marks: dict[tuple[str, int], None] = {}
        for fingerprint, entity_keys in requests:
            topic = self._view_topics.get(fingerprint)
            if topic is not None and entity_keys:
                for shard in shards_of(fingerprint, entity_keys, self._n_shards):
                    marks[(topic, shard)] = None
        return list(marks)

    def _mget_checked(self, keys: list[bytes], marks: Sequence[tuple[str, int]]) -> list[bytes | None]:
        """MGET of ``keys`` with the copy ``marks`` in the same command; refuses (503)
        when a mark is missing."""
        mark_keys = [self._mark_keys[topic][shard] for topic, shard in marks]
        try:
            values: list[bytes | None] = self._client.mget(keys + mark_keys) if mark_keys else self._client.mget(keys)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self._last_ok = time.monotonic()
        if not mark_keys:
            return values
        found = values[len(keys) :]
        if None in found:
            missing = _missing(marks, found)
            topic = next(iter(missing))
            raise OnlineTableUnavailable(
                self._describe_missing(missing),
                hint=f"run `streamfeat run` for topic {topic!r} (it copies its shards to Redis before it reads "
                "Kafka); reads resume by themselves once the copy is whole",
            )
        return values[: len(keys)]

    def missing_copies(self) -> dict[str, tuple[int, ...]]:
        """Per topic of the views read, the shards whose copy mark this Redis lacks."""
        marks = [(topic, shard) for topic, keys in self._mark_keys.items() for shard in range(len(keys))]
        if not marks:
            return {}
        try:
            found: list[bytes | None] = self._client.mget([self._mark_keys[t][s] for t, s in marks])
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return _missing(marks, found)

    def _describe_missing(self, missing: Mapping[str, tuple[int, ...]]) -> str:
        return "; ".join(
            f"redis at {redacted_url(self.url)} lacks the online copy of shard{'s' if len(shards) > 1 else ''} "
            f"{', '.join(map(str, shards))} of topic {topic!r} (Redis lost its data, or no dataflow has written "
            "it yet): its entities would be answered NOT_FOUND"
            for topic, shards in missing.items()
        )

    def _unavailable(self, exc: BaseException) -> OnlineTableUnavailable:
        reason = describe_redis_error(self.url, exc)
        self._last_error = reason
        self.error_count += 1
        return OnlineTableUnavailable(
            reason,
            hint="check that redis-server is running and reachable; reads resume by themselves",
        )

    def read(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[bytes | None]:
        return self.read_views([(fingerprint, entity_keys)])[0]

    def read_views(self, requests: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[list[bytes | None]]:
        """Every view's keys in one MGET: one round trip per request, not one per view."""
        keys = [redis_key(fingerprint, key) for fingerprint, entity_keys in requests for key in entity_keys]
        if not keys:
            return [[] for _ in requests]
        values = self._mget_checked(keys, self._marks_of(requests))
        out: list[list[bytes | None]] = []
        start = 0
        for _, entity_keys in requests:
            out.append(values[start : start + len(entity_keys)])
            start += len(entity_keys)
        return out

    def read_parts(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        """Each entity's tile and cold tile records in one MGET (atomic in Redis; the
        writer sets a cold part and its tile record in one MULTI)."""
        keys = [k for key in entity_keys for k in (redis_key(fingerprint, key), redis_cold_key(fingerprint, key))]
        if not keys:
            return []
        values = self._mget_checked(keys, self._marks_of([(fingerprint, entity_keys)]))
        return list(zip(values[::2], values[1::2], strict=True))

    def read_meta(self, fingerprint: bytes) -> Freshness:
        """The view's freshness: the freshest of its shards' records (one HVALS)."""
        key = redis_meta_key(fingerprint)
        try:
            values: list[bytes] = self._client.hvals(key)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self._last_ok = time.monotonic()
        return freshest(values)

    def read_metas(self, fingerprints: Sequence[bytes]) -> list[Freshness]:
        """Every view's freshness in one round trip (an ``as_of`` request reads each view's
        after its records: one HVALS each cost more than the rest of the request)."""
        pipe = self._client.pipeline(transaction=False)
        for fingerprint in fingerprints:
            pipe.hvals(redis_meta_key(fingerprint))
        try:
            found: list[list[bytes]] = pipe.execute()
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        finally:
            pipe.reset()
        self._last_ok = time.monotonic()
        return [freshest(values) for values in found]

    def read_offsets(self, topic: str) -> list[dict[int, OffsetRecord]] | None:
        """The offset records of ``topic`` of every shard that wrote some (one HGETALL);
        None when no shard did: a copy written before these records existed cannot tell
        how far the log is published."""
        try:
            raw: dict[bytes, bytes] = self._client.hgetall(redis_offsets_key(topic))
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self._last_ok = time.monotonic()
        if not raw:
            return None
        shards: dict[int, dict[int, OffsetRecord]] = {}
        for field, value in raw.items():
            shard, partition = parse_redis_offsets_field(field)
            shards.setdefault(shard, {})[partition] = OffsetRecord.unpack(value)
        return [shards[s] for s in sorted(shards)]

    def reopen_if_behind(self, topic: str) -> bool:
        """Redis reads are always current: nothing is ever behind."""
        return False

    def refresh(self) -> None:
        """Redis reads are always current; this only checks the server answers."""
        try:
            self._client.ping()
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self._last_ok = time.monotonic()

    def health(self) -> OnlineTableHealth:
        try:
            self.refresh()
            missing = self.missing_copies()
        except OnlineTableUnavailable as exc:
            return OnlineTableHealth(False, exc.reason, self._age(), self._last_error)
        if missing:
            # Redis answers: an earlier connection error is not why it is not ready.
            reasons = self._describe_missing(missing) + "; `streamfeat run` refills the copy, then reads resume"
            return OnlineTableHealth(False, reasons, self._age(), None)
        return OnlineTableHealth(True, f"redis at {redacted_url(self.url)} answers", 0.0, self._last_error)

    def _age(self) -> float | None:
        return None if self._last_ok is None else time.monotonic() - self._last_ok

    def close(self) -> None:
        close_client(self._client)


def _missing(marks: Sequence[tuple[str, int]], found: Sequence[bytes | None]) -> dict[str, tuple[int, ...]]:
    """Per topic, the shards of ``marks`` (``(topic, shard)``) whose value in ``found`` is absent."""
    missing: dict[str, list[int]] = {}
    for (topic, shard), mark in zip(marks, found, strict=True):
        if mark is None:
            missing.setdefault(topic, []).append(shard)
    return {topic: tuple(sorted(shards)) for topic, shards in missing.items()}

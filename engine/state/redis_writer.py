"""Writes packed tile records to Redis, the optional secondary online copy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.state.closing import ClosesOnExit
from engine.state.exceptions import OnlineWriteError, StateTypeError, StateValueError
from engine.state.offsets import OffsetRecord
from engine.state.protocols import ColdWrites
from engine.state.records import (
    parse_redis_offsets_field,
    redis_cold_key,
    redis_copied_key,
    redis_key,
    redis_meta_field,
    redis_meta_key,
    redis_offsets_field,
    redis_offsets_key,
)
from engine.state.redis_client import (
    REDIS_ERRORS,
    close_client,
    describe_redis_error,
    open_checked_client,
)
from engine.wording import counted


class RedisOnlineWriter(ClosesOnExit):
    """One pipelined round trip per batch: SET with PX expiry, or DEL for None."""

    def __init__(self, url: str, *, socket_timeout_s: float = 2.0, max_connections: int = 8) -> None:
        self.url = url
        self._client = open_checked_client(url, socket_timeout_s=socket_timeout_s, max_connections=max_connections)

    def write(
        self,
        items: Sequence[tuple[bytes, bytes, bytes | None]],
        ttl_ms: int | Mapping[bytes, int | None] | None,
        cold: ColdWrites | None = None,
    ) -> None:
        """``items`` and the ``cold`` parts (``(fingerprint, entity_key, value or None to
        delete)``), and a new expiry for the cold parts that stay; with cold parts, in
        one MULTI, so a reader's MGET of an entity's two records never pairs two versions.
        ``ttl_ms``: the records' expiry (None: none), or one per view fingerprint."""
        expiry = dict(ttl_ms) if isinstance(ttl_ms, Mapping) else None
        single = None if isinstance(ttl_ms, Mapping) else ttl_ms
        for ttl in expiry.values() if expiry is not None else (single,):
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
                raise StateValueError(
                    f"RedisOnlineWriter.write: field 'ttl_ms': expected a positive int or None, got {ttl!r}",
                    hint="pass the view's retention_ms",
                )

        def ttl_of(fingerprint: bytes) -> int | None:
            return expiry.get(fingerprint) if expiry is not None else single

        if not items:
            return
        # No MULTI without cold parts: each item is independent and a transaction would
        # only add latency.
        pipe = self._client.pipeline(transaction=cold is not None)
        keyed = [(redis_key(f, k), f, k, v) for f, k, v in items]
        if cold is not None:
            for fingerprint, entity_key in cold.kept:
                if (kept_ttl := ttl_of(fingerprint)) is not None:
                    pipe.pexpire(redis_cold_key(fingerprint, entity_key), kept_ttl)
            keyed += [(redis_cold_key(f, k), f, k, v) for f, k, v in cold.parts]
        for key, fingerprint, entity_key, value in keyed:
            if value is None:
                pipe.delete(key)
            elif isinstance(value, bytes):
                pipe.set(key, value, px=ttl_of(fingerprint))
            else:
                raise StateTypeError(
                    f"value of entity {entity_key!r}: expected bytes or None, got {type(value).__name__}"
                )
        try:
            # raise_on_error (the default) raises the first failed command's error.
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"writing {counted(len(items), 'record')}: {describe_redis_error(self.url, exc)}",
                hint="the batch may be partly written; writing it again is safe (values are whole records)",
            ) from exc
        finally:
            pipe.reset()

    def write_meta(self, items: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Write ``(fingerprint, shard, freshness record)`` items, without expiry.

        Each shard's record is one field of the view's hash (engine/state/records.py).
        """
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for fingerprint, shard, value in items:
            pipe.hset(redis_meta_key(fingerprint), redis_meta_field(shard), value)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"writing view metadata: {describe_redis_error(self.url, exc)}",
                hint="writing it again is safe (records are whole values)",
            ) from exc
        finally:
            pipe.reset()

    def write_offsets(self, topic: str, shard: int, records: Mapping[int, OffsetRecord]) -> None:
        """Write one shard's offset records of ``topic``, without expiry: serving reads them
        to know how far the Parquet log is published (serving/history.py)."""
        if not records:
            return
        mapping: dict[str | bytes, bytes | float | int | str] = {
            redis_offsets_field(shard, p): r.pack() for p, r in records.items()
        }
        try:
            self._client.hset(redis_offsets_key(topic), mapping=mapping)
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"writing offset records of topic {topic!r}: {describe_redis_error(self.url, exc)}",
                hint="writing them again is safe (records are whole values)",
            ) from exc

    def read_offsets(self, topic: str, shard: int) -> dict[int, OffsetRecord]:
        """The offset records of ``topic`` that shard ``shard`` wrote to the copy (empty
        when it wrote none: a new copy, or a Redis that lost its data)."""
        try:
            raw: dict[bytes, bytes] = self._client.hgetall(redis_offsets_key(topic))
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"reading offset records of topic {topic!r}: {describe_redis_error(self.url, exc)}",
                hint="is Redis running? The dataflow checks its copy when it opens a shard",
            ) from exc
        out: dict[int, OffsetRecord] = {}
        for field, value in raw.items():
            of_shard, partition = parse_redis_offsets_field(field)
            if of_shard == shard:
                out[partition] = OffsetRecord.unpack(value)
        return out

    def is_copied(self, topic: str, shard: int) -> bool:
        """Whether this Redis still holds the mark :meth:`mark_copied` set."""
        try:
            return bool(self._client.exists(redis_copied_key(topic, shard)))
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"reading the copy mark of shard {shard}: {describe_redis_error(self.url, exc)}",
                hint="is Redis running?",
            ) from exc

    def mark_copied(self, topic: str, shard: int) -> None:
        """Record that this Redis holds shard ``shard``'s whole copy (no expiry)."""
        try:
            self._client.set(redis_copied_key(topic, shard), b"1")
        except REDIS_ERRORS as exc:
            raise OnlineWriteError(
                f"writing the copy mark of shard {shard}: {describe_redis_error(self.url, exc)}",
                hint="writing it again is safe",
            ) from exc

    def close(self) -> None:
        close_client(self._client)

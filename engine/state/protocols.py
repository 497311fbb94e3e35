"""Small protocols between the state layer and its users (dataflow sink, serving).

Write side:   Store -> StorePartition (one shard) -> Transaction (one WriteBatch)
Read side:    OnlineTable (RocksDB secondaries or Redis)
Copy side:    OnlineWriter (Redis), fed by the sink after each committed batch
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.state.offsets import OffsetRecord
from engine.state.records import Freshness


@runtime_checkable
class Transaction(Protocol):
    """Pending writes of one batch of one shard, applied atomically by ``commit``."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Current values, reading through this transaction's own pending writes."""
        ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """:meth:`put` of ``keys[i] -> values[i]`` for every i."""
        ...

    def delete(self, key: bytes) -> None: ...

    def set_offset(self, topic: str, partition: int, record: OffsetRecord) -> None: ...

    def commit(self) -> None:
        """Write everything as one WriteBatch; afterwards the transaction is closed."""
        ...

    def abort(self) -> None:
        """Drop every pending write; afterwards the transaction is closed."""
        ...


@runtime_checkable
class StorePartition(Protocol):
    """One shard: one RocksDB instance."""

    @property
    def shard(self) -> int: ...

    def begin(self) -> Transaction: ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def read_offsets(self, topic: str) -> dict[int, OffsetRecord]: ...

    def scan_prefix(self, prefix: bytes, from_key: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of every committed key starting with ``prefix``, in key
        order, from ``from_key`` on when given."""
        ...

    def flush_wal(self, sync: bool = True) -> None:
        """Make every committed batch durable (on disk when ``sync``)."""
        ...


@runtime_checkable
class Store(Protocol):
    """All shards of one state directory."""

    @property
    def n_shards(self) -> int: ...

    def partition(self, shard: int) -> StorePartition: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OnlineTableHealth:
    """What an online table reports to readiness checks and metrics.

    ``ready``: reads can be answered; ``detail``: human-readable state;
    ``last_refresh_age_s``: seconds since the last successful catch-up/ping
    (None before the first); ``last_error``: the most recent failure, if any.
    """

    ready: bool
    detail: str
    last_refresh_age_s: float | None = None
    last_error: str | None = None


@runtime_checkable
class OnlineTable(Protocol):
    """Read side of the online table: packed tile records by (view, entity)."""

    def read(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of many entities of one view, in order; None where absent.

        Raises ``OnlineTableUnavailable`` when the table cannot answer right now.
        """
        ...

    def read_views(self, requests: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[list[bytes | None]]:
        """:meth:`read` of several ``(fingerprint, entity keys)`` at once, in order.

        A table behind a network round trip answers all of them in one.
        """
        ...

    def read_parts(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        """``(tile record, cold tile record)`` of many entities of one view, each pair read
        at one instant (engine/state/records.py), None where absent: what a reader asks
        for an entity whose tile record says it has a cold part.

        Raises ``OnlineTableUnavailable`` when the table cannot answer right now.
        """
        ...

    def read_meta(self, fingerprint: bytes) -> Freshness:
        """The view's freshness: the freshest of the records every shard's writer keeps.

        ``UNKNOWN_FRESHNESS`` before the first record. Raises ``OnlineTableUnavailable``
        when the table cannot answer right now.
        """
        ...

    def read_metas(self, fingerprints: Sequence[bytes]) -> list[Freshness]:
        """:meth:`read_meta` of each view, read together (Redis: one round trip)."""
        ...

    def read_offsets(self, topic: str) -> list[dict[int, OffsetRecord]] | None:
        """Each shard's offset records of ``topic`` (how far its tiles and its Parquet log
        got), or None when the table has none to tell. Raises ``OnlineTableUnavailable``."""
        ...

    def refresh(self) -> None:
        """Catch up with the writer now (no-op where reads are always current)."""
        ...

    def reopen_if_behind(self, topic: str) -> bool:
        """Make sure the offset records of ``topic`` read next are what the writer
        recorded (re-opening what shows less); True when something was behind. Called
        before a refusal that rests on them; False where reads are always current."""
        ...

    def health(self) -> OnlineTableHealth: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ColdWrites:
    """The cold tile records one batch changes, for the online copy (engine/state/records.py)."""

    parts: Sequence[tuple[bytes, bytes, bytes | None]]  # (fingerprint, entity key, value or None: deleted)
    kept: Sequence[tuple[bytes, bytes]]  # (fingerprint, entity key): unchanged, their expiry renewed


@runtime_checkable
class OnlineWriter(Protocol):
    """Write side of a secondary online copy (Redis)."""

    def write(
        self,
        items: Sequence[tuple[bytes, bytes, bytes | None]],
        ttl_ms: int | Mapping[bytes, int | None] | None,
        cold: ColdWrites | None = None,
    ) -> None:
        """Write ``(fingerprint, entity_key, value or None to delete)`` items at once, with
        the ``cold`` tile records beside them; ``ttl_ms`` is their expiry (None: none), or
        one per view fingerprint (each view's records expire after its own retention).

        Raises ``OnlineWriteError`` when the batch was not confirmed.
        """
        ...

    def write_meta(self, items: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Write ``(fingerprint, shard, freshness record)`` items at once.

        Raises ``OnlineWriteError`` when the batch was not confirmed.
        """
        ...

    def write_offsets(self, topic: str, shard: int, records: Mapping[int, OffsetRecord]) -> None:
        """Write one shard's offset records (partition -> record) of ``topic``.

        Raises ``OnlineWriteError`` when they were not confirmed.
        """
        ...

    def read_offsets(self, topic: str, shard: int) -> dict[int, OffsetRecord]:
        """The offset records of ``topic`` one shard wrote to the copy (empty: none)."""
        ...

    def is_copied(self, topic: str, shard: int) -> bool:
        """Whether the copy still holds the mark of one shard's whole copy."""
        ...

    def mark_copied(self, topic: str, shard: int) -> None:
        """Mark the copy as holding one shard's whole copy."""
        ...

    def close(self) -> None: ...

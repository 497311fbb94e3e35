"""Errors raised by the state layer (RocksDB shards, offsets, online tables)."""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class StateError(StreamfeatError):
    """Base class of every error the state layer raises on purpose."""


class StateValueError(StateError, ValueError):
    """An argument has the right type but a value the state layer cannot accept."""


class StateTypeError(StateError, TypeError):
    """An argument has the wrong type."""


class ShardCountMismatchError(StateError):
    """A state directory was created with a different number of shards."""

    exit_code = 2


class RedisEvictionError(StateValueError):
    """The Redis server may evict keys (a ``maxmemory`` limit with a policy other than
    ``noeviction``): an evicted tile record would be served as an entity without events."""

    exit_code = 2


class StoreClosedError(StateError):
    """A store, partition or online table was used after it was closed."""


class TransactionClosedError(StateError):
    """A transaction was used after commit() or abort()."""


class CorruptRecordError(StateError):
    """A stored record cannot be decoded (wrong length or layout)."""


class OnlineTableUnavailable(StateError):
    """The online table cannot answer right now; serving maps this to HTTP 503.

    ``reason`` is a short human-readable cause (for example "redis connection refused"
    or "shard 3 not created yet"); the table recovers by itself once the cause is gone.
    """

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"online table unavailable: {reason}", hint=hint)
        self.reason = reason


class OnlineWriteError(StateError):
    """Writing to a secondary online copy (Redis) failed; the batch was not confirmed."""


class ChangelogError(StateError):
    """The shard changelog could not be written or read: the batch is not committed."""


class ChangelogUnavailable(ChangelogError):
    """The broker did not answer a changelog read or write: worth retrying once it is back
    (a restore retries with a bounded backoff, engine/state/restore_retry.py)."""

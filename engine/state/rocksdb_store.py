"""RocksDB shard store: one raw-mode rocksdict per shard, one WriteBatch per batch.

A shard path may only have one read-write opener per process (RocksDB's LOCK file is
also held against the same process), so open handles are shared through a
process-wide registry with reference counts: two ``RocksDBStore`` objects over the
same directory (say, two sink partitions built in one worker) share the handles.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import rocksdict

from engine.clock import wall_clock_ms
from engine.state.changelog import RestoreStats, ShardChangelog, ShardRestorer
from engine.state.closing import ClosesOnExit
from engine.state.exceptions import (
    StateError,
    StateTypeError,
    StateValueError,
    StoreClosedError,
    TransactionClosedError,
)
from engine.state.layout import (
    check_meta_shards,
    iter_prefix,
    multi_get,
    shard_path,
    write_meta,
    writer_options,
)
from engine.state.offsets import OffsetRecord, scan_offsets
from engine.state.progress import ShardOwner
from engine.state.records import (
    CHANGELOG_POSITION_KEY,
    cold_view_prefix,
    encode_changelog_position,
    offset_key,
    view_prefix,
)
from engine.state.restore_retry import with_restore_retries


def _owner(restoring: bool, retries: int, last_error: str) -> ShardOwner:
    """This process as the owner of a shard it opens (engine/state/progress.py)."""
    now_ms = wall_clock_ms()
    return ShardOwner(f"{socket.gethostname()} pid {os.getpid()}", restoring, now_ms, retries, last_error)


@dataclass
class _SharedHandle:
    db: rocksdict.Rdict
    refs: int


_HANDLES: dict[str, _SharedHandle] = {}
_HANDLES_LOCK = threading.Lock()


def _acquire(path: Path) -> rocksdict.Rdict:
    key = str(path.resolve())
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            try:
                db = rocksdict.Rdict(key, writer_options())
            except Exception as exc:  # rocksdict raises plain Exception for IO errors
                raise StateError(
                    f"shard {path}: cannot open for writing: {exc}",
                    hint="another process is probably writing this state directory; "
                    "only one ingest process may own it (readers use secondary instances)",
                ) from exc
            handle = _HANDLES[key] = _SharedHandle(db, 0)
        handle.refs += 1
        return handle.db


def _release(path: Path) -> None:
    key = str(path.resolve())
    with _HANDLES_LOCK:
        handle = _HANDLES[key]
        handle.refs -= 1
        if handle.refs == 0:
            del _HANDLES[key]
            handle.db.close()


def _check_key(key: object, what: str) -> None:
    if not isinstance(key, bytes):
        raise StateTypeError(f"{what}: expected bytes, got {type(key).__name__}")


@dataclass(frozen=True)
class ChangelogTarget:
    """Where a store's shards keep their changelog (engine/state/changelog.py)."""

    bootstrap: str
    source_topic: str


class RocksDBTransaction:
    """Pending writes of one shard, committed as one WriteBatch."""

    __slots__ = ("_closed", "_partition", "_pending")

    def __init__(self, partition: RocksDBStorePartition) -> None:
        self._partition = partition
        # Last write per key wins, as it would inside a WriteBatch.
        self._pending: dict[bytes, bytes | None] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransactionClosedError(
                f"shard {self._partition.shard}: transaction already committed or aborted",
                hint="call partition.begin() for the next batch",
            )

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_open()
        pending = self._pending
        # Views' records never share keys (each view has its own prefix), so the later views
        # of an apply usually find none of theirs pending: one C-level set check, then the
        # plain multi-get, instead of a Python membership test per key.
        if not pending or pending.keys().isdisjoint(keys):
            return self._partition.get_many(keys)
        result: list[bytes | None] = [None] * len(keys)
        missing_at: list[int] = []
        for index, key in enumerate(keys):
            if key in pending:
                result[index] = pending[key]
            else:
                missing_at.append(index)
        if missing_at:
            stored = self._partition.get_many([keys[i] for i in missing_at])
            for index, value in zip(missing_at, stored, strict=True):
                result[index] = value
        return result

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        _check_key(key, "transaction key")
        _check_key(value, f"value of key {key!r}")
        self._pending[key] = value

    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """``put`` of every ``(keys[i], values[i])``: one type check over all, one dict update."""
        self._check_open()
        if len(keys) != len(values):
            raise StateValueError(
                f"shard {self._partition.shard}: put_many: expected as many values as keys, "
                f"got {len(values)} values for {len(keys)} keys",
                hint="pass aligned key and value lists",
            )
        if not all(type(k) is bytes for k in keys) or not all(type(v) is bytes for v in values):
            for key, value in zip(keys, values, strict=True):
                _check_key(key, "transaction key")
                _check_key(value, f"value of key {key!r}")
        self._pending.update(zip(keys, values, strict=True))

    def delete(self, key: bytes) -> None:
        self._check_open()
        _check_key(key, "transaction key")
        self._pending[key] = None

    def set_offset(self, topic: str, partition: int, record: OffsetRecord) -> None:
        self._check_open()
        if not isinstance(record, OffsetRecord):
            raise StateTypeError(
                f"offset of {topic!r} partition {partition}: expected OffsetRecord, got {type(record).__name__}"
            )
        self._pending[offset_key(topic, partition)] = record.pack()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def commit(self) -> None:
        self._check_open()
        self._closed = True
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in self._pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        changes, self._pending = self._pending, {}
        if batch.is_empty():
            return
        changelog = self._partition.changelog
        if changelog is not None:  # durable copy first: engine/state/changelog.py
            batch.put(CHANGELOG_POSITION_KEY, encode_changelog_position(changelog.publish(changes)))
        self._partition.write(batch)

    def abort(self) -> None:
        self._check_open()
        self._closed = True
        self._pending = {}


class RocksDBStorePartition:
    """One shard of a :class:`RocksDBStore`."""

    def __init__(self, store: RocksDBStore, shard: int, path: Path, db: rocksdict.Rdict) -> None:
        self._store = store
        self._shard = shard
        self.path = path
        self._db = db
        self.changelog: ShardChangelog | None = None

    @property
    def shard(self) -> int:
        return self._shard

    def _live_db(self) -> rocksdict.Rdict:
        if self._store.closed:
            raise StoreClosedError(f"shard {self._shard}: the store was closed")
        return self._db

    def begin(self) -> RocksDBTransaction:
        self._live_db()
        return RocksDBTransaction(self)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return multi_get(self._live_db(), list(keys))

    def write(self, batch: rocksdict.WriteBatch) -> None:
        """Apply a prepared WriteBatch atomically (used by RocksDBTransaction)."""
        try:
            self._live_db().write(batch)
        except StoreClosedError:
            raise
        except Exception as exc:
            raise StateError(
                f"shard {self._shard}: WriteBatch failed, nothing of it was applied: {exc}",
                hint=f"check free disk space and permissions of {self.path}",
            ) from exc

    def read_offsets(self, topic: str) -> dict[int, OffsetRecord]:
        return scan_offsets(self._live_db(), topic)

    def scan_prefix(self, prefix: bytes, from_key: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of every key starting with ``prefix``, in key order (from
        ``from_key`` on, when given: a cursor for incremental scans)."""
        return iter_prefix(self._live_db(), prefix, from_key)

    def iter_view(self, fingerprint: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(entity_key, value)`` of every stored entity of one view, in key order."""
        prefix = view_prefix(fingerprint)
        cut = len(prefix)
        for key, value in iter_prefix(self._live_db(), prefix):
            yield key[cut:], value

    def view_size_bytes(self, fingerprint: bytes) -> int:
        """Bytes of keys and values of one view in this shard, its cold tile records
        included (exact, by prefix scans)."""
        prefix_len = len(view_prefix(fingerprint))
        tiles = sum(prefix_len + len(k) + len(v) for k, v in self.iter_view(fingerprint))
        return tiles + sum(len(k) + len(v) for k, v in iter_prefix(self._live_db(), cold_view_prefix(fingerprint)))

    def size_bytes(self) -> int:
        """Approximate on-disk plus in-memory size of this shard."""
        db = self._live_db()
        total = 0
        for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"):
            value = db.property_int_value(prop)
            total += int(value or 0)
        return total

    def flush_wal(self, sync: bool = True) -> None:
        """Push the write-ahead log to the OS (and to disk when ``sync``)."""
        self._live_db().flush_wal(sync)

    def catch_up(self, restorer: ShardRestorer) -> RestoreStats:
        """Bring this shard up to its changelog (engine/state/changelog.py)."""
        return restorer.catch_up(self._live_db())


def _restorer(opened: RocksDBStorePartition, target: ChangelogTarget) -> Callable[[int, str], ShardChangelog]:
    """One attempt at taking over a shard: fence a previous owner first, then restore
    (nothing it still writes lands), then say so; the shard's changelog writer."""
    shard = opened.shard

    def attempt(retries: int, last_error: str) -> ShardChangelog:
        changelog = ShardChangelog(target.bootstrap, target.source_topic, shard)
        try:
            changelog.announce(_owner(True, retries, last_error))
            opened.catch_up(ShardRestorer(target.bootstrap, target.source_topic, shard))
            changelog.announce(_owner(False, retries, last_error))
        except BaseException:
            with contextlib.suppress(Exception):  # the broker may be away: keep the first error
                changelog.close()
            raise
        return changelog

    return attempt


class RocksDBStore(ClosesOnExit):
    """All shards of a state directory, opened read-write.

    Creates ``<state_dir>/shard-NNN`` and ``meta.json`` on first use; refuses to open
    a directory created with another shard count.
    """

    def __init__(self, state_dir: str | Path, n_shards: int, changelog: ChangelogTarget | None = None) -> None:
        if isinstance(n_shards, bool) or not isinstance(n_shards, int):
            raise StateTypeError(f"RocksDBStore: field 'n_shards': expected int, got {n_shards!r}")
        if n_shards < 1:
            raise StateValueError(f"RocksDBStore: field 'n_shards': expected at least 1, got {n_shards}")
        self.state_dir = Path(state_dir)
        self._n_shards = n_shards
        self.closed = False
        self._changelog = changelog
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not check_meta_shards(self.state_dir, n_shards):
            write_meta(self.state_dir, n_shards)
        # Shards open on first use: in a multi-process deployment each process
        # opens only the shards its workers own (rocksdict allows one writer per path).
        self._partitions: dict[int, RocksDBStorePartition] = {}
        for shard in range(n_shards):
            path = shard_path(self.state_dir, shard)
            if not path.exists():  # create it now, so readers see every shard
                _acquire(path)
                _release(path)

    @property
    def n_shards(self) -> int:
        return self._n_shards

    def partition(self, shard: int) -> RocksDBStorePartition:
        if self.closed:
            raise StoreClosedError(f"state directory {self.state_dir}: the store was closed")
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < self._n_shards:
            raise StateValueError(
                f"state directory {self.state_dir}: shard: expected 0..{self._n_shards - 1}, got {shard!r}"
            )
        opened = self._partitions.get(shard)
        if opened is None:
            path = shard_path(self.state_dir, shard)
            opened = RocksDBStorePartition(self, shard, path, _acquire(path))
            if self._changelog is not None:
                opened.changelog = with_restore_retries(shard, _restorer(opened, self._changelog))
            self._partitions[shard] = opened
        return opened

    @property
    def partitions(self) -> tuple[RocksDBStorePartition, ...]:
        return tuple(self.partition(shard) for shard in range(self._n_shards))

    def flush_wal(self, sync: bool = True) -> None:
        for part in self._partitions.values():
            part.flush_wal(sync)

    def state_size_bytes(self) -> int:
        return sum(part.size_bytes() for part in self.partitions)

    def view_size_bytes(self, fingerprint: bytes) -> int:
        return sum(part.view_size_bytes(fingerprint) for part in self.partitions)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for part in self._partitions.values():
            if part.changelog is not None:
                part.changelog.close()
            _release(part.path)

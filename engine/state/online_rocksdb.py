"""Online table over the writer's own shards, read through RocksDB secondary instances.

A secondary instance opens the primary's files without its lock and sees new writes
only after ``try_catch_up_with_primary()``; a background thread calls it every
``catch_up_interval_s`` so serving lags ingest by at most about that much.

A catch-up costs 0.5-3 ms per shard even when nothing changed, and rocksdict holds the
GIL for all of it, so every request waits while it runs. With a writer running, the
catch-up work follows the data written rather than the number of rounds (measured: 3-4%
of a core at intervals of 10, 25 and 100 ms), so the default interval is short (25 ms). Shards whose write-ahead log
and manifest are unchanged since their last catch-up are skipped (a ``stat`` of the
directory and of the newest WAL; a listing when the directory changed): the writer
appends every commit to its WAL before anything else, so an unchanged WAL means
nothing new to see.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import rocksdict

from engine.state.closing import ClosesOnExit
from engine.state.exceptions import (
    OnlineTableUnavailable,
    StateTypeError,
    StateValueError,
    StoreClosedError,
)
from engine.state.keys import shard_hasher, shards_of
from engine.state.layout import (
    check_meta_shards,
    multi_get,
    open_secondary,
    shard_exists,
    shard_path,
)
from engine.state.offsets import OffsetRecord, scan_offsets
from engine.state.protocols import OnlineTableHealth
from engine.state.records import Freshness, cold_view_prefix, freshest, meta_key, view_prefix
from engine.state.secondary import secondary_shards

log = logging.getLogger("streamfeat.state.online")
_INSTANCE_IDS = itertools.count()
# Views whose read keys are remembered (_view_keys): far more than a repo defines; a
# caller passing ever new fingerprints gets them built per read instead of growing memory.
_MAX_VIEWS_REMEMBERED = 4096


@dataclass(frozen=True)
class _ShardFiles:
    """What tells whether a shard's primary wrote anything: its directory's mtime (files
    created, renamed or removed) and the (name, size) of its write-ahead logs,
    manifests and CURRENT."""

    dir_mtime_ns: int
    files: tuple[tuple[str, int], ...]

    @property
    def newest_log(self) -> str | None:
        logs = [name for name, _ in self.files if name.endswith(".log")]
        return max(logs, key=lambda name: (len(name), name)) if logs else None  # highest number


# A directory mtime this recent may hide a change made within the same clock tick
# (mtimes are as coarse as the kernel's tick): list the directory again then.
_SETTLED_NS = 1_000_000_000


def _shard_files(shard_dir: Path, previous: _ShardFiles | None) -> _ShardFiles | None:
    """The shard's files now; None if unreadable.

    When the directory has not changed (and not just now), only its newest write-ahead
    log can have grown, the way every commit reaches the primary first: two ``stat``
    calls instead of a listing. Each call here releases and retakes the GIL, and the
    listing every 100 ms cost serving ~5% of its throughput with nothing written.
    """
    try:
        dir_mtime = os.stat(shard_dir).st_mtime_ns
        newest = previous.newest_log if previous is not None else None
        if (
            previous is not None
            and newest is not None
            and dir_mtime == previous.dir_mtime_ns
            and time.time_ns() - dir_mtime > _SETTLED_NS
        ):
            size = os.stat(shard_dir / newest).st_size
            files = tuple((name, size if name == newest else old) for name, old in previous.files)
            return _ShardFiles(dir_mtime, files)
        with os.scandir(shard_dir) as entries:
            listed = tuple(
                sorted(
                    (entry.name, entry.stat().st_size)
                    for entry in entries
                    if entry.name.endswith(".log") or entry.name.startswith("MANIFEST-") or entry.name == "CURRENT"
                )
            )
        return _ShardFiles(dir_mtime, listed)
    except OSError:
        return None


class RocksDBOnlineTable(ClosesOnExit):
    """Reads packed tile records from every shard of ``state_dir`` as a secondary.

    ``secondary_dir`` holds this reader's private RocksDB files (info logs and the
    secondary's manifest copy); each instance uses its own subdirectory so several
    serving processes can share one ``secondary_dir``. Shards the writer has not
    created yet are opened on a later catch-up; until every shard is open the table
    reports not ready and reads raise :class:`OnlineTableUnavailable`.
    """

    def __init__(
        self,
        state_dir: str | Path,
        n_shards: int,
        secondary_dir: str | Path,
        catch_up_interval_s: float = 0.025,
        *,
        background: bool = True,
    ) -> None:
        if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
            raise StateValueError(f"RocksDBOnlineTable: field 'n_shards': expected an int >= 1, got {n_shards!r}")
        if not catch_up_interval_s > 0:
            raise StateValueError(
                f"RocksDBOnlineTable: field 'catch_up_interval_s': expected > 0, got {catch_up_interval_s}"
            )
        self.state_dir = Path(state_dir)
        self.n_shards = n_shards
        self.catch_up_interval_s = catch_up_interval_s
        self._own_dir = Path(secondary_dir) / f"reader-{os.getpid()}-{next(_INSTANCE_IDS)}"
        self._dbs: list[rocksdict.Rdict | None] = [None] * n_shards
        # Per shard: its files at its last successful catch-up.
        self._seen_files: list[_ShardFiles | None] = [None] * n_shards
        # Catch-ups and close take this lock; reads and close take ``_read_lock``:
        # closing a handle while another thread is inside a read or a catch-up would
        # free memory it is using. Reads do not queue behind a catch-up (a RocksDB
        # instance serves reads while it catches up): with one shared lock and 100 ms
        # catch-ups, reads took over 1 ms on most catch-up rounds (up to 17 ms); with
        # separate locks almost none did.
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._last_catch_up: float | None = None
        self._last_error: str | None = None
        self.catch_up_count = 0
        self.error_count = 0
        # What a secondary shows changes only inside a catch-up or a shard's opening:
        # both are counted when they start and when they end, so a value read while the
        # two counts were equal stays what a read would return until the next start.
        self._changes_started = 0
        self._changes_done = 0
        # Per view fingerprint: (changes started when read, freshness read then).
        self._meta_cache: dict[bytes, tuple[int, Freshness]] = {}
        # Per view fingerprint: tile-key prefix, shard hasher, meta key (_view_keys).
        self._views: dict[bytes, tuple[bytes, Callable[[bytes], int], bytes]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._lock:
            self._open_missing()
        if background:
            self._thread = threading.Thread(target=self._run, name=f"catch-up {self.state_dir}", daemon=True)
            self._thread.start()

    # -- opening -------------------------------------------------------------

    def _open_missing(self) -> None:
        """Open every shard that exists now and is not open yet (lock held)."""
        if not check_meta_shards(self.state_dir, self.n_shards):
            return  # the writer has not created the directory yet
        for shard, db in enumerate(self._dbs):
            if db is not None:
                continue
            path = shard_path(self.state_dir, shard)
            if not shard_exists(path):
                continue
            own = self._own_dir / path.name
            own.mkdir(parents=True, exist_ok=True)
            self._changes_started += 1
            try:
                self._dbs[shard] = open_secondary(path, own)
            except Exception as exc:  # rocksdict raises plain Exception for IO errors
                self._note_error(f"shard {shard}: cannot open as secondary: {exc}")
            finally:
                self._changes_done += 1

    def _note_error(self, message: str) -> None:
        self._last_error = message
        self.error_count += 1

    def _missing_shards(self) -> list[int]:
        return [shard for shard, db in enumerate(self._dbs) if db is None]

    # -- catching up ---------------------------------------------------------

    def catch_up(self) -> None:
        """Open shards created since the last call and catch up every open shard."""
        with self._lock:
            self._check_open()
            if any(db is None for db in self._dbs):
                self._open_missing()
        failed = False
        for shard in range(self.n_shards):
            seen = self._seen_files[shard]
            files = _shard_files(shard_path(self.state_dir, shard), seen)
            if files is not None and seen is not None and files.files == seen.files:
                continue
            # One shard at a time under the lock, so reads can run between shards.
            with self._lock:
                self._check_open()
                db = self._dbs[shard]
                if db is None:
                    continue
                self._changes_started += 1
                try:
                    db.try_catch_up_with_primary()
                except Exception as exc:
                    failed = True
                    self._seen_files[shard] = None
                    self._note_error(f"shard {shard}: catch-up failed: {exc}")
                else:
                    # Listed before the catch-up: a commit racing with it makes the
                    # next listing differ, so it is never skipped.
                    self._seen_files[shard] = files
                finally:
                    self._changes_done += 1
        if not failed and not self._missing_shards():
            self._last_catch_up = time.monotonic()
            self.catch_up_count += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"online table over {self.state_dir}: closed")

    def refresh(self) -> None:
        self.catch_up()

    def _run(self) -> None:
        # A fixed schedule: the lag added by the catch-up stays below one interval
        # however long catch-ups take (a late round starts the next one right away).
        due = time.monotonic()
        while True:
            due = max(due + self.catch_up_interval_s, time.monotonic())
            if self._stop.wait(due - time.monotonic()):
                return
            try:
                self.catch_up()
            except StoreClosedError:
                return
            except Exception as exc:  # keep serving stale data rather than die
                self._note_error(f"catch-up thread: {exc}")

    # -- reading -------------------------------------------------------------

    def _view_keys(self, fingerprint: bytes) -> tuple[bytes, Callable[[bytes], int], bytes]:
        """The view's tile-key prefix, shard hasher and meta key, built (and the fingerprint
        checked) once per view instead of on every read."""
        found = self._views.get(fingerprint)
        if found is None:
            found = (view_prefix(fingerprint), shard_hasher(fingerprint), meta_key(fingerprint))
            if len(self._views) < _MAX_VIEWS_REMEMBERED:
                self._views[fingerprint] = found
        return found

    def _locate(self, fingerprint: bytes, key: bytes) -> tuple[int, bytes]:
        """The shard and stored key of a view's one entity key (checked as index 0)."""
        _check_key(0, key)
        prefix, hash_key, _ = self._view_keys(fingerprint)
        return hash_key(key) % self.n_shards, prefix + key

    def read(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[bytes | None]:
        # Plain Python beats numpy for the few to few hundred keys of one request.
        if len(entity_keys) == 1:  # the common request: one get, no grouping
            shard, full_key = self._locate(fingerprint, entity_keys[0])
            with self._read_lock:
                value: bytes | None = self._open_shard(shard).get(full_key)
            return [value]
        prefix = self._view_keys(fingerprint)[0]
        if not _BYTES.issuperset(map(type, entity_keys)):  # one C-speed pass; names the bad one
            for index, key in enumerate(entity_keys):
                _check_key(index, key)
        shards = shards_of(fingerprint, entity_keys, self.n_shards)
        with self._read_lock:
            # One get per key, in request order: as fast as a multi-get per shard for a
            # request's keys (RocksDB's lookups dominate either way), without grouping the
            # keys by shard and scattering the values back. Only the shards read are
            # checked (opened), in the order of their first key, as before.
            gets = {shard: self._open_shard(shard).get for shard in dict.fromkeys(shards)}
            return [gets[shard](prefix + key) for shard, key in zip(shards, entity_keys, strict=True)]

    def read_views(self, requests: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[list[bytes | None]]:
        """One :meth:`read` per view (local reads: nothing to batch across views); when
        every view reads one key (a one-entity request), one get each under one lock."""
        if any(len(keys) != 1 for _, keys in requests):
            return [self.read(fingerprint, keys) for fingerprint, keys in requests]
        full_keys = [self._locate(fingerprint, key) for fingerprint, (key,) in requests]
        with self._read_lock:
            return [[self._open_shard(shard).get(full_key)] for shard, full_key in full_keys]

    def read_parts(self, fingerprint: bytes, entity_keys: Sequence[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        """Each entity's tile and cold tile records from one multi-get (RocksDB reads the
        keys of one multi-get from one snapshot, so a catch-up between them cannot pair a
        hot part with another version's cold part)."""
        cold_prefix = cold_view_prefix(fingerprint)
        out: list[tuple[bytes | None, bytes | None]] = []
        with self._read_lock:
            for key in entity_keys:
                shard, full_key = self._locate(fingerprint, key)
                hot, cold = multi_get(self._open_shard(shard), [full_key, cold_prefix + key])
                out.append((hot, cold))
        return out

    def read_metas(self, fingerprints: Sequence[bytes]) -> list[Freshness]:
        """:meth:`read_meta` of each view (local reads: nothing to gain by batching)."""
        return [self.read_meta(fingerprint) for fingerprint in fingerprints]

    def read_meta(self, fingerprint: bytes) -> Freshness:
        """The view's freshness: the freshest of its records in every shard (shards not
        created yet have none).

        Answered from the last read while no catch-up or shard opening has started since
        it, and none was running when it began: the shards then show exactly what that
        read saw (a secondary changes only when it catches up), so the answer is the
        same as a new read's. Serving reads it after every ``as_of`` request's records;
        eight gets and decodes per view were a quarter of such a request."""
        started = self._changes_started
        cached = self._meta_cache.get(fingerprint)
        done = self._changes_done  # after ``started``: equal means nothing was running
        key = self._view_keys(fingerprint)[2]
        with self._read_lock:
            if self._closed:
                raise StoreClosedError(f"online table over {self.state_dir}: closed")
            if cached is not None and cached[0] == started:
                return cached[1]
            found = freshest(None if db is None else db.get(key) for db in self._dbs)
        if done == started:
            self._meta_cache[fingerprint] = (started, found)
        return found

    def read_offsets(self, topic: str) -> list[dict[int, OffsetRecord]]:
        """Every shard's offset records of ``topic`` (applied and log progress per
        partition; an empty dict where the shard is not created yet)."""
        with self._read_lock:
            if self._closed:
                raise StoreClosedError(f"online table over {self.state_dir}: closed")
            return [{} if db is None else scan_offsets(db, topic) for db in self._dbs]

    def reopen_if_behind(self, topic: str) -> bool:
        """Compare the offset records of ``topic`` this table shows with a fresh open of
        every shard (what a server started now would read) and re-open the shards that
        show less; True when one did. Called before a refusal that rests on them: a
        secondary that missed a write would refuse, for good, what the writer recorded."""
        self.catch_up()
        with secondary_shards(self.state_dir, self.n_shards) as fresh:
            now = [None if part is None else part.read_offsets(topic) for part in fresh]
        held = self.read_offsets(topic)
        behind = [shard for shard, records in enumerate(now) if records is not None and records != held[shard]]
        for shard in behind:
            log.warning(
                "shard %d of %s: its secondary showed offset records of %r the writer replaced (%s, now %s); "
                "re-opened it",
                shard,
                self.state_dir,
                topic,
                held[shard],
                now[shard],
            )
            self._reopen(shard)
        return bool(behind)

    def _reopen(self, shard: int) -> None:
        path = shard_path(self.state_dir, shard)
        with self._lock, self._read_lock:
            self._check_open()
            self._changes_started += 1
            try:
                old, self._dbs[shard] = self._dbs[shard], None
                if old is not None:
                    old.close()
                db = open_secondary(path, self._own_dir / path.name)
                db.try_catch_up_with_primary()
                self._dbs[shard] = db
                self._seen_files[shard] = None
            except Exception as exc:  # rocksdict raises plain Exception for IO errors
                self._note_error(f"shard {shard}: cannot re-open as secondary: {exc}")
            finally:
                self._changes_done += 1

    def _open_shard(self, shard: int) -> rocksdict.Rdict:
        """The shard's secondary, for a read (``_read_lock`` held)."""
        if self._closed:
            raise StoreClosedError(f"online table over {self.state_dir}: closed")
        db = self._dbs[shard]
        if db is None:
            raise OnlineTableUnavailable(
                f"shard {shard} of {self.state_dir} is not created yet",
                hint="start ingestion (it creates the shards); reads work once the next catch-up finds them",
            )
        return db

    def health(self) -> OnlineTableHealth:
        missing = self._missing_shards()
        age = None if self._last_catch_up is None else time.monotonic() - self._last_catch_up
        if self._closed:
            return OnlineTableHealth(False, "closed", age, self._last_error)
        if missing:
            detail = f"{len(missing)} of {self.n_shards} shards not created yet under {self.state_dir}"
            return OnlineTableHealth(False, detail, age, self._last_error)
        detail = f"{self.n_shards} shards open as secondaries, {self.catch_up_count} catch-ups"
        return OnlineTableHealth(True, detail, age, self._last_error)

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            for db in self._dbs:
                if db is not None:
                    db.close()
            self._dbs = [None] * self.n_shards
        shutil.rmtree(self._own_dir, ignore_errors=True)


_BYTES = frozenset({bytes})  # the one type of entity keys that skips the per-key check


def _check_key(index: int, key: object) -> None:
    if not isinstance(key, bytes):
        raise StateTypeError(
            f"entity key #{index}: expected bytes, got {type(key).__name__}",
            hint="build entity keys with engine.state.keys.entity_key(values)",
        )

"""On-disk layout of a state directory and the RocksDB options used to open it.

<state_dir>/meta.json        {"format": 1, "n_shards": N}
<state_dir>/shard-000/ ...   one raw-mode RocksDB per shard
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import rocksdict

from engine.state.exceptions import ShardCountMismatchError, StateError

META_FILE = "meta.json"
LAYOUT_FORMAT = 1
# Memory of a writer process: the memtables of all its shards share one budget that is
# charged to the shared block cache, so RocksDB stays within _BLOCK_CACHE_BYTES whatever
# the shard count (8 shards x 64 MB memtables, two each while flushing, was up to 1 GB).
# The budget lets 8 shards fill their 16 MB memtables: a budget of 64 MB flushed them at
# about 8 MB, and the extra flushes and L0 compactions cost 1.7x the RocksDB threads' CPU
# (1.7 us per event of the example repo with sketches in every view; benchmarks/RESULTS.md,
# session 19). Data blocks keep at least 64 MB of the cache, as before.
_WRITE_BUFFER_BYTES = 16 * 1024 * 1024  # one shard's memtable
_MEMTABLE_BUDGET_BYTES = 128 * 1024 * 1024  # all memtables of the process (0: no budget)
_BLOCK_CACHE_BYTES = 192 * 1024 * 1024


def shard_path(state_dir: Path, shard: int) -> Path:
    return state_dir / f"shard-{shard:03d}"


def shard_exists(path: Path) -> bool:
    """True when ``path`` holds a RocksDB database (its CURRENT file exists)."""
    return (path / "CURRENT").is_file()


def holds_state(state_dir: Path) -> bool:
    """True once a run or backfill has created the state directory's shards (its meta file)."""
    return (state_dir / META_FILE).is_file()


def read_meta_shards(state_dir: Path) -> int | None:
    """The shard count recorded in ``meta.json``, or None when there is no meta file yet."""
    meta = state_dir / META_FILE
    try:
        raw = meta.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        n_shards = data["n_shards"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(
            f"state directory {state_dir}: {META_FILE} is not valid ({exc})",
            hint="restore it from a backup, or delete the state directory and backfill",
        ) from exc
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise StateError(
            f"state directory {state_dir}: {META_FILE} field 'n_shards': expected a positive int, got {n_shards!r}"
        )
    return n_shards


def check_meta_shards(state_dir: Path, n_shards: int) -> bool:
    """Raise if ``meta.json`` records another shard count; return whether it exists."""
    recorded = read_meta_shards(state_dir)
    if recorded is not None and recorded != n_shards:
        raise ShardCountMismatchError(
            f"state directory {state_dir}: field 'n_shards': expected {recorded} "
            f"(recorded in {META_FILE} when it was created), got {n_shards}",
            hint=(
                "the shard count is fixed when state is created because entities are routed "
                "by crc32 % n_shards; use the recorded count, or rescale by writing a new "
                "state directory with the new count (backfill) and switching to it"
            ),
        )
    return recorded is not None


def write_meta(state_dir: Path, n_shards: int) -> None:
    """Record the shard count atomically (write to a temp file, then rename)."""
    tmp = state_dir / f".{META_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"format": LAYOUT_FORMAT, "n_shards": n_shards}) + "\n", encoding="utf-8")
    os.replace(tmp, state_dir / META_FILE)


_SHARED_CACHE: rocksdict.Cache | None = None
_MEMTABLE_BUDGET: rocksdict.WriteBufferManager | None = None


def _shared_cache() -> rocksdict.Cache:
    # One block cache per process for all shards and openers, so memory does not
    # grow with the shard count.
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        _SHARED_CACHE = rocksdict.Cache(_BLOCK_CACHE_BYTES)
    return _SHARED_CACHE


def _memtable_budget() -> rocksdict.WriteBufferManager:
    # Past the budget RocksDB flushes the largest memtable early; writers never stall.
    global _MEMTABLE_BUDGET
    if _MEMTABLE_BUDGET is None:
        _MEMTABLE_BUDGET = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            _MEMTABLE_BUDGET_BYTES, False, _shared_cache()
        )
    return _MEMTABLE_BUDGET


def _table_options() -> rocksdict.BlockBasedOptions:
    # Bloom filters make misses (new entities, cold keys) cost no disk reads.
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(_shared_cache())
    table.set_cache_index_and_filter_blocks(True)
    return table


def writer_options() -> rocksdict.Options:
    """Options of the one read-write opener of a shard."""
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(_WRITE_BUFFER_BYTES)
    if _MEMTABLE_BUDGET_BYTES:
        opts.set_write_buffer_manager(_memtable_budget())
    opts.set_max_background_jobs(2)
    opts.set_block_based_table_factory(_table_options())
    return opts


def reader_options() -> rocksdict.Options:
    """Options of read-only and secondary openers."""
    opts = rocksdict.Options(raw_mode=True)
    # Secondaries must keep every file open: a file the primary deletes after
    # compaction stays readable through its open handle until the next catch-up.
    opts.set_max_open_files(-1)
    opts.set_block_based_table_factory(_table_options())
    return opts


def open_secondary(path: Path, own_dir: Path) -> rocksdict.Rdict:
    """A secondary instance of the shard at ``path``; ``own_dir`` holds its private files."""
    return rocksdict.Rdict(str(path), reader_options(), access_type=rocksdict.AccessType.secondary(str(own_dir)))


def iter_prefix(db: rocksdict.Rdict, prefix: bytes, from_key: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every key starting with ``prefix`` in a raw-mode shard
    (from ``from_key`` on, when given: a cursor for incremental scans)."""
    for key, value in db.items(from_key=from_key if from_key is not None and from_key > prefix else prefix):
        raw_key = cast(bytes, key)
        if not raw_key.startswith(prefix):
            break
        yield raw_key, cast(bytes, value)


def multi_get(db: rocksdict.Rdict, keys: list[bytes]) -> list[bytes | None]:
    """Values of ``keys`` in a raw-mode shard, None where absent (one multi-get)."""
    query: list[Any] = keys  # rocksdict's stub types lists of keys invariantly
    return cast("list[bytes | None]", db[query])

"""Restore every shard of a state directory from its changelog in one go.

The dataflow does not need this: a process restores each shard it owns when it opens
it (engine/state/rocksdb_store.py) and takes every shard's offsets from the progress
topic (engine/state/progress.py). This is for tools and checks that want the whole
state in one directory (a verification copy, a benchmark of restore speed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from engine.state.changelog import RestoreStats, ShardRestorer, ensure_changelog_topic
from engine.state.restore_retry import with_restore_retries
from engine.state.rocksdb_store import RocksDBStore, RocksDBStorePartition

_LOG = logging.getLogger("streamfeat.restore")


def restore_shards(bootstrap: str, source_topic: str, state_dir: str | Path, n_shards: int) -> list[RestoreStats]:
    """Catch up every shard directory under ``state_dir`` (creating missing ones)."""
    ensure_changelog_topic(bootstrap, source_topic, n_shards)
    stats: list[RestoreStats] = []
    store = RocksDBStore(state_dir, n_shards)
    try:
        for shard in range(n_shards):
            part = store.partition(shard)
            restorer = ShardRestorer(bootstrap, source_topic, shard)
            done = with_restore_retries(shard, _catch_up(part, restorer))
            _log(done)
            stats.append(done)
    finally:
        store.close()
    return stats


def _catch_up(part: RocksDBStorePartition, restorer: ShardRestorer) -> Callable[[int, str], RestoreStats]:
    def attempt(retries: int, last_error: str) -> RestoreStats:
        return part.catch_up(restorer)

    return attempt


def _log(done: RestoreStats) -> None:
    if done.records:
        _LOG.info(
            "shard %d: restored %d changelog records (%d bytes) in %.2fs",
            done.shard,
            done.records,
            done.bytes,
            done.seconds,
        )

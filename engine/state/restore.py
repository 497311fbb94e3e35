"""Restore every shard of a state directory from its changelog in one go.

The dataflow does not need this: a process restores each shard it owns when it opens
it (engine/state/rocksdb_store.py) and takes every shard's offsets from the progress
topic (engine/state/progress.py). This is for tools and checks that want the whole
state in one directory (a verification copy, a benchmark of restore speed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.state.changelog import RestoreStats, ShardRestorer, ensure_changelog_topic
from engine.state.rocksdb_store import RocksDBStore

_LOG = logging.getLogger("streamfeat.restore")


def restore_shards(bootstrap: str, source_topic: str, state_dir: str | Path, n_shards: int) -> list[RestoreStats]:
    """Catch up every shard directory under ``state_dir`` (creating missing ones)."""
    ensure_changelog_topic(bootstrap, source_topic, n_shards)
    stats: list[RestoreStats] = []
    store = RocksDBStore(state_dir, n_shards)
    try:
        for shard in range(n_shards):
            done = store.partition(shard).catch_up(ShardRestorer(bootstrap, source_topic, shard))
            _log(done)
            stats.append(done)
    finally:
        store.close()
    return stats


def _log(done: RestoreStats) -> None:
    if done.records:
        _LOG.info(
            "shard %d: restored %d changelog records (%d bytes) in %.2fs",
            done.shard,
            done.records,
            done.bytes,
            done.seconds,
        )

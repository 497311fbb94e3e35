"""Recovery time of a shard restored from its Kafka changelog (docs/deploy.md).

Writes ``records`` tile-sized records (``value_bytes`` each) to one shard through the
changelog, then restores the shard into an empty directory, three times, and reports
seconds per million records and per GB.

    .venv/bin/python -m benchmarks.bench_restore [records] [value_bytes]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import bootstrap, delete_topic, new_topic
from engine.state.changelog import changelog_topic, ensure_changelog_topic
from engine.state.records import TILE_PREFIX
from engine.state.restore import restore_shards
from engine.state.rocksdb_store import ChangelogTarget, RocksDBStore

_BATCH = 20_000


def main(records: int = 1_000_000, value_bytes: int = 200) -> None:
    broker, stop_broker = bootstrap()
    topic = new_topic(broker, "bench-restore", 1)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        ensure_changelog_topic(broker, topic, 1)
        with RocksDBStore(work / "source", 1, ChangelogTarget(broker, topic)) as store:
            part = store.partition(0)
            value = b"v" * value_bytes
            for start in range(0, records, _BATCH):
                txn = part.begin()
                keys = [TILE_PREFIX + i.to_bytes(8, "big") for i in range(start, min(start + _BATCH, records))]
                txn.put_many(keys, [value] * len(keys))
                txn.commit()
        runs = []
        for attempt in range(3):
            target = work / f"restored-{attempt}"
            stats = restore_shards(broker, topic, target, 1)[0]
            runs.append((stats.seconds, stats.bytes))
            shutil.rmtree(target)
        seconds = [s for s, _ in runs]
        gb = runs[0][1] / 1e9
        median = statistics.median(seconds)
        print(
            f"restore of {records:,} records ({gb:.3f} GB of keys+values): "
            f"median {median:.2f}s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
            f"{median / records * 1e6:.2f}s per million records, {median / gb:.1f}s per GB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        delete_topic(broker, changelog_topic(topic))
        delete_topic(broker, topic)
        stop_broker()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

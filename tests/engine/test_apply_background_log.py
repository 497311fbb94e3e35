"""Background log rolls (streaming): files are written off the worker thread, and the
log offset advances only once they are in place; a failed write keeps every row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.apply import ShardApplier
from engine.io.batches import DecodedBatch
from engine.io.log_reader import read_log
from engine.routing import route
from engine.state.offsets import NO_OFFSET
from engine.state.rocksdb_store import RocksDBStore
from tests.engine.streaming_support import example_views, transactions_batch

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _batch(first_offset: int, n: int) -> DecodedBatch:
    ts = START_MS + np.arange(first_offset, first_offset + n, dtype=np.int64) * 1_000
    return transactions_batch(ts, ["u1"] * n, first_offset=first_offset, cards=[f"c{i % 3}" for i in range(n)])


def _apply(applier: ShardApplier, batch: DecodedBatch, views: tuple[object, ...]) -> None:
    for _, shard_batch in route(batch, views, 1):  # type: ignore[arg-type]
        applier.apply([shard_batch])


def _logged_offsets(root: Path, view: str) -> list[int]:
    return sorted(read_log(str(root), view)["offset"].to_list())


def test_background_roll_records_the_log_offset_after_the_files(tmp_path: Path) -> None:
    _source, views = example_views("transactions")
    store = RocksDBStore(tmp_path / "state", 1)
    root = tmp_path / "log"
    try:
        applier = ShardApplier(
            store.partition(0), views, "transactions", log_root=str(root), log_max_rows=1, publish_in_background=True
        )
        _apply(applier, _batch(0, 5), views)  # due at once: cut and handed to the publisher
        assert applier.offsets[0].applied_offset == 4
        # Not recorded before the next call confirms the files, however fast they were.
        assert applier.offsets[0].log_offset == NO_OFFSET
        _apply(applier, _batch(5, 3), views)
        applier.maybe_publish_log(force=True)
        assert applier.offsets[0].log_offset == 7
        assert applier.stats.log_publish_errors == 0
        assert _logged_offsets(root, "user_spend") == list(range(8))
    finally:
        store.close()


def test_background_roll_failure_keeps_the_rows_for_the_next_roll(tmp_path: Path) -> None:
    _source, views = example_views("transactions")
    store = RocksDBStore(tmp_path / "state", 1)
    root = tmp_path / "log"
    blocker = root / "view=user_spend"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the view's directory must go")
    try:
        applier = ShardApplier(
            store.partition(0), views, "transactions", log_root=str(root), log_max_rows=1, publish_in_background=True
        )
        _apply(applier, _batch(0, 4), views)  # the background write fails
        applier.maybe_publish_log(force=True)  # collects that failure, then fails again
        assert applier.stats.log_publish_errors == 2
        assert applier.offsets[0].log_offset == NO_OFFSET
        fp = next(v.fingerprint for v in views if v.name == "user_spend")
        assert applier.writers[fp].buffered_rows == 4
        blocker.unlink()
        applier.maybe_publish_log(force=True)
        assert applier.offsets[0].log_offset == 3
        assert _logged_offsets(root, "user_spend") == [0, 1, 2, 3]
    finally:
        store.close()

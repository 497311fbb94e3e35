"""A history backfill's commits: routed chunks gathered into one apply per shard, and
the Parquet log published behind them (engine/offline/backfill.py runs the replay)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from engine.apply import ShardApplier
from engine.routing import ShardBatch

#: Shards whose log rows may wait for the publisher thread while the next shard applies.
MAX_LOGS_IN_FLIGHT = 2


class BackfillCommits:
    """Routed chunks waiting for one apply per shard, and the log publisher behind them.

    Every commit rewrites the record of each entity it touches, so several routed
    chunks go into one apply (one WriteBatch per shard). Each shard's log rows are
    published right after its apply, from a background thread while the next shard
    applies (pyarrow's Parquet writer releases the GIL; appliers are independent), and
    at most MAX_LOGS_IN_FLIGHT shards' log rows wait for it, so they never pile up.
    """

    def __init__(
        self,
        appliers: Mapping[int, ShardApplier],
        runs: Mapping[bytes, bytes],
        final: Mapping[bytes, bytes],
        total: int,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.appliers = appliers
        self.runs, self.final, self.total = runs, final, total
        self.on_progress = on_progress
        self.pending: list[list[ShardBatch]] = [[] for _ in appliers]
        self.pending_ends: list[int] = []
        self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-log")
        self.publishing: list[Future[None]] = []

    def add(self, routed: Iterable[tuple[str, ShardBatch]], done: int) -> None:
        for _, shard_batch in routed:
            self.pending[shard_batch.shard].append(shard_batch)
        self.pending_ends.append(done)

    def commit(self, last: bool) -> None:
        self.wait_for_publish()  # an applier is not thread-safe: one user at a time
        for shard, shard_batches in enumerate(self.pending):
            applier = self.appliers[shard]
            applier.apply(shard_batches, extra_puts=self.final if last else self.runs, publish=False)
            shard_batches.clear()
            self.publishing.append(self.publisher.submit(applier.maybe_publish_log, True))
            while len(self.publishing) > MAX_LOGS_IN_FLIGHT:
                self.publishing.pop(0).result()
        if self.on_progress is not None:
            for end in self.pending_ends:
                self.on_progress(end, self.total)
        self.pending_ends.clear()

    def wait_for_publish(self) -> None:
        jobs, self.publishing = self.publishing, []
        for job in jobs:
            job.result()

    def shutdown(self) -> None:
        self.publisher.shutdown(wait=True)  # never close an applier its log job still uses

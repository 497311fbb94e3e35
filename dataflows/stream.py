"""Compile the feature views of one event source into a Bytewax dataflow.

    kafka (KafkaBatchSource, one item per partition batch)
      -> decode (orjson + schema + watermark; dead letters produced before going on)
      -> route (one ShardBatch per state shard, gathered per shard group)
      -> state (ShardSink: one group of RocksDB shards per sink partition, a ShardApplier
         per shard, one kernel call per view for the group's shards: engine.apply.apply_shards)

Every view reading the source shares the one pass over its topic. Offsets come from
the state shards themselves (docs/semantics.md section 6), not from Bytewax recovery.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.cluster_check import (
    SettingsAgree,
    SettingsComparer,
    SettingsSource,
    VerdictSink,
    process_settings,
    verdict_items,
)
from dataflows.exceptions import DataflowConfigError
from engine.apply import ShardApplier, apply_shards
from engine.definitions import EventSource, FeatureRepo, StreamFeatureView
from engine.entity_codes import keyed_decoder
from engine.io.batches import DeadLetter, DecodedBatch, RawBatch
from engine.io.dead_letters import DeadLetterProducer, SentDeadLetters, sent_dead_letters
from engine.io.kafka_source import DEFAULT_BATCH_SIZE, EpochAlignment, KafkaBatchSource, next_on_grid
from engine.io.watermarks import PartitionWatermarks
from engine.metrics import DecodeObserver, ShardObserver, start_dataflow_metrics
from engine.retention import RetentionSweeper
from engine.routing import ShardBatch, route
from engine.shutdown import stop_requested
from engine.state.changelog import ensure_changelog_topic
from engine.state.layout import shard_path
from engine.state.offsets import OffsetRecord, combine_resume_points, highest_applied
from engine.state.progress import read_progress
from engine.state.redis_writer import RedisOnlineWriter
from engine.state.rocksdb_store import ChangelogTarget, RocksDBStore
from engine.state.secondary import read_offset_records

log = logging.getLogger(__name__)

TICK_INTERVAL = timedelta(seconds=1)
# Bytewax's default epoch (10 s) stalled the worker for 0.2-1 s at every epoch close
# at 10k events/s, growing with the epoch's length; offsets live in the shards, not in
# Bytewax snapshots, so short epochs cost nothing else. Measured: no stall over 50 ms
# with 1 s epochs.
EPOCH_INTERVAL = timedelta(seconds=1)
# In a cluster the epochs close on whole seconds of the wall clock: engine/io/kafka_source.py
# EpochAlignment (40 ms covers the usual spread of the workers' activations of one close).
CLUSTER_EPOCHS = EpochAlignment(period=EPOCH_INTERVAL, window=timedelta(milliseconds=40))
# The worker time a tick may spend sweeping quiet entities (engine/retention.py): the
# sweep runs on the worker thread, so every event waits while it runs.
SWEEP_BUDGET = timedelta(milliseconds=10)
# The tick partition's wake-ups with aligned epochs: the idle Kafka partitions' longest wait.
TICK_ALIGNED_WAKE = timedelta(milliseconds=40)


@dataclass(frozen=True, kw_only=True)
class StreamJob:
    """Everything one streaming dataflow needs; built by :func:`build_job`."""

    source: EventSource
    views: tuple[StreamFeatureView, ...]
    bootstrap: str
    state_dir: Path
    shards: int
    log_root: str | None
    redis_url: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    tail: bool = True
    log_max_rows: int = 200_000
    log_max_age_s: float = 30.0
    metrics_port: int = 0  # 0: no metrics endpoint (engine/metrics.py)
    changelog: bool = False  # durable shards: engine/state/changelog.py, docs/deploy.md
    processes: int = 1  # processes of the Bytewax cluster (their settings are compared)
    workers: int = 1  # worker threads per process: the shards form processes x workers groups
    # views that joined this stream after it had state: fingerprint -> join time (engine/plan.py)
    joins: Mapping[bytes, int] = field(default_factory=dict)

    @property
    def epoch_alignment(self) -> EpochAlignment | None:
        """Several workers: their epochs close together (:data:`CLUSTER_EPOCHS`); one: None."""
        return CLUSTER_EPOCHS if self.processes * self.workers > 1 else None

    @property
    def shard_groups(self) -> int:
        """Sink partitions: one group of shards per worker of the cluster (Bytewax gives
        each worker the same number of partitions when all list all of them)."""
        return max(1, min(self.shards, self.processes * self.workers))


def job_epoch_interval(job: StreamJob) -> timedelta:
    """The Bytewax epoch interval to run ``job`` with."""
    return EPOCH_INTERVAL if job.epoch_alignment is None else job.epoch_alignment.epoch_interval


def select_views(repo: FeatureRepo, source_name: str) -> tuple[EventSource, tuple[StreamFeatureView, ...]]:
    sources = {s.name: s for s in repo.sources}
    if source_name not in sources:
        raise DataflowConfigError(
            f"event source '{source_name}' is not defined in the feature repo",
            hint=f"defined sources: {', '.join(sorted(sources)) or '(none)'}",
        )
    source = sources[source_name]
    views = tuple(v for v in repo.views if v.source.name == source_name and (v.online or v.offline))
    if not views:
        raise DataflowConfigError(
            f"no feature view reads event source '{source_name}'",
            hint="define a StreamFeatureView with source=<that source>, then run `streamfeat apply`",
        )
    return source, views


@dataclass(frozen=True)
class ShardGroupBatch:
    """One source batch's items for the shards of one group (engine.routing.ShardBatch each)."""

    batches: tuple[ShardBatch, ...]


def group_key(group: int) -> str:
    return f"group-{group:03d}"


def group_of(shard: int, groups: int) -> int:
    return shard % groups


def by_group(items: Sequence[tuple[str, ShardBatch]], groups: int) -> list[tuple[str, ShardGroupBatch]]:
    """Routed ``(shard key, ShardBatch)`` items gathered into one item per shard group."""
    gathered: list[list[ShardBatch]] = [[] for _ in range(groups)]
    for _, batch in items:
        gathered[group_of(batch.shard, groups)].append(batch)
    return [(group_key(g), ShardGroupBatch(tuple(batches))) for g, batches in enumerate(gathered) if batches]


@dataclass
class _OwnedShard:
    applier: ShardApplier
    observer: ShardObserver
    sweeper: RetentionSweeper


def _owned_shard(applier: ShardApplier, state_dir: Path) -> _OwnedShard:
    shard = applier.partition.shard
    return _OwnedShard(
        applier,
        ShardObserver(applier, shard, shard_path(state_dir, shard)),
        RetentionSweeper(
            applier.partition,
            [
                (
                    c.view.fingerprint,
                    c.view.retention_ms,
                    c.view.interval_ms,
                    c.layout if c.view.has_lifetime_window else None,
                )
                for c in applier.views.values()
            ],
        ),
    )


class _ShardGroupPartition(StatefulSinkPartition[ShardGroupBatch | SettingsAgree | None, None]):
    def __init__(self, appliers: Sequence[ShardApplier], store: RocksDBStore) -> None:
        self.shards = {a.partition.shard: _owned_shard(a, store.state_dir) for a in appliers}
        self.store = store
        # Batches wait here until every process's settings agree (dataflows/cluster_check.py).
        self.held: list[ShardGroupBatch] | None = []
        self._next_sweep = 0  # the shard whose sweep goes first at the next tick

    def write_batch(self, values: list[ShardGroupBatch | SettingsAgree | None]) -> None:
        if self.held is not None:  # the cluster's settings are not yet known to agree
            self.held += [v for v in values if isinstance(v, ShardGroupBatch)]
            if not any(isinstance(v, SettingsAgree) for v in values):
                return
            values, self.held = list(self.held), None
        per_shard: dict[int, list[ShardBatch]] = {}
        for value in values:
            if isinstance(value, ShardGroupBatch):
                for batch in value.batches:
                    per_shard.setdefault(batch.shard, []).append(batch)
        if per_shard:
            apply_shards([(self.shards[shard].applier, batches) for shard, batches in per_shard.items()])
            for shard in per_shard:
                self.shards[shard].observer.observe()
        if any(v is None for v in values):
            # a tick (alone or beside batches): roll the Parquet log on time, and expire a
            # slice of quiet entities within SWEEP_BUDGET, the shards taking turns first
            for owned in self.shards.values():
                owned.applier.maybe_publish_log()
            self._sweep(time.perf_counter() + SWEEP_BUDGET.total_seconds())

    def _sweep(self, deadline: float) -> None:
        owned = list(self.shards.values())
        for i in range(len(owned)):
            owned[(self._next_sweep + i) % len(owned)].sweeper.step(deadline)
            if time.perf_counter() >= deadline:
                self._next_sweep = (self._next_sweep + i + 1) % len(owned)
                return

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        for owned in self.shards.values():
            owned.applier.close()
        self.store.close()


def changelog_target(job: StreamJob) -> ChangelogTarget | None:
    return ChangelogTarget(job.bootstrap, job.source.topic) if job.changelog else None


class ShardSink(FixedPartitionedSink[ShardGroupBatch | SettingsAgree | None, None]):
    """One sink partition per group of shards (one group per worker of the cluster); each
    group, so each shard, is owned by exactly one worker."""

    def __init__(self, job: StreamJob) -> None:
        self.job = job

    def list_parts(self) -> list[str]:
        return [group_key(g) for g in range(self.job.shard_groups)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key.rsplit("-", 1)[1])

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ShardGroupPartition:
        job = self.job
        store = RocksDBStore(job.state_dir, job.shards, changelog_target(job))
        group = self.part_fn(for_part)
        appliers = [
            ShardApplier(
                store.partition(shard),
                job.views,
                job.source.topic,
                log_root=job.log_root,
                log_max_rows=job.log_max_rows,
                log_max_age_s=job.log_max_age_s,
                online_copy=RedisOnlineWriter(job.redis_url) if job.redis_url else None,
                publish_in_background=True,
                joins=job.joins,
            )
            for shard in range(job.shards)
            if group_of(shard, job.shard_groups) == group
        ]
        return _ShardGroupPartition(appliers, store)


class _TickPartition(StatefulSourcePartition[int, None]):
    def __init__(self, alignment: EpochAlignment | None) -> None:
        self._epoch = None if alignment is None else alignment.clock()
        self._due = datetime.now(UTC)

    def next_batch(self) -> list[int]:
        if stop_requested():  # engine/shutdown.py: end with the Kafka sources
            raise StopIteration
        if self._epoch is None:
            return [1]
        now = datetime.now(UTC)
        if now < self._due:
            return []
        self._due = next_on_grid(now, TICK_INTERVAL)
        return [1]

    def next_awake(self) -> datetime | None:
        now = datetime.now(UTC)
        if self._epoch is None:
            return now + TICK_INTERVAL
        # Aligned epochs: woken with the idle Kafka partitions, so an epoch close this
        # partition missed by a few milliseconds comes at its next wake-up, not a second later.
        return self._epoch.wake(now, next_on_grid(now, TICK_ALIGNED_WAKE))

    def snapshot(self) -> None:
        return None


class TickSource(FixedPartitionedSource[int, None]):
    """One item a second, so idle shards still roll their Parquet log on time."""

    def __init__(self, alignment: EpochAlignment | None) -> None:
        self.alignment = alignment

    def list_parts(self) -> list[str]:
        return ["tick"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TickPartition:
        return _TickPartition(self.alignment)


class _DecodeStep:
    """Decode a raw batch and ship its dead letters before the batch goes on.

    Producing (and confirming) dead letters before the batch can be applied makes
    the dead-letter topic at-least-once: a crash replays the batch and resends.
    """

    def __init__(self, job: StreamJob, watermarks: PartitionWatermarks, already_sent: SentDeadLetters) -> None:
        self.decoder = keyed_decoder(job.source, job.views)
        self.watermarks = watermarks
        self.already_sent = already_sent
        self.bootstrap = job.bootstrap
        self.topic = job.source.topic
        self._dlq: DeadLetterProducer | None = None
        self.observer = DecodeObserver(self.topic)

    def __call__(self, raw: RawBatch) -> DecodedBatch:
        decoded = self.decoder.decode(raw, self.watermarks)
        sent_before: tuple[DeadLetter, ...] = ()
        if decoded.dead_letters:
            # Records read again after a restart: send only the letters not yet in the
            # topic, so each bad record has exactly one; count the others apart.
            sent = [self.already_sent.contains(d.partition, d.offset) for d in decoded.dead_letters]
            if any(sent):
                sent_before = tuple(d for d, was in zip(decoded.dead_letters, sent, strict=True) if was)
                fresh = tuple(d for d, was in zip(decoded.dead_letters, sent, strict=True) if not was)
                decoded = dataclasses.replace(decoded, dead_letters=fresh)
        if decoded.dead_letters:
            if self._dlq is None:
                self._dlq = DeadLetterProducer(self.bootstrap, self.topic)
            self._dlq.send(decoded.dead_letters)
        self.observer.observe(len(raw.offsets), decoded, sent_before)
        return decoded


def start_offsets(job: StreamJob) -> list[dict[int, OffsetRecord]]:
    """Every shard's offset records, where this process resumes from.

    With durable shards they come from the changelog's progress topic, so a host opens
    and restores only the shards its workers own (in :meth:`ShardSink.build_part`, when
    the shard is opened) and still resumes each Kafka partition where every shard is.
    """
    if job.changelog:
        ensure_changelog_topic(job.bootstrap, job.source.topic, job.shards)
        return read_progress(job.bootstrap, job.source.topic, job.shards)
    return read_offset_records(job.state_dir, job.shards, job.source.topic)


def build_flow(job: StreamJob, flow_id: str = "streamfeat") -> Dataflow:
    """The streaming dataflow of one source; run it with bytewax.run / run_main / cluster_main."""
    offset_records = start_offsets(job)
    resume = combine_resume_points(offset_records, job.shards)
    already_sent = sent_dead_letters(job.bootstrap, job.source.dlq_topic, highest_applied(offset_records))
    start_dataflow_metrics(job.bootstrap, job.source.topic, job.metrics_port)
    watermarks = PartitionWatermarks.restore({p: r.top_ts for p, r in resume.items()})
    views: Sequence[StreamFeatureView] = job.views
    shards = job.shards

    flow = Dataflow(flow_id)
    raw = op.input(
        "kafka",
        flow,
        KafkaBatchSource(
            job.bootstrap,
            job.source.topic,
            resume={p: r.next_offset for p, r in resume.items()},
            batch_size=job.batch_size,
            tail=job.tail,
            alignment=job.epoch_alignment,
        ),
    )
    decoded = op.map("decode", raw, _DecodeStep(job, watermarks, already_sent))
    groups = job.shard_groups
    # A Bytewax stream: Bytewax publishes no type information.
    routed: Any = op.flat_map("route", decoded, lambda batch: by_group(route(batch, views, shards), groups))
    if job.tail:
        ticks = op.input("ticks", flow, TickSource(job.epoch_alignment))
        tick_items = op.flat_map("tick_per_group", ticks, lambda _: [(group_key(g), None) for g in range(groups)])
        routed = op.merge("with_ticks", routed, tick_items)
    # Every process contributes its settings; one worker compares them and tells every
    # shard once they agree; shards apply nothing before that (dataflows/cluster_check.py).
    # A difference is printed by every process, which then ends with nothing applied.
    mine = process_settings(job)
    settings = op.input("settings", flow, SettingsSource(mine))
    compared = op.stateful_map(
        "same_settings", op.key_on("one_key", settings, lambda _: "cluster"), SettingsComparer(job.processes)
    )
    op.output(
        "settings_verdict",
        op.flat_map("verdict_to_processes", compared, lambda kv: verdict_items(kv[1])),
        VerdictSink(mine),
    )
    agreed = op.flat_map(
        "settings_agree_to_shards",
        compared,
        lambda kv: (
            [(group_key(g), kv[1].outcome) for g in range(groups)]
            if kv[1] is not None and isinstance(kv[1].outcome, SettingsAgree)
            else []
        ),
    )
    routed = op.merge("with_settings_agreed", routed, agreed)
    op.output("state", routed, ShardSink(job))
    _freeze_startup_heap()
    return flow


def _freeze_startup_heap() -> None:
    """Keep the long-lived startup objects out of every later cyclic-GC pass.

    Decoding allocates one dict per record, so full collections run often, and each one
    walked every module, definition and library object alive since start-up: 14% of an
    ingest run (1.28 of 9.0 s for 1M events), 0.25 s after freezing. Only objects alive
    now are frozen; cycles created later are collected as usual.
    """
    gc.collect()
    gc.freeze()

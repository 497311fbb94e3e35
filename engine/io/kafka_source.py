"""Bytewax source that reads one Kafka topic as batches of raw records, one partition per part.

Offsets are never committed to Kafka and Bytewax recovery is not used: the applied offsets live
in the RocksDB shards (docs/semantics.md section 6) and come back through ``resume``
(partition -> next offset to read). Each item is one ``RawBatch`` of consecutive records of one
partition, which keeps per-item Bytewax overhead to one item per few thousand records.

Batch size and latency: ``consume`` never waits; it returns what librdkafka has already
prefetched, at most ``batch_size`` records, so a large ``batch_size`` only fills up when the
partition has a backlog (catching up) and a tailing reader hands on what it has at once.
Large batches are what make catching up fast: the applier rewrites each touched entity
record once per batch, so records per batch divide the rewrites per event.

A partition that handed on a partial batch (it was tailing) is read again only at the
next ``linger_s`` (20 ms) mark, the way a producer's ``linger.ms`` works: each shard write
has a fixed cost, and at 10k events/s with 8 shards back-to-back small batches kept the one
worker thread about 85% busy, so any hiccup queued up. A partition with a full batch
(a backlog) is read again at once; one with nothing waits ``idle_wait_s``, doubled after
each further empty read up to ``idle_wait_max_s`` (40 ms), and back to ``idle_wait_s`` as
soon as records come. Every wake-up of an idle partition is a Bytewax worker step, which
costs more in a multi-process cluster: measured on a tailing 4-process cluster over an empty
topic, a fixed 5 ms wait burned 0.06-0.28 CPU seconds per second in each worker thread (one
process: 0.05 in all), a 50 ms wait about 0.02 (benchmarks/results/2026-12-05-s8/scaling.md).

Waits end on a shared grid: a wait of ``w`` ends at the next whole multiple of ``w`` since
the Unix epoch, not ``w`` after the read. All partitions lingering (and the default idle
waits, which divide 40 ms) are then due in the same Bytewax activation instead of
microseconds apart, and a wake-up is never later than ``now + w``: a cycle that already
used part of the linger reads again that much sooner. Measured (benchmarks/results/
2026-12-06-s11/freshness.md): shorter cycles and lower lag at 1k and 10k events/s, paid
with more, smaller shard commits at 1k events/s (about 0.8 instead of 0.65 of a core);
until-caught-up ingest is unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import is_not

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from engine.io.batches import RawBatch
from engine.io.exceptions import IoValueError, KafkaSourceError, TopicNotFoundError
from engine.kafka_clients import logged_client_settings, quiet_client_settings
from engine.shutdown import stop_requested

log = logging.getLogger(__name__)

# Errors after which reading on would skip or misread records: stop with a clear message.
_FATAL_CODES = frozenset(
    {
        KafkaError._AUTO_OFFSET_RESET,
        KafkaError.OFFSET_OUT_OF_RANGE,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._FATAL,
    }
)
_FATAL_HINTS = {
    KafkaError._AUTO_OFFSET_RESET: (
        "the resume offset is no longer (or not yet) on the broker: retention deleted it, or "
        "the topic was recreated. Reset the state (or backfill) instead of skipping records."
    ),
    KafkaError.OFFSET_OUT_OF_RANGE: (
        "the resume offset is outside the partition's log; retention may have deleted it."
    ),
}
#: Records per consume call (and per ``RawBatch``) at most; see the module docstring.
DEFAULT_BATCH_SIZE = 30_000
# Transient errors are logged at most this often per (partition, error code).
_LOG_EVERY_S = 10.0


def consumer_settings(bootstrap: str, topic: str, extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """librdkafka settings for a throughput-oriented, manually assigned, non-committing reader."""
    config = logged_client_settings(
        bootstrap,
        {
            # Required by librdkafka even with assign(); never used to commit.
            "group.id": f"streamfeat-{topic}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # Never jump silently over missing offsets: that would drop or re-read records.
            "auto.offset.reset": "error",
            "fetch.min.bytes": 1,
            "fetch.wait.max.ms": 100,
            # One consumer per partition, so these bound each partition's prefetch queue:
            # 8 MB holds about one large batch of ~200-byte events ahead of the reader,
            # enough to keep it busy; 64 MB per partition cost ~190 MB of RSS at 3 partitions.
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 2 * 1024 * 1024,
            "queued.max.messages.kbytes": 8 * 1024,
            "reconnect.backoff.max.ms": 2000,
            "allow.auto.create.topics": False,
        },
    )
    if extra:
        config.update(extra)
    return config


def list_topic_partitions(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[int]:
    """Partition ids of ``topic``; raises ``TopicNotFoundError`` if the broker does not know it."""
    admin = AdminClient(quiet_client_settings(bootstrap))  # failures come back as the exception below
    try:
        # Listing every topic never asks the broker to auto-create the one we look for.
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaSourceError(
            f"Kafka broker {bootstrap}: cannot read topic metadata within {timeout_s}s: {exc}",
            hint="is the broker running? Try `streamfeat kafka status` / `streamfeat kafka start`.",
        ) from exc
    found = metadata.topics.get(topic)
    if found is None or (found.error is not None and not found.partitions):
        known = sorted(t for t in metadata.topics if not t.startswith("__"))
        raise TopicNotFoundError(
            f"Kafka topic '{topic}' does not exist on broker {bootstrap} "
            f"(topics there: {known[:20]}{'...' if len(known) > 20 else ''})",
            hint="produce events to it first (for the example repo: `streamfeat generate`), "
            "or fix EventSource.topic or kafka_bootstrap.",
        )
    return sorted(found.partitions)


_GRID_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)


def next_on_grid(now: datetime, step: timedelta) -> datetime:
    """The first instant after ``now`` that is a whole number of ``step`` since the Unix
    epoch (``now`` itself for a zero step): where a wait of ``step`` ends (module docstring)."""
    if step <= timedelta(0):
        return now
    return _GRID_ORIGIN + ((now - _GRID_ORIGIN) // step + 1) * step


@dataclass(frozen=True)
class EpochAlignment:
    """Keeps the Bytewax epoch closes of every worker of a cluster on the same instants.

    Bytewax closes a source partition's epoch at its first activation at least the epoch
    interval after its last close, and each partition of each worker keeps its own phase.
    A partition that closed then waits for the cluster's frontier, and while it waits
    Bytewax re-activates it at once (its last wake-up time is past): the worker spins.
    Measured on a tailing 4-process cluster over an empty topic: spinning episodes of up
    to 0.8 s after the closes, 0.6-0.8 CPU seconds per second in all (0.05 for one process).

    With the epoch interval set to ``period - window``, each partition follows its epoch
    (:class:`EpochClock`) and holds the wake-ups that would close the epoch early until
    the next whole ``period`` since the Unix epoch: every partition of the cluster then
    closes on the same marks, and the others wait for it only as long as the frontier
    takes to pass, not for the gap between their phases.
    """

    period: timedelta
    window: timedelta

    @property
    def epoch_interval(self) -> timedelta:
        """The Bytewax epoch interval that makes the closes land on the ``period`` marks."""
        return self.period - self.window

    def clock(self, started: datetime | None = None) -> EpochClock:
        return EpochClock(self, started)


class EpochClock:
    """One source partition's estimate of its Bytewax epoch (:class:`EpochAlignment`).

    Bytewax starts the first epoch while it builds the partition (about now) and closes
    it in the first activation (``next_batch`` then ``next_awake``) at least the interval
    after the last close. A wake-up that would close the epoch shortly before the next
    mark is held to the mark; the first epoch is held to a mark however long that takes
    (at most one period and the first margin, once). A partition that slipped far from
    the marks later (a long wait for the frontier) is not held long but closes each epoch
    ``window`` earlier than the last until it is on them again.
    """

    # Covers how late an activation comes after its wake-up time plus how long after it
    # next_awake runs (Bytewax reads its clock at the start of the activation).
    _MARGIN = timedelta(milliseconds=50)
    # The first epoch started while the partition was built, before this clock existed.
    _FIRST_MARGIN = timedelta(milliseconds=200)

    def __init__(self, alignment: EpochAlignment, started: datetime | None = None) -> None:
        self.alignment = alignment
        self._started = datetime.now(UTC) if started is None else started
        self._margin = self._FIRST_MARGIN
        # The first epoch may end up to the first margin before this clock's estimate: when
        # the estimate is just past a mark, a wake-up at the margin's start is a period plus
        # the margin from the next mark and must still be held to it, or Bytewax closes the
        # epoch off the marks and this clock, a margin late, never holds a close again.
        self._hold_max = alignment.period + self._FIRST_MARGIN
        self._held_to: datetime | None = None

    def wake(self, now: datetime, wanted: datetime | None) -> datetime | None:
        """The wake-up to give Bytewax after a read at ``now`` that wants ``wanted``
        (None: at once): the next mark when ``wanted`` would close the epoch just before it."""
        interval = self.alignment.epoch_interval
        if now - self._started >= interval:
            # Bytewax closes the epoch in this activation, at the time it read when the
            # activation began: the mark it was held to when it woke there (``now`` comes
            # after the read; counted from ``now``, an epoch closed 40 ms or more after its
            # mark would aim at the mark after the next one and close off the marks).
            held = self._held_to
            self._started = held if held is not None and held <= now < held + self._MARGIN else now
            self._margin = self._MARGIN
            self._hold_max = self.alignment.window + self._MARGIN
        ends = self._started + interval
        mark = next_on_grid(ends - timedelta(microseconds=1), self.alignment.period)
        at = now if wanted is None else wanted
        if ends - self._margin <= at < mark and mark - at <= self._hold_max:
            self._held_to = mark
            return mark
        self._held_to = None
        return wanted


class KafkaBatchSource(FixedPartitionedSource[RawBatch, None]):
    """One Bytewax part per partition of ``topic``; each item is a ``RawBatch``.

    ``resume`` maps partition -> next offset to read (partitions missing from it start at the
    beginning of the log). With ``tail=False`` each partition ends at the high watermark seen when
    the part was built, which makes finite runs for tests and backfills from a topic.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        resume: Mapping[int, int] | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        idle_wait_s: float = 0.005,
        idle_wait_max_s: float = 0.04,
        linger_s: float = 0.02,
        tail: bool = True,
        consumer_config: Mapping[str, object] | None = None,
        metadata_timeout_s: float = 10.0,
        alignment: EpochAlignment | None = None,
    ) -> None:
        resume = dict(resume or {})
        for partition, offset in resume.items():
            if type(partition) is not int or partition < 0 or type(offset) is not int or offset < 0:
                raise IoValueError(
                    f"KafkaBatchSource for topic '{topic}': field 'resume': expected "
                    f"{{partition int >= 0: next offset int >= 0}}, got {partition!r}: "
                    f"{offset!r}. Hint: pass the applied offset + 1 of each partition."
                )
        if type(batch_size) is not int or batch_size < 1:
            raise IoValueError(
                f"KafkaBatchSource for topic '{topic}': field 'batch_size': expected an int "
                f">= 1, got {batch_size!r}. Hint: the default {DEFAULT_BATCH_SIZE} suits the engine."
            )
        if not 0 <= idle_wait_s <= 1:
            raise IoValueError(
                f"KafkaBatchSource for topic '{topic}': field 'idle_wait_s': expected seconds "
                f"in [0, 1], got {idle_wait_s!r}. Hint: a few milliseconds keep an idle worker "
                "cheap and a busy one fresh."
            )
        if not idle_wait_s <= idle_wait_max_s <= 1:
            raise IoValueError(
                f"KafkaBatchSource for topic '{topic}': field 'idle_wait_max_s': expected seconds "
                f"in [idle_wait_s={idle_wait_s!r}, 1], got {idle_wait_max_s!r}. Hint: tens of "
                "milliseconds keep an idle cluster cheap without delaying the first new record much."
            )
        if not 0 <= linger_s <= 1:
            raise IoValueError(
                f"KafkaBatchSource for topic '{topic}': field 'linger_s': expected seconds "
                f"in [0, 1], got {linger_s!r}. Hint: tens of milliseconds trade a little "
                "latency for far fewer, larger shard writes."
            )
        self.bootstrap = bootstrap
        self.topic = topic
        self.resume = resume
        self.batch_size = batch_size
        self.idle_wait_s = float(idle_wait_s)
        self.idle_wait_max_s = float(idle_wait_max_s)
        self.linger_s = float(linger_s)
        self.tail = tail
        self.consumer_config = dict(consumer_config or {})
        self.metadata_timeout_s = metadata_timeout_s
        self.alignment = alignment

    def list_parts(self) -> list[str]:
        return [str(p) for p in list_topic_partitions(self.bootstrap, self.topic, self.metadata_timeout_s)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> KafkaBatchPartition:
        partition = int(for_part)
        return KafkaBatchPartition(
            topic=self.topic,
            partition=partition,
            start_offset=self.resume.get(partition, OFFSET_BEGINNING),
            config=consumer_settings(
                self.bootstrap,
                self.topic,
                {"client.id": f"streamfeat-{step_id}-{partition}", **self.consumer_config},
            ),
            batch_size=self.batch_size,
            idle_wait_s=self.idle_wait_s,
            idle_wait_max_s=self.idle_wait_max_s,
            linger_s=self.linger_s,
            tail=self.tail,
            metadata_timeout_s=self.metadata_timeout_s,
            alignment=self.alignment,
        )


class KafkaBatchPartition(StatefulSourcePartition[RawBatch, None]):
    """Reads one topic partition with its own librdkafka consumer."""

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        start_offset: int,
        config: dict[str, object],
        batch_size: int,
        idle_wait_s: float,
        idle_wait_max_s: float,
        linger_s: float,
        tail: bool,
        metadata_timeout_s: float,
        alignment: EpochAlignment | None = None,
    ) -> None:
        self.topic = topic
        self._epoch = None if alignment is None else alignment.clock()
        self.partition = partition
        self._batch_size = batch_size
        self._idle_wait = timedelta(seconds=idle_wait_s)
        self._idle_wait_max = timedelta(seconds=idle_wait_max_s)
        # The wait after the next empty read: idle_wait, doubled per empty read in a row.
        self._next_idle_wait = self._idle_wait
        self._linger = timedelta(seconds=linger_s)
        # The wait before the next read, ended on the grid (None: at once); see the module doc.
        self._wait: timedelta | None = None
        self._fatal: KafkaError | None = None
        self._last_logged: dict[int, float] = {}
        config = {**config, "error_cb": self._on_client_error}
        self._consumer = Consumer(config)
        self._end: int | None = None
        if not tail:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=metadata_timeout_s, cached=False
                )
            except KafkaException as exc:
                self._consumer.close()
                raise KafkaSourceError(
                    f"Kafka topic '{topic}' partition {partition}: cannot read the high "
                    f"watermark within {metadata_timeout_s}s: {exc}",
                    hint="is the broker running? Try `streamfeat kafka status`.",
                ) from exc
            self._end = int(high)
        # Next offset we expect; only used to know when a finite (tail=False) read is done.
        self._next = start_offset if start_offset >= 0 else 0
        self._consumer.assign([TopicPartition(topic, partition, start_offset)])

    def _on_client_error(self, err: KafkaError) -> None:
        # Called from poll/consume: broker-down and similar errors are retried by librdkafka.
        if err.fatal():
            self._fatal = err
        else:
            self._log_transient(err)

    def _log_transient(self, err: KafkaError) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(err.code(), -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[err.code()] = now
            log.warning(
                "Kafka topic '%s' partition %d: transient error %s (%s); retrying",
                self.topic,
                self.partition,
                err.name(),
                err.str(),
            )

    def _raise_fatal(self, err: KafkaError) -> None:
        raise KafkaSourceError(
            f"Kafka topic '{self.topic}' partition {self.partition}: error {err.name()} at or "
            f"after offset {self._next}: {err.str()}",
            hint=_FATAL_HINTS.get(err.code(), "check the broker logs; restarting resumes from the applied offsets."),
        )

    def next_batch(self) -> list[RawBatch]:
        if self._fatal is not None:
            self._raise_fatal(self._fatal)
        if (self._end is not None and self._next >= self._end) or stop_requested():
            raise StopIteration
        messages = self._consumer.consume(num_messages=self._batch_size, timeout=0)
        batch = self._records_of(messages) if messages else None
        if batch is None and (not messages or self._end is None):
            # Nothing new, or only events such as the partition's end: wait, longer each time in a row.
            self._wait = self._next_idle_wait
            self._next_idle_wait = min(self._next_idle_wait * 2, self._idle_wait_max)
            return []
        self._next_idle_wait = self._idle_wait
        if len(messages) < self._batch_size and self._end is None:
            self._wait = self._linger
        else:  # a backlog, or a finite read: go on at once
            self._wait = None
        return [] if batch is None else [batch]

    def _records_of(self, messages: list[Message]) -> RawBatch | None:
        """The batch of the records among ``messages`` (None if none); handles the errors."""
        # map over the unbound C methods: no Python frame per record.
        errors = list(map(Message.error, messages))
        good = messages
        # Identity, never ==: KafkaError's == against None leaves a TypeError set in C.
        if any(map(is_not, errors, repeat(None))):
            self._handle_errors(messages)
            good = [m for m, e in zip(messages, errors, strict=True) if e is None]
        end = self._end
        # Offsets ascend: only a batch whose last record reaches the end needs cutting.
        if end is not None and good and (good[-1].offset() or 0) >= end:
            good = [m for m in good if (m.offset() or 0) < end]
        if not good:
            return None
        offsets = np.fromiter(map(Message.offset, good), dtype=np.int64, count=len(good))
        self._next = int(offsets[-1]) + 1
        return RawBatch(
            topic=self.topic,
            partition=self.partition,
            offsets=offsets,
            keys=list(map(Message.key, good)),
            values=list(map(Message.value, good)),
        )

    def _handle_errors(self, messages: list[Message]) -> None:
        for m in messages:
            err = m.error()
            if err is None:
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                # Not an error: the reader caught up. Its offset is the current end of the log.
                self._next = max(self._next, m.offset() or 0)
            elif err.fatal() or err.code() in _FATAL_CODES:
                self._raise_fatal(err)
            else:
                self._log_transient(err)

    def next_awake(self) -> datetime | None:
        if self._wait is None and self._epoch is None:
            return None
        now = datetime.now(UTC)
        wanted = None if self._wait is None else next_on_grid(now, self._wait)
        return wanted if self._epoch is None else self._epoch.wake(now, wanted)

    def snapshot(self) -> None:
        # Resume points come from the offsets stored with the state, not Bytewax recovery.
        return None

    def close(self) -> None:
        self._consumer.close()

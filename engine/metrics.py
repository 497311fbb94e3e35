"""Prometheus metrics of a running streaming dataflow (layer 1 of docs/operations.md).

One :class:`DataflowMetrics` per process, on a registry of its own (the process-wide
default collectors stay out), served by ``prometheus_client.start_http_server`` on
``127.0.0.1:<metrics_port>``. The dataflow feeds it through two small hooks:

- :class:`DecodeObserver` after each decoded batch (events in, dead letters by reason,
  the last offset read per partition);
- :class:`ShardObserver` after each applied batch (rows applied per view, batch
  latency, and the shard whose size on disk is reported).

Consumer lag and state bytes are computed when scraped: lag asks the broker for the
partitions' end offsets (cached for a second), state bytes sum the owned shards'
directories. Counters are thread-safe, so every worker thread of a process shares them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.exceptions import StreamfeatError

log = logging.getLogger(__name__)

# One apply of a batch of a few thousand events takes milliseconds to a second.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
END_OFFSETS_TTL_S = 1.0


class MetricsServerError(StreamfeatError):
    """The metrics endpoint could not be started."""


class ReasonedLike(Protocol):
    @property
    def reason(self) -> object: ...


class DecodedLike(Protocol):
    @property
    def partition(self) -> int: ...
    @property
    def last_offset(self) -> int: ...
    @property
    def event_ts(self) -> Sized: ...
    @property
    def dead_letters(self) -> Sequence[ReasonedLike]: ...


class StatsLike(Protocol):
    @property
    def rows_applied(self) -> int: ...
    @property
    def last_batch_seconds(self) -> float: ...
    @property
    def per_view_rows(self) -> dict[str, int]: ...


class ApplierLike(Protocol):
    @property
    def stats(self) -> StatsLike: ...


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    if not path.exists():
        return 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:  # RocksDB deletes obsolete files while we walk
            continue
    return total


def kafka_end_offsets(bootstrap: str, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
    """High watermark (next offset to be written) of every partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    from engine.io.kafka_source import list_topic_partitions
    from engine.kafka_clients import quiet_client_settings

    partitions = list_topic_partitions(bootstrap, topic, timeout_s)
    # A short-lived reader whose failures surface as exceptions (see above).
    consumer = Consumer(
        quiet_client_settings(bootstrap, {"group.id": "streamfeat-metrics", "enable.auto.commit": False})
    )
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            ends[p] = int(high)
        return ends
    finally:
        consumer.close()


@dataclass(eq=False)  # registered in a prometheus registry, which hashes collectors
class _LagAndSize(Collector):
    """Scrape-time gauges: consumer lag per partition and state bytes of owned shards."""

    owner: DataflowMetrics
    end_offsets: Callable[[str, str], dict[int, int]] = kafka_end_offsets
    _cache: tuple[float, dict[int, int]] | None = field(default=None, init=False)

    def _ends(self) -> dict[int, int]:
        o = self.owner
        if not o.bootstrap or not o.topic:
            return {}
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < END_OFFSETS_TTL_S:
            return self._cache[1]
        try:
            ends = self.end_offsets(o.bootstrap, o.topic)
        except Exception as exc:  # a scrape must answer even when the broker does not
            log.warning("metrics: cannot read end offsets of '%s': %s", o.topic, exc)
            ends = self._cache[1] if self._cache is not None else {}
        self._cache = (now, ends)
        return ends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        o = self.owner
        lag = GaugeMetricFamily(
            "streamfeat_consumer_lag_records",
            "End offset of the partition minus the next offset this process will read.",
            labels=("topic", "partition"),
        )
        position = GaugeMetricFamily(
            "streamfeat_consumer_position",
            "Next offset this process will read, per partition it has read.",
            labels=("topic", "partition"),
        )
        with o.lock:
            read = dict(o.next_offsets)
            shards = dict(o.shard_dirs)
        ends = self._ends() if read else {}
        for p, nxt in sorted(read.items()):
            position.add_metric((o.topic, str(p)), float(nxt))
            if p in ends:
                lag.add_metric((o.topic, str(p)), float(max(0, ends[p] - nxt)))
        yield lag
        yield position
        size = GaugeMetricFamily(
            "streamfeat_state_bytes",
            "Bytes on disk of each state shard this process owns.",
            labels=("shard",),
        )
        for shard, path in sorted(shards.items()):
            size.add_metric((f"{shard:03d}",), float(directory_bytes(path)))
        yield size


class DataflowMetrics:
    """The metrics of one dataflow process (see the module docstring)."""

    def __init__(self, end_offsets: Callable[[str, str], dict[int, int]] = kafka_end_offsets) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.lock = threading.Lock()
        self.bootstrap = ""
        self.topic = ""
        self.next_offsets: dict[int, int] = {}
        self.shard_dirs: dict[int, Path] = {}
        self.port: int | None = None
        self._server: WSGIServer | None = None
        self.events_in = Counter(
            "streamfeat_events_in",
            "Records read from the source topic and decoded (valid or not).",
            ("topic",),
            registry=self.registry,
        )
        self.events_valid = Counter(
            "streamfeat_events_valid",
            "Records that decoded into valid, on-time events (before view filters).",
            ("topic",),
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "streamfeat_dead_letters",
            "Records sent to the dead-letter topic, by reason (late_event counts late events).",
            ("topic", "reason"),
            registry=self.registry,
        )
        self.dead_letters_already_sent = Counter(
            "streamfeat_dead_letters_already_sent",
            "Refused records whose dead letter was already in the topic (records read again after a "
            "restart, or by another project reading the same topic): not sent again, by reason.",
            ("topic", "reason"),
            registry=self.registry,
        )
        self.late_events = Counter(
            "streamfeat_late_events",
            "Events below their partition's watermark (also counted in streamfeat_dead_letters).",
            ("topic",),
            registry=self.registry,
        )
        self.rows_applied = Counter(
            "streamfeat_rows_applied",
            "Events applied to a view's tiles (after its filter, replays skipped).",
            ("view",),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "streamfeat_apply_batch_seconds",
            "Time for one shard to apply one Bytewax batch (tiles, offsets, online copy, log).",
            ("shard",),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LagAndSize(self, end_offsets))

    def configure(self, bootstrap: str, topic: str) -> None:
        with self.lock:
            self.bootstrap = bootstrap
            self.topic = topic

    def add_shard(self, shard: int, path: Path) -> None:
        with self.lock:
            self.shard_dirs[shard] = path

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint once per process; returns the port it listens on."""
        with self.lock:
            if self._server is not None and self.port is not None:
                return self.port
            try:
                server, _thread = start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                raise MetricsServerError(
                    f"metrics endpoint: cannot listen on {host}:{port}: {exc}",
                    hint="set metrics_port (streamfeat.yaml / STREAMFEAT_METRICS_PORT) to a free "
                    "port, or 0 to disable the endpoint",
                ) from exc
            self._server = server
            self.port = int(server.server_address[1])
            return self.port

    def shutdown(self) -> None:
        with self.lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
                self.port = None


_PROCESS_METRICS: DataflowMetrics | None = None
_PROCESS_LOCK = threading.Lock()


def process_metrics() -> DataflowMetrics:
    """The metrics of this process (created on first use)."""
    global _PROCESS_METRICS
    with _PROCESS_LOCK:
        if _PROCESS_METRICS is None:
            _PROCESS_METRICS = DataflowMetrics()
        return _PROCESS_METRICS


def start_dataflow_metrics(bootstrap: str, topic: str, port: int) -> int | None:
    """Configure this process's metrics and serve them on ``port`` (0: do not serve).

    A port already taken is logged, not fatal: the dataflow matters more than its
    metrics (two dataflows on one host need distinct ``metrics_port`` values).
    """
    metrics = process_metrics()
    metrics.configure(bootstrap, topic)
    if port == 0:
        return None
    try:
        return metrics.serve(port)
    except MetricsServerError as exc:
        log.error("%s (%s)", exc, exc.hint)
        return None


def _by_reason(letters: Sequence[ReasonedLike]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for letter in letters:
        reason = str(letter.reason)
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


class DecodeObserver:
    """Hook for the decode step: count what one decoded batch holds."""

    def __init__(self, topic: str, metrics: DataflowMetrics | None = None) -> None:
        self.metrics = metrics or process_metrics()
        self.topic = topic
        self._in = self.metrics.events_in.labels(topic)
        self._valid = self.metrics.events_valid.labels(topic)
        self._late = self.metrics.late_events.labels(topic)

    def observe(self, raw_count: int, decoded: DecodedLike, already_sent: Sequence[ReasonedLike] = ()) -> None:
        """``already_sent``: the batch's refused records whose letter the topic holds
        already (left out of ``decoded.dead_letters``, not sent again)."""
        self._in.inc(raw_count)
        self._valid.inc(len(decoded.event_ts))
        if decoded.dead_letters:
            reasons = _by_reason(decoded.dead_letters)
            for reason, n in reasons.items():
                self.metrics.dead_letters.labels(self.topic, reason).inc(n)
            self._late.inc(reasons.get("late_event", 0))
        for reason, n in _by_reason(already_sent).items():
            self.metrics.dead_letters_already_sent.labels(self.topic, reason).inc(n)
        with self.metrics.lock:
            nxt = decoded.last_offset + 1
            if nxt > self.metrics.next_offsets.get(decoded.partition, -1):
                self.metrics.next_offsets[decoded.partition] = nxt


class ShardObserver:
    """Hook for a state shard: turn its applier's counters into metric increments."""

    def __init__(self, applier: ApplierLike, shard: int, path: Path, metrics: DataflowMetrics | None = None) -> None:
        self.metrics = metrics or process_metrics()
        self.applier = applier
        self.metrics.add_shard(shard, path)
        self._latency = self.metrics.batch_seconds.labels(f"{shard:03d}")
        self._seen: dict[str, int] = dict(applier.stats.per_view_rows)

    def observe(self) -> None:
        stats = self.applier.stats
        self._latency.observe(stats.last_batch_seconds)
        for view, rows in stats.per_view_rows.items():
            delta = rows - self._seen.get(view, 0)
            if delta > 0:
                self.metrics.rows_applied.labels(view).inc(delta)
                self._seen[view] = rows

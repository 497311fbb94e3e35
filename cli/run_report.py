"""What ``streamfeat run`` tells the terminal: progress, dead-letter alarms, a summary.

Everything is read from this process's dataflow metrics (engine/metrics.py), so the
numbers are the same ones Prometheus sees.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from engine.metrics import DataflowMetrics, kafka_end_offsets, process_metrics

# A run whose dead letters are at least this share of what it read is loudly reported.
DEAD_LETTER_ALARM_SHARE = 0.5
# ... once it has read at least this many records (a handful of bad records is not a trend).
DEAD_LETTER_ALARM_MIN_RECORDS = 100
_LAG_EVERY_S = 5.0

# What to check for each dead-letter reason (docs/semantics.md section 5 defines them).
REASON_HINTS: Mapping[str, str] = {
    "late_event": "events older than their partition's watermark minus allowed_lateness; "
    "are they produced in time order, around the current time?",
    "invalid_json": "the records are not JSON objects",
    "missing_field": "a field of the source schema is missing from the records",
    "wrong_type": "a field has another type than the source schema says",
    "invalid_timestamp": "the timestamp field cannot be read in the source's timestamp_format",
    "timestamp_out_of_range": "the timestamp is negative or absurdly far from now",
}


def _samples(metrics: DataflowMetrics, family: str, label: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for metric in metrics.registry.collect():
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name == f"{family}_total":
                key = sample.labels[label]
                found[key] = found.get(key, 0) + int(sample.value)
    return found


@dataclass(frozen=True)
class RunCounts:
    """Totals of one ``streamfeat run`` process so far."""

    read: int
    dead_letters: Mapping[str, int]
    applied: Mapping[str, int]  # view -> events applied to its tiles
    next_offsets: Mapping[int, int]

    @property
    def dead_total(self) -> int:
        return sum(self.dead_letters.values())

    def dead_text(self) -> str:
        reasons = sorted(self.dead_letters.items(), key=lambda item: -item[1])
        return ", ".join(f"{reason} {n:,}" for reason, n in reasons) or "none"

    def applied_text(self) -> str:
        return ", ".join(f"{view} {n:,}" for view, n in sorted(self.applied.items())) or "nothing"

    def mostly_dead(self) -> bool:
        return self.read >= DEAD_LETTER_ALARM_MIN_RECORDS and (
            self.dead_total >= DEAD_LETTER_ALARM_SHARE * self.read
        )


def read_counts(topic: str, metrics: DataflowMetrics | None = None) -> RunCounts:
    metrics = metrics or process_metrics()
    with metrics.lock:
        offsets = dict(metrics.next_offsets)
    return RunCounts(
        read=_samples(metrics, "streamfeat_events_in", "topic").get(topic, 0),
        dead_letters=_samples(metrics, "streamfeat_dead_letters", "reason"),
        applied=_samples(metrics, "streamfeat_rows_applied", "view"),
        next_offsets=offsets,
    )


def dead_letter_alarm(counts: RunCounts, dlq_topic: str) -> str:
    """The loud warning for a run whose records mostly went to the dead-letter topic."""
    share = counts.dead_total / counts.read if counts.read else 0.0
    lines = [
        f"WARNING: {counts.dead_total:,} of {counts.read:,} records ({share:.0%}) went to the "
        f"dead-letter topic {dlq_topic!r}, not into features: {counts.dead_text()}"
    ]
    for reason in sorted(counts.dead_letters, key=lambda r: -counts.dead_letters[r]):
        if reason in REASON_HINTS:
            lines.append(f"  {reason}: {REASON_HINTS[reason]}")
    lines.append(f"  read them with any Kafka consumer on {dlq_topic!r} (each carries its reason)")
    return "\n".join(lines)


@dataclass
class RunReporter:
    """Prints progress to a terminal while the dataflow runs and a summary at the end."""

    topic: str
    bootstrap: str
    out: TextIO = field(default_factory=lambda: sys.stderr)
    interval_s: float = 1.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _started: float = field(default_factory=time.monotonic, init=False)
    _alarmed: bool = field(default=False, init=False)
    _lag: int | None = field(default=None, init=False)
    _lag_at: float = field(default=0.0, init=False)

    def start(self) -> None:
        """Live progress only on a terminal; a redirected run gets the summary alone."""
        if self.out.isatty():
            self._thread = threading.Thread(target=self._loop, name="run-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.out.write("\r\x1b[K")

    def lag(self, offsets: Mapping[int, int], *, fresh: bool = False) -> int | None:
        now = time.monotonic()
        if offsets and (fresh or now - self._lag_at >= _LAG_EVERY_S):
            self._lag_at = now
            try:
                ends = kafka_end_offsets(self.bootstrap, self.topic)
            except Exception:  # progress must never stop the run; the lag is just unknown
                return self._lag
            self._lag = sum(max(0, ends[p] - n) for p, n in offsets.items() if p in ends)
        return self._lag

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            counts = read_counts(self.topic)
            if counts.mostly_dead() and not self._alarmed:
                self._alarmed = True
                self.out.write("\r\x1b[K" + dead_letter_alarm(counts, f"{self.topic}.dlq") + "\n")
            seconds = max(time.monotonic() - self._started, 1e-9)
            lag = self.lag(counts.next_offsets)
            self.out.write(
                f"\r\x1b[K{self.topic}: {counts.read:,} read ({counts.read / seconds:,.0f}/s), "
                f"lag {'?' if lag is None else f'{lag:,}'}, dead letters {counts.dead_text()}"
            )
            self.out.flush()

    def summary(self, *, caught_up: bool, interrupted: bool) -> str:
        counts = read_counts(self.topic)
        seconds = max(time.monotonic() - self._started, 1e-9)
        how = "caught up" if caught_up else ("stopped" if interrupted else "finished")
        lag = self.lag(counts.next_offsets, fresh=True)
        lag_text = "" if caught_up or lag is None else f", lag {lag:,}"
        text = (
            f"run {how}: read {counts.read:,} records from {self.topic!r} in {seconds:.1f} s "
            f"({counts.read / seconds:,.0f}/s); applied {counts.applied_text()}; "
            f"dead letters {counts.dead_total:,} ({counts.dead_text()}){lag_text}"
        )
        if counts.mostly_dead():
            text = dead_letter_alarm(counts, f"{self.topic}.dlq") + "\n" + text
        return text

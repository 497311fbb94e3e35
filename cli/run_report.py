"""What ``streamfeat run`` tells the terminal: progress, dead-letter alarms, a summary.

The numbers come from the dataflow metrics (engine/metrics.py, the ones Prometheus
sees): this process's own, or with ``--processes N`` the counts files the processes
publish, summed (engine/run_counts.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from engine.io.batches import DeadLetterReason, dlq_topic_for
from engine.metrics import kafka_end_offsets
from engine.run_counts import RunCounts, read_counts, reasons_text
from engine.wording import counted

_LAG_EVERY_S = 5.0

# What to check for each dead-letter reason (docs/semantics.md section 5 defines them).
_R = DeadLetterReason
REASON_HINTS: Mapping[str, str] = {
    _R.LATE_EVENT: "events older than their partition's watermark minus allowed_lateness; "
    "are they produced in time order, around the current time?",
    _R.INVALID_JSON: "the records are not JSON objects",
    _R.MISSING_FIELD: "fields of the source schema (or its timestamp field) are absent or null; "
    "each dead letter's detail names every one",
    _R.WRONG_TYPE: "a field has another type than the source schema says",
    _R.INVALID_TIMESTAMP: "the timestamp field cannot be read in the source's timestamp_format",
    _R.TIMESTAMP_OUT_OF_RANGE: "the timestamp is negative or absurdly far from now",
}


def how_to_read_dead_letters(dlq_topic: str, bootstrap: str) -> str:
    """Where the dead letters are and a command that shows them with their reasons."""
    return (
        f"  read them with any Kafka consumer on {dlq_topic!r}; each carries its reason and detail "
        f"in its headers, e.g. kcat -C -b {bootstrap} -t {dlq_topic} -e -f '%h\\n%s\\n'"
    )


def dead_letter_alarm(counts: RunCounts, dlq_topic: str, bootstrap: str) -> str:
    """The loud warning for a run whose records mostly went to the dead-letter topic."""
    share = counts.refused_total / counts.read if counts.read else 0.0
    lines = [
        f"WARNING: {counts.refused_total:,} of {counted(counts.read, 'record')} ({share:.0%}) went to the "
        f"dead-letter topic {dlq_topic!r}, not into features: {counts.dead_text()}"
    ]
    reasons = {**counts.already_sent}
    for reason, n in counts.dead_letters.items():
        reasons[reason] = reasons.get(reason, 0) + n
    for reason in sorted(reasons, key=lambda r: -reasons[r]):
        if reason in REASON_HINTS:
            lines.append(f"  {reason}: {REASON_HINTS[reason]}")
    lines.append(how_to_read_dead_letters(dlq_topic, bootstrap))
    return "\n".join(lines)


@dataclass
class RunReporter:
    """Prints progress to a terminal while the dataflow runs and a summary at the end."""

    topic: str
    bootstrap: str
    out: TextIO = field(default_factory=lambda: sys.stderr)
    counts: Callable[[], RunCounts] | None = None  # default: this process's metrics
    interval_s: float = 1.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _started: float = field(default_factory=time.monotonic, init=False)
    _alarmed: bool = field(default=False, init=False)
    _lag: int | None = field(default=None, init=False)
    _lag_at: float = field(default=0.0, init=False)

    def _counts(self) -> RunCounts:
        return self.counts() if self.counts is not None else read_counts(self.topic)

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
            counts = self._counts()
            if counts.mostly_dead() and not self._alarmed:
                self._alarmed = True
                self.out.write("\r\x1b[K" + dead_letter_alarm(counts, dlq_topic_for(self.topic), self.bootstrap) + "\n")
            seconds = max(time.monotonic() - self._started, 1e-9)
            lag = self.lag(counts.next_offsets)
            self.out.write(
                f"\r\x1b[K{self.topic}: {counts.read:,} read ({counts.read / seconds:,.0f}/s), "
                f"lag {'?' if lag is None else f'{lag:,}'}, dead letters {counts.dead_text()}"
            )
            self.out.flush()

    def summary(self, *, caught_up: bool, interrupted: bool, failed: bool = False) -> str:
        counts = self._counts()
        seconds = max(time.monotonic() - self._started, 1e-9)
        how = "caught up" if caught_up else ("stopped" if interrupted else "failed" if failed else "finished")
        lag = self.lag(counts.next_offsets, fresh=True)
        lag_text = "" if caught_up or lag is None else f", lag {lag:,}"
        # "none" as on the live line; a total only when there are reasons to add up.
        dead = (
            f"{counts.dead_total:,} ({reasons_text(counts.dead_letters)}){counts.already_text()}"
            if counts.dead_total
            else counts.dead_text()
        )
        text = (
            f"run {how}: read {counted(counts.read, 'record')} from {self.topic!r} in {seconds:.1f} s "
            f"({counts.read / seconds:,.0f}/s); applied {counts.applied_text()} (the events each view's filter keeps); "
            f"dead letters {dead}{lag_text}"
        )
        if counts.mostly_dead():
            text = dead_letter_alarm(counts, dlq_topic_for(self.topic), self.bootstrap) + "\n" + text
        elif counts.refused_total:
            text += "\n" + how_to_read_dead_letters(dlq_topic_for(self.topic), self.bootstrap)
        return text

"""What a ``streamfeat run`` has done so far, from its dataflow metrics, and how the
processes of ``run --processes N`` share it with the command that started them.

Each process publishes its :class:`RunCounts` as a small JSON file (``publish_counts``,
rewritten atomically every ``interval_s`` and once more at exit); the parent reads and
sums them (:func:`merged_counts`). Partitions are read by one process each, so their next
offsets are merged, not summed.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from engine.metrics import DataflowMetrics, process_metrics
from engine.wording import counted

# A run whose dead letters are at least this share of what it read is loudly reported.
DEAD_LETTER_ALARM_SHARE = 0.5
# ... once it has read at least this many records (a handful of bad records is not a trend).
DEAD_LETTER_ALARM_MIN_RECORDS = 100


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
    # reason -> refused records whose letter was already in the topic (not sent again)
    already_sent: Mapping[str, int] = field(default_factory=dict)

    @property
    def dead_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def refused_total(self) -> int:
        """Records this run refused: letters sent now and letters already in the topic."""
        return self.dead_total + sum(self.already_sent.values())

    def dead_text(self) -> str:
        """The letters sent, by reason ("none" when none), then those already in the topic."""
        return (reasons_text(self.dead_letters) or "none") + self.already_text()

    def already_text(self) -> str:
        """``"; and N refused records whose letter ..."`` when there are such, else empty."""
        if not self.already_sent:
            return ""
        earlier = sum(self.already_sent.values())
        return (
            f"; and {counted(earlier, 'refused record')} whose letter was already in the topic, "
            f"not sent again: {reasons_text(self.already_sent)}"
        )

    def applied_text(self) -> str:
        return ", ".join(f"{view} {n:,}" for view, n in sorted(self.applied.items())) or "nothing"

    def mostly_dead(self) -> bool:
        return self.read >= DEAD_LETTER_ALARM_MIN_RECORDS and (
            self.refused_total >= DEAD_LETTER_ALARM_SHARE * self.read
        )


def reasons_text(by_reason: Mapping[str, int]) -> str:
    reasons = sorted(by_reason.items(), key=lambda item: -item[1])
    return ", ".join(f"{reason} {n:,}" for reason, n in reasons)


def read_counts(topic: str, metrics: DataflowMetrics | None = None) -> RunCounts:
    metrics = metrics or process_metrics()
    with metrics.lock:
        offsets = dict(metrics.next_offsets)
    return RunCounts(
        read=_samples(metrics, "streamfeat_events_in", "topic").get(topic, 0),
        dead_letters=_samples(metrics, "streamfeat_dead_letters", "reason"),
        applied=_samples(metrics, "streamfeat_rows_applied", "view"),
        next_offsets=offsets,
        already_sent=_samples(metrics, "streamfeat_dead_letters_already_sent", "reason"),
    )


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def merged_counts(parts: Sequence[RunCounts]) -> RunCounts:
    """The counts of several processes of one run, summed."""
    dead: dict[str, int] = {}
    applied: dict[str, int] = {}
    offsets: dict[int, int] = {}
    already: dict[str, int] = {}
    for part in parts:
        _add(dead, part.dead_letters)
        _add(applied, part.applied)
        _add(already, part.already_sent)
        for p, n in part.next_offsets.items():
            offsets[p] = max(n, offsets.get(p, 0))
    return RunCounts(sum(p.read for p in parts), dead, applied, offsets, already)


def write_counts(path: Path, counts: RunCounts) -> None:
    """Replace ``path`` atomically with ``counts`` as JSON."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(
        orjson.dumps(
            {
                "read": counts.read,
                "dead_letters": dict(counts.dead_letters),
                "applied": dict(counts.applied),
                "next_offsets": {str(p): n for p, n in counts.next_offsets.items()},
                "already_sent": dict(counts.already_sent),
            }
        )
    )
    os.replace(tmp, path)


def read_counts_file(path: Path) -> RunCounts | None:
    """The counts a process published at ``path``; None before its first write."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return RunCounts(
        int(data["read"]),
        dict(data["dead_letters"]),
        dict(data["applied"]),
        {int(p): int(n) for p, n in data["next_offsets"].items()},
        dict(data.get("already_sent", {})),
    )


def publish_counts(path: Path, topic: str, interval_s: float = 0.5) -> None:
    """Keep ``path`` up to date with this process's counts while it runs, and at exit."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            write_counts(path, read_counts(topic))

    def final() -> None:
        stop.set()
        write_counts(path, read_counts(topic))

    write_counts(path, read_counts(topic))
    threading.Thread(target=loop, name="run-counts", daemon=True).start()
    atexit.register(final)

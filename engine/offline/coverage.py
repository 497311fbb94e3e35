"""Spine rows that a training set answers from before its views' Parquet logs begin.

The log holds what was applied: a row stamped before a view's first logged event gets that
view's empty windows (0, null, []), which is right only when nothing happened before. A
training set does not refuse such rows (serving refuses such an ``as_of``: it answers one
question, a training set a whole spine), but ``get_training_set`` says how many there are
(``coverage_notes``, the one wording of those notes), so a spine from before the history
was backfilled is not silently all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from engine.io.log_reader import first_event_time
from engine.offline.event_windows import I64
from engine.offline.service_entries import OfflineView
from engine.timefmt import time_text
from engine.wording import counted


@dataclass(frozen=True)
class ViewCoverage:
    view: str
    first_event_ms: int | None  # the view's first logged event time; None: its log holds no events
    rows_before: int  # spine rows stamped before it (every row when the log is empty)


def spine_coverage(
    views: Sequence[OfflineView], t_ms: I64, log_root: str, filesystem: pafs.FileSystem | None = None
) -> list[ViewCoverage]:
    """Per view (``views_read`` of a service), its first logged event and the spine rows
    (times ``t_ms``, from ``spine_times_ms``) before it."""
    coverage = []
    for view in views:
        if not getattr(view, "offline", True):  # no Parquet log by definition: nothing to say
            continue
        first = first_event_time(log_root, view.name, view.fingerprint_hex, filesystem)
        before = len(t_ms) if first is None else int((t_ms < first).sum())
        coverage.append(ViewCoverage(view.name, first, before))
    return coverage


def coverage_notes(coverage: Sequence[ViewCoverage]) -> list[str]:
    """One note per first-event time (views listed together) for spine rows before it."""
    by_first: dict[int | None, list[ViewCoverage]] = {}
    for entry in coverage:
        if entry.rows_before:
            by_first.setdefault(entry.first_event_ms, []).append(entry)
    notes = []
    for first, entries in by_first.items():
        names = ", ".join(e.view for e in entries)
        if first is None:
            notes.append(
                f"note: the Parquet log of {names} holds no events yet, so every row's windows of "
                f"{'it' if len(entries) == 1 else 'them'} are empty (their empty-window values: 0, null, [] or the declared default); apply events first "
                "(`streamfeat run` or `streamfeat backfill`)"
            )
            continue
        rows = entries[0].rows_before
        notes.append(
            f"note: {counted(rows, 'spine row')} {'is' if rows == 1 else 'are'} before the first event in the "
            f"Parquet log of {names}, {time_text(first)}: {'its' if rows == 1 else 'their'} windows of "
            f"{'that view' if len(entries) == 1 else 'those views'} are empty (their empty-window values: 0, null, [] or the declared default), as if nothing happened "
            "before; if something did, backfill that history first (`streamfeat backfill`)"
        )
    return notes

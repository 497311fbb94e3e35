"""Spine rows that a training set answers from before its views' Parquet logs begin.

The log holds what was applied: a row stamped before a view's first logged event gets that
view's empty windows (0, null, []), which is right only when nothing happened before. A
training set does not refuse such rows (serving refuses such an ``as_of``: it answers one
question, a training set a whole spine), but the command says how many there are, so a
spine from before the history was backfilled is not silently all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from engine.io.log_reader import first_event_time
from engine.offline.event_windows import I64
from engine.offline.service_entries import OfflineView


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

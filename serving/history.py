"""Historical ``as_of`` reads: exact for every time the Parquet log covers.

The online record of an entity holds whole-tile partials, trimmed by retention. For a
row evaluated as of ``t`` it answers exactly (docs/semantics.md, "Online reads and
``as_of``") when

1. no event of the entity newer than ``t`` was applied to it: the record's newest
   event time is at most ``t``; and
2. retention cannot have removed a tile the window needs: the oldest tile of the
   longest evaluated window ends no more than the view's retention before ``M``, an
   upper bound of every newest-event time a trim of what was read may have used:
   the record's own newest event (the write path) and the view's newest event time
   from its metadata, read *after* the records (the sweep). A missing record is exact
   under the same bound (a swept record's tiles were all older). Redis records also
   expire by wall clock, which no event time bounds: a missing Redis record stays
   ``NOT_FOUND`` (never PRESENT), as at wall-clock time.

Other rows are evaluated from the event-level Parquet log by the training-set code
(:func:`engine.offline.view_features.compute_view_features`, reading only those
entities). The log must cover ``t``: not before its first event, and not after the
time through which every applied event is published (from the shards' offset
records: a shard's unpublished events of a partition have event times at or above
that partition's watermark at the shard's log offset). Otherwise, and for times
before the log or beyond now + the source's ``max_future_skew``, the request is
refused (422) with the range that can be answered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.clock import wall_clock_ms
from engine.io.log_format import file_date
from engine.io.log_reader import first_event_time, list_log_files
from engine.kernel.tile_retention import first_kept_tile
from engine.kernel.window import Value, tile_id, window_start_ms
from engine.offline.view_features import compute_view_features
from engine.state import OffsetRecord
from engine.state.offsets import INT64_MIN
from engine.timefmt import NO_EVENT_TS
from serving.evaluate import ViewValues
from serving.exceptions import InvalidRequest
from serving.online import OnlineAccess
from serving.registry import CompiledView
from serving.request import EntityValue, FeatureRequest


def iso(ms: int) -> str:
    """A time for error messages: epoch ms and its UTC datetime."""
    try:
        text = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, ValueError, OSError):
        return str(ms)
    return f"{ms} ({text})"


def log_complete_through(records: Sequence[dict[int, OffsetRecord]], lateness_ms: int, rank: int = 1) -> int | None:
    """Latest time ``t`` such that every applied event with ``e <= t`` is in the log.

    None: every applied event is published (no bound below the applied state).
    A shard whose log offset of a partition lags its applied offset may hold
    unpublished events of it; those were accepted at or above the watermark at the log
    offset (the ``rank``-th largest event time through it minus ``allowed_lateness``,
    docs/semantics.md section 5), so the log is complete below it.
    """
    bound: int | None = None
    for shard in records:
        for record in shard.values():
            if record.log_offset >= record.applied_offset:
                continue
            top = sorted(record.top_ts_at_log, reverse=True)
            if len(top) < rank:
                return INT64_MIN  # no watermark yet at the published position
            limit = top[rank - 1] - lateness_ms - 1
            bound = limit if bound is None else min(bound, limit)
    return bound


@dataclass(frozen=True, slots=True)
class LogRange:
    """What the Parquet log of one view can answer: ``first_ms <= t <= last_ms``."""

    view: str
    first_ms: int | None  # None: the view has no log (offline=False, or nothing published)
    last_ms: int | None  # None: no bound below the applied state
    reason: str = ""  # why nothing can be answered, when first_ms is None

    def covers(self, t: int) -> bool:
        if self.first_ms is None or t < self.first_ms:
            return False
        return self.last_ms is None or t <= self.last_ms

    def describe(self) -> str:
        if self.first_ms is None:
            return f"the Parquet log of view {self.view!r} cannot answer it: {self.reason}"
        last = "the newest applied event" if self.last_ms is None else iso(self.last_ms)
        if self.last_ms is not None and self.last_ms < self.first_ms:
            return f"the Parquet log of view {self.view!r} is not published far enough to answer yet"
        return f"the Parquet log of view {self.view!r} covers {iso(self.first_ms)} .. {last}"


def window_may_be_trimmed(view: CompiledView, t: int, newest: int) -> bool:
    """Whether retention, measured against an event time up to ``newest``, may have
    removed a tile of the view's longest evaluated window as of ``t`` (semantics 7:
    a tile is kept while ``newest - its end <= retention``). Lifetime windows lose
    nothing (expired tiles are folded into the compacted partial), so a view evaluating
    only lifetime windows is never trimmed."""
    if view.max_window_ms == 0:
        return False
    g = view.spec.interval_ms
    oldest_tile = tile_id(window_start_ms(t, g, view.max_window_ms), g)
    return oldest_tile < first_kept_tile(newest, view.spec.retention_ms, g)


def trim_limit(view: CompiledView, t: int) -> int | None:
    """The newest-event time above which :func:`window_may_be_trimmed` holds for a
    window as of ``t`` (one comparison per row instead of the kernel's cutoff per row);
    None when the view is never trimmed (lifetime windows only). The kernel's cutoff
    passes the window's oldest tile once ``newest - its end > retention``; a property
    test checks this threshold against :func:`window_may_be_trimmed`."""
    if view.max_window_ms == 0:
        return None
    g = view.spec.interval_ms
    oldest_tile_end = (tile_id(window_start_ms(t, g, view.max_window_ms), g) + 1) * g
    return oldest_tile_end + view.spec.retention_ms


class _Unread:
    """``inexact_rows`` was given no freshness read after the records: it reads one."""


_UNREAD = _Unread()


class HistoricalReads:
    """Makes the online answers of an ``as_of`` request exact, or refuses it (422)."""

    def __init__(self, online: OnlineAccess, log_root: str, *, first_ttl_s: float = 10.0) -> None:
        self.online = online
        self.log_root = log_root
        self.first_ttl_s = first_ttl_s
        self._first: dict[str, tuple[float, int | None]] = {}
        # Per view: the published files of its earliest log date and their first event
        # time. Published files are never rewritten (a new publish is a new file name,
        # docs/parquet-log.md), so the same file set has the same first event time.
        self._first_files: dict[str, tuple[tuple[str, ...], int | None]] = {}
        # Per view projection (cache_prefix): (current tile, trim_limit) of its last row time.
        self._trim_limits: dict[bytes, tuple[int, int | None]] = {}

    # -- coverage ---------------------------------------------------------------

    def reads_no_files(self, request: FeatureRequest) -> bool:
        """Whether :meth:`check_range` answers from the cache (no log file is read): every
        view's first logged time is cached with at least half its ``first_ttl_s`` left."""
        now = time.monotonic()
        for view in request.service.views:
            if not view.definition.offline:
                continue
            cached = self._first.get(view.name)
            if cached is None or now - cached[0] >= self.first_ttl_s / 2:
                return False
        return True

    def first_logged(self, view: CompiledView, max_age_s: float | None = None) -> int | None:
        """The view's first logged event time (cached for ``first_ttl_s``, or ``max_age_s``
        when given: it changes only when old log files are removed)."""
        definition = view.definition
        if not definition.offline:
            return None
        now = time.monotonic()
        cached = self._first.get(view.name)
        if cached is not None and now - cached[0] < (self.first_ttl_s if max_age_s is None else max_age_s):
            return cached[1]
        files = self._first_date_files(view)
        known = self._first_files.get(view.name)
        if known is not None and known[0] == files:
            first = known[1]  # the same files: listing them is ~0.1 ms, reading them ~50 ms
        else:
            first = first_event_time(self.log_root, definition.name, definition.fingerprint_hex)
            if self._first_date_files(view) == files:  # nothing published or removed meanwhile
                self._first_files[view.name] = (files, first)
        self._first[view.name] = (now, first)
        return first

    def _first_date_files(self, view: CompiledView) -> tuple[str, ...]:
        """The published log files of the view's earliest date (what its first event time
        is read from)."""
        definition = view.definition
        _, paths = list_log_files(self.log_root, definition.name, definition.fingerprint_hex)
        first_date = min((file_date(path) for path in paths), default="")
        return tuple(sorted(path for path in paths if file_date(path) == first_date))

    def refresh_first_logged(self, request: FeatureRequest) -> None:
        """Re-read the first logged times :meth:`reads_no_files` finds too old (off the
        event loop): without it, every ``as_of`` request between half and all of
        ``first_ttl_s`` after a refresh would be sent to a worker thread."""
        for view in request.service.views:
            self.first_logged(view, max_age_s=self.first_ttl_s / 2)

    def log_range(self, view: CompiledView) -> LogRange:
        definition = view.definition
        if not definition.offline:
            return LogRange(view.name, None, None, "it is defined with offline=False")
        first = self.first_logged(view)
        if first is None:
            return LogRange(
                view.name,
                None,
                None,
                f"nothing is published under {self.log_root} (setting log_root, "
                "STREAMFEAT_LOG_ROOT: point it at the directory the dataflow writes its "
                "Parquet log to)",
            )
        offsets = self.online.read_offsets(definition.source.topic)
        if offsets is None:
            return LogRange(
                view.name,
                None,
                None,
                f"the online table holds no offset records of topic "
                f"{definition.source.topic!r}, so how far the log is published is "
                "unknown; they are written by `streamfeat run` as it applies events",
            )
        return LogRange(
            view.name,
            first,
            log_complete_through(
                offsets, definition.source.allowed_lateness_ms, definition.source.watermark_outliers + 1
            ),
        )

    def check_range(self, request: FeatureRequest) -> None:
        """Refuse times no view can answer: before a view's log or beyond now + skew."""
        times = request.times()
        latest, earliest = max(times), min(times)
        now = wall_clock_ms()
        for view in request.service.views:
            upper = now + view.max_future_skew_ms
            first = self.first_logged(view)
            if latest <= upper and (first is None or earliest >= first):
                continue
            source = view.definition.source
            lower = "" if first is None else f"{iso(first)} (the first event in the Parquet log of {view.name!r}) .. "
            bad = next(i for i, t in enumerate(times) if t > upper or (first is not None and t < first))
            raise InvalidRequest(
                f"field '{_field(request, bad)}': {iso(times[bad])} is outside the times view "
                f"{view.name!r} can answer: {lower}{iso(upper)} (now + max_future_skew of source "
                f"{source.name!r})",
                hint="ask for a time in that range",
                field=_field(request, bad),
            )

    # -- answers ----------------------------------------------------------------

    def make_exact(self, request: FeatureRequest, evaluated: Sequence[ViewValues]) -> list[ViewValues]:
        """Each view's values with every row the online record cannot answer exactly
        replaced by its value from the Parquet log."""
        return self.replace_from_log(request, evaluated, self.inexact(request, evaluated))

    def inexact(self, request: FeatureRequest, evaluated: Sequence[ViewValues]) -> list[list[int]]:
        """Per view, the rows its online record cannot answer exactly (reads view
        metadata only: no log file)."""
        times = request.times()
        fresh = self.online.fresh_freshness(request.service.views)  # after the records
        return [
            self.inexact_rows(view, values.found, values.max_event_ts, times, newest.max_event_ts_ms)
            for view, values, newest in zip(request.service.views, evaluated, fresh, strict=True)
        ]

    def replace_from_log(
        self, request: FeatureRequest, evaluated: Sequence[ViewValues], inexact: Sequence[list[int]]
    ) -> list[ViewValues]:
        """Each view's values with its ``inexact`` rows evaluated from the Parquet log."""
        times = request.times()
        return [
            values if not rows else self.from_log(request, view, values, rows, times)
            for view, values, rows in zip(request.service.views, evaluated, inexact, strict=True)
        ]

    def inexact_rows(
        self,
        view: CompiledView,
        found: Sequence[bool],
        newest_events: Sequence[int | None],
        times: Sequence[int],
        newest_view: int | _Unread | None = _UNREAD,
    ) -> list[int]:
        """The rows (indexes into ``times``) the view's online records cannot answer
        exactly; per row, whether the entity has a record and its newest event time.
        ``newest_view``: the view's newest event time read after the records (read here
        when not given)."""
        if isinstance(newest_view, _Unread):
            # Read after the records: never older than what the records were trimmed with.
            newest_view = self.online.freshness(view, cached_ok=False).max_event_ts_ms
        floor = INT64_MIN if newest_view is None else max(newest_view, INT64_MIN)
        limits: dict[int, int | None] = {}  # per distinct row time: most requests have one
        rows = []
        for i, (t, here, newest) in enumerate(zip(times, found, newest_events, strict=True)):
            if here and newest is not None and newest > t:
                rows.append(i)
                continue
            bound = newest if here and newest is not None and newest > floor else floor
            if bound == INT64_MIN:
                continue  # nothing ever applied: nothing trimmed
            limit = limits[t] if t in limits else limits.setdefault(t, self._trim_limit(view, t))
            if limit is not None and bound > limit:  # window_may_be_trimmed(view, t, bound)
                rows.append(i)
        return rows

    def _trim_limit(self, view: CompiledView, t: int) -> int | None:
        """:func:`trim_limit`, remembered per view projection for its last current tile
        (the limit depends on ``t`` only through ``t // interval``)."""
        tile = t // view.spec.interval_ms
        memo = self._trim_limits.get(view.cache_prefix)
        if memo is not None and memo[0] == tile:
            return memo[1]
        limit = trim_limit(view, t)
        self._trim_limits[view.cache_prefix] = (tile, limit)
        return limit

    def from_log(
        self,
        request: FeatureRequest,
        view: CompiledView,
        values: ViewValues,
        rows: list[int],
        times: Sequence[int],
    ) -> ViewValues:
        coverage = self.log_range(view)
        if not all(coverage.covers(times[i]) for i in rows) and self.online.reopen_if_behind(
            view.definition.source.topic
        ):
            coverage = self.log_range(view)  # the refusal rests on what the writer recorded, not a stale view
        for i in rows:
            if not coverage.covers(times[i]):
                raise InvalidRequest(
                    f"field '{_field(request, i)}': {iso(times[i])} cannot be answered exactly for row {i}: "
                    f"the online record of view {view.name!r} holds events after it or lost tiles to "
                    f"retention{_compacted_horizon(view, values.max_event_ts[i])}, and {coverage.describe()}",
                    hint="ask for a time the log covers, or wait for the log to be published",
                    field=_field(request, i),
                )
        spine = pl.DataFrame({key: [_text(request.entities[key][i]) for i in rows] for key in view.join_keys})
        t_ms: npt.NDArray[np.int64] = np.array([times[i] for i in rows], dtype=np.int64)
        nonempty: dict[str, npt.NDArray[np.bool_]] = {}
        newest_logged: list[npt.NDArray[np.int64]] = []
        computed = compute_view_features(
            view.definition,
            view.feature_names,
            spine,
            t_ms,
            self.log_root,
            only_spine_entities=True,
            nonempty_out=nonempty,
            newest_out=newest_logged,
        )
        columns = {name: list(column) for name, column in values.columns.items()}
        defaulted = {name: list(flags) for name, flags in values.defaulted.items()}
        found = list(values.found)
        newest_events = list(values.max_event_ts)
        from_log = list(values.from_log) if values.from_log is not None else [False] * len(found)
        defaults = {a.output_name: a.default for a in view.definition.aggregations}
        for name in view.feature_names:
            logged: list[Value] = computed[name].to_list()
            for j, i in enumerate(rows):
                columns[name][i] = logged[j]
                defaulted[name][i] = defaults[name] is not None and not bool(nonempty[name][j])
        for j, i in enumerate(rows):
            found[i] = any(bool(nonempty[name][j]) for name in view.feature_names)
            from_log[i] = True
            # The record's newest event may be after the row's time: say the newest the
            # answer saw (Feast's event_timestamps), never one after it.
            newest = int(newest_logged[0][j])
            newest_events[i] = newest if found[i] and newest != NO_EVENT_TS else None
        return replace(
            values,
            columns=columns,
            defaulted=defaulted,
            found=found,
            from_log=from_log,
            max_event_ts=newest_events,
        )


def _compacted_horizon(view: CompiledView, newest: int | None) -> str:
    """For a view with a lifetime window: the time before which its record holds one
    compacted partial, so no earlier ``as_of`` can be answered online (semantics 7)."""
    if not view.definition.has_lifetime_window or newest is None:
        return ""
    horizon = newest - view.definition.retention_ms
    return f" (its lifetime windows hold the tiles ending before {iso(horizon)}, the compacted horizon, as one partial)"


def _text(value: EntityValue) -> str:
    return value if isinstance(value, str) else str(value)


def _field(request: FeatureRequest, row: int) -> str:
    return f"as_of[{row}]" if request.row_times is not None else "as_of"

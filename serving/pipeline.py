"""One feature request end to end: reads + windows per view, transforms, statuses.

Status of a value (docs/serving.md), first match wins:
``INCOMPLETE`` the window reaches before the time its view joined a running stream
(engine/plan.py): the events before then are missing until a backfill;
``NOT_FOUND`` the entity has no record in the view (never seen, or expired);
``FUTURE_EVENTS`` (wall-clock reads) the record holds events stamped after the
evaluation time, which the online tiles cannot leave out, or the view's newest event
is so far ahead that retention may have dropped tiles the window needs;
``INVALID`` the window holds events but its value is not a finite number (an overflowed
sum, for example), so it is served as null;
``OVER_BOUND`` an exact ``count_distinct`` whose window holds more than its
``max_distinct`` values (served as null: there is no exact answer within the bound);
``STALE`` the view's freshness lag exceeds its ``expected_freshness``;
``DEFAULTED`` the window was empty and the aggregation's declared default was used;
``PRESENT`` otherwise. An on-demand output takes the first of NOT_FOUND /
FUTURE_EVENTS / STALE of the views it reads (INVALID when an input or its own result is
not finite), PRESENT otherwise. ``as_of`` reads are
made exact (or refused) by :mod:`serving.history` before statuses are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from starlette.concurrency import run_in_threadpool

from engine.finite import count_not_finite, not_finite
from engine.json_types import JSONObject
from engine.kernel.window import reaches_before
from engine.state import Freshness
from serving.evaluate import ViewValues, read_and_evaluate
from serving.history import HistoricalReads, window_may_be_trimmed
from serving.online import (
    DEFAULTED,
    FUTURE_EVENTS,
    INCOMPLETE,
    INVALID,
    NOT_FOUND,
    OVER_BOUND,
    PRESENT,
    STALE,
    OnlineAccess,
)
from serving.registry import CompiledService
from serving.request import FeatureRequest
from serving.transforms import run_transform


@dataclass(frozen=True, slots=True)
class FeatureResult:
    request: FeatureRequest
    # Any: a column holds one FieldType's values (int, float, str, bool, list, None); readers compute on them by kind
    columns: dict[str, list[Any]]  # every service column (join keys first), one value per row
    views: dict[str, ViewValues]
    freshness: dict[str, Freshness]
    stale: dict[str, list[bool]]  # per view, per row: freshness lag at the row's time too large
    ahead: dict[str, bool]  # per view, wall-clock reads: events after now may have cost it tiles
    # per transform output, the rows whose result was NaN or infinite (served null, INVALID)
    not_finite: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # served views that joined their running stream: fingerprint -> join time (INCOMPLETE)
    joins: Mapping[bytes, int] = field(default_factory=dict)

    def incomplete(self) -> dict[str, list[bool]]:
        """Per feature of a view that joined its stream, per row: whether its window as of
        the row's time reaches before the join (docs/semantics.md section 8)."""
        out: dict[str, list[bool]] = {}
        times = self.request.times()
        for view in self.request.service.views:
            at_ms = self.joins.get(view.fingerprint)
            if at_ms is None:
                continue
            for agg in view.spec.aggregations:
                out[agg.output_name] = [
                    bool(reaches_before(t, view.spec.interval_ms, agg.window_ms, at_ms)) for t in times
                ]
        return out

    def statuses(self) -> dict[str, list[str]]:
        """Status of every feature (join keys excluded), one per row."""
        service = self.request.service
        times = self.request.times()
        out: dict[str, list[str]] = {}
        view_status: dict[str, list[str]] = {}
        for view in service.views:
            values = self.views[view.name]
            from_log = values.from_log or [False] * len(times)
            ahead = self.ahead[view.name]
            view_status[view.name] = [
                NOT_FOUND
                if not found
                else FUTURE_EVENTS
                if not logged and (ahead or (newest is not None and newest > t))
                else STALE
                if stale
                else PRESENT
                for found, logged, newest, t, stale in zip(
                    values.found, from_log, values.max_event_ts, times, self.stale[view.name], strict=True
                )
            ]
        # count_distinct is null over a non-empty window only when over its bound.
        bounded = {
            a.output_name for view in service.views for a in view.spec.aggregations if a.function == "count_distinct"
        }
        incomplete = self.incomplete()
        for feature in service.features:
            owner = service.feature_owner[feature]
            if owner in self.views:
                row_status = view_status[owner]
                defaulted = self.views[owner].defaulted[feature]
                over = feature in bounded
                out[feature] = [
                    INCOMPLETE
                    if missing
                    else OVER_BOUND
                    if over and s != NOT_FOUND and v is None
                    else INVALID
                    if s != NOT_FOUND and not_finite(v)
                    else DEFAULTED
                    if s == PRESENT and d
                    else s
                    for s, d, v, missing in zip(
                        row_status,
                        defaulted,
                        self.columns[feature],
                        incomplete.get(feature) or [False] * len(times),
                        strict=True,
                    )
                ]
            else:
                transform = next(t for t in service.transforms if t.name == owner)
                statuses = [PRESENT] * len(times)
                for name in transform.view_names:
                    for i, s in enumerate(view_status[name]):
                        if _RANK[s] < _RANK[statuses[i]]:
                            statuses[i] = s
                inputs = [
                    self.views[source].columns[name]
                    for name, source in transform.input_views.items()
                    if source is not None
                ]
                overflowed = self.not_finite.get(feature, ())
                partial = [incomplete[name] for name in transform.input_views if name in incomplete]
                for i, value in enumerate(self.columns[feature]):
                    if any(rows[i] for rows in partial):
                        statuses[i] = INCOMPLETE
                    elif statuses[i] != NOT_FOUND and (
                        not_finite(value) or i in overflowed or any(not_finite(column[i]) for column in inputs)
                    ):
                        statuses[i] = INVALID
                out[feature] = statuses
        return out

    def sources(self) -> list[dict[str, str]]:
        """Per row and view: where the values came from, ``online`` or ``log``."""
        rows: list[dict[str, str]] = [{} for _ in range(self.request.n_rows)]
        for name, values in self.views.items():
            from_log = values.from_log or [False] * self.request.n_rows
            for row, logged in zip(rows, from_log, strict=True):
                row[name] = "log" if logged else "online"
        return rows

    def view_metadata(self) -> dict[str, JSONObject]:
        service = self.request.service
        t = self.request.t_ms
        return {
            view.name: {
                "freshness_lag_ms": self.freshness[view.name].lag_ms(t),
                "max_event_ts_ms": self.freshness[view.name].max_event_ts_ms,
                "expected_freshness_ms": view.expected_freshness_ms,
                "stale": any(self.stale[view.name]),
                # set while the view lacks its history from before it joined its stream
                "joined_at_ms": self.joins.get(view.fingerprint),
            }
            for view in service.views
        }


def _count_invalid(online: OnlineAccess, service: CompiledService, evaluated: Sequence[ViewValues]) -> None:
    """Count the non-finite values of every view in its metric: one pass over every value
    of the request, and a pass per view only when that one finds some."""
    # List-valued features hold no number: leaving them out keeps the one pass at C speed.
    every = [
        [values.columns[name] for name in view.numeric_features]
        for view, values in zip(service.views, evaluated, strict=True)
    ]
    if not count_not_finite(list(chain.from_iterable(chain.from_iterable(every)))):
        return
    for view, columns in zip(service.views, every, strict=True):
        invalid = count_not_finite(list(chain.from_iterable(columns)))
        if invalid:
            online.metrics.invalid_values.labels(view.name).inc(invalid)


# Which status an on-demand output takes when its views disagree (lowest first).
_RANK = {NOT_FOUND: 0, FUTURE_EVENTS: 1, STALE: 2, PRESENT: 3}


async def compute_async(online: OnlineAccess, request: FeatureRequest, history: HistoricalReads) -> FeatureResult:
    """:func:`compute` for a route, on the event loop as long as it reads no file (RocksDB
    and Redis reads take microseconds): wall-clock requests, and ``as_of`` requests whose
    online records answer exactly. Reading the Parquet log (rows the online records
    cannot answer, or a first-logged time to refresh) runs on a worker thread, so it
    never holds up other requests."""
    online.check_plan(request.service)
    if not request.as_of_given:
        return finish(online, request, read_online(online, request))
    if not history.reads_no_files(request):
        return await run_in_threadpool(compute, online, request, history)
    history.check_range(request)
    evaluated = read_online(online, request)
    inexact = history.inexact(request, evaluated)
    if any(inexact):
        evaluated = await run_in_threadpool(history.replace_from_log, request, evaluated, inexact)
    return finish(online, request, evaluated)


def compute(online: OnlineAccess, request: FeatureRequest, history: HistoricalReads) -> FeatureResult:
    """:func:`compute_async`'s worker-thread branch (which has checked the plan)."""
    if request.as_of_given:
        history.refresh_first_logged(request)
        history.check_range(request)
        return finish(online, request, history.make_exact(request, read_online(online, request)))
    return finish(online, request, read_online(online, request))


def read_online(online: OnlineAccess, request: FeatureRequest) -> list[ViewValues]:
    """Every view's values from the online records, as of each row's time."""
    times = request.row_times if request.row_times is not None else request.t_ms
    return read_and_evaluate(online, request.service.views, request.entities, request.n_rows, times)


def finish(online: OnlineAccess, request: FeatureRequest, evaluated: Sequence[ViewValues]) -> FeatureResult:
    """Freshness, staleness and transforms over the (exact) view values."""
    service = request.service
    n = request.n_rows
    views: dict[str, ViewValues] = {}
    freshness: dict[str, Freshness] = {}
    stale: dict[str, list[bool]] = {}
    ahead: dict[str, bool] = {}
    _count_invalid(online, service, evaluated)
    for view, values in zip(service.views, evaluated, strict=True):
        views[view.name] = values
        fresh = online.freshness(view)
        freshness[view.name] = fresh
        limit = view.expected_freshness_ms
        # At wall clock, a view's newest event far enough ahead of now (within the source's
        # max_future_skew) may have let retention drop tiles this window needs. An as_of
        # read has answered such rows from the log already.
        newest = fresh.max_event_ts_ms
        ahead[view.name] = (
            not request.as_of_given and newest is not None and window_may_be_trimmed(view, request.t_ms, newest)
        )
        if request.row_times is None:
            stale[view.name] = [fresh.is_stale(request.t_ms, limit)] * n
        else:
            stale[view.name] = [fresh.is_stale(t, limit) for t in request.row_times]
    # Values are taken from their owner by name: two views (or a view and a transform)
    # may both have a feature "x", and only the one the service or transform declared
    # may be used.
    owner = service.feature_owner
    # Any: a column holds one FieldType's values (int, float, str, bool, list, None); readers compute on them by kind
    columns: dict[str, list[Any]] = dict(request.entities)
    overflowed: dict[str, tuple[int, ...]] = {}
    for feature in service.features:
        if owner[feature] in views:
            columns[feature] = views[owner[feature]].columns[feature]
    for transform in service.transforms:
        inputs = {
            name: request.request_data[name] if source is None else views[source].columns[name]
            for name, source in transform.input_views.items()
        }
        result = run_transform(transform, inputs, n)
        for name, column in result.columns.items():
            if owner.get(name) == transform.name:
                columns[name] = column
                if name in result.not_finite:
                    overflowed[name] = result.not_finite[name]
    return FeatureResult(request, columns, views, freshness, stale, ahead, overflowed, online.joins())

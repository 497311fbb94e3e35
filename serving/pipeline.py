"""One feature request end to end: reads + windows per view, transforms, statuses.

Status of a value (docs/serving.md), first match wins:
``NOT_FOUND`` the entity has no record in the view (never seen, or expired);
``STALE`` the view's freshness lag exceeds its ``expected_freshness``;
``DEFAULTED`` the window was empty and the aggregation's declared default was used;
``PRESENT`` otherwise. An on-demand output is NOT_FOUND / STALE when one of the
views it reads is, PRESENT otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.state import Freshness
from serving.evaluate import ViewValues, read_and_evaluate
from serving.online import DEFAULTED, NOT_FOUND, PRESENT, STALE, OnlineAccess
from serving.request import FeatureRequest
from serving.transforms import run_transform


@dataclass(frozen=True, slots=True)
class FeatureResult:
    request: FeatureRequest
    columns: dict[str, list[Any]]  # every service column (join keys first), one value per row
    views: dict[str, ViewValues]
    freshness: dict[str, Freshness]
    stale: dict[str, bool]

    def statuses(self) -> dict[str, list[str]]:
        """Status of every feature (join keys excluded), one per row."""
        service = self.request.service
        n = self.request.n_rows
        out: dict[str, list[str]] = {}
        view_status: dict[str, list[str]] = {}
        for view in service.views:
            values = self.views[view.name]
            base = STALE if self.stale[view.name] else PRESENT
            view_status[view.name] = [base if f else NOT_FOUND for f in values.found]
        for feature in service.features:
            owner = service.feature_owner[feature]
            if owner in self.views:
                row_status = view_status[owner]
                defaulted = self.views[owner].defaulted[feature]
                out[feature] = [DEFAULTED if s == PRESENT and d else s
                                for s, d in zip(row_status, defaulted, strict=True)]
            else:
                transform = next(t for t in service.transforms if t.name == owner)
                statuses = [PRESENT] * n
                for name in transform.view_names:
                    for i, s in enumerate(view_status[name]):
                        if s == NOT_FOUND or (s == STALE and statuses[i] == PRESENT):
                            statuses[i] = s
                out[feature] = statuses
        return out

    def head_tile(self) -> list[bool]:
        """Per row: some record holds events newer than the evaluation time (semantics 3)."""
        t = self.request.t_ms
        rows = [False] * self.request.n_rows
        for values in self.views.values():
            for i, ts in enumerate(values.max_event_ts):
                if ts is not None and ts > t:
                    rows[i] = True
        return rows

    def view_metadata(self) -> dict[str, dict[str, Any]]:
        service = self.request.service
        t = self.request.t_ms
        return {
            view.name: {
                "freshness_lag_ms": self.freshness[view.name].lag_ms(t),
                "max_event_ts_ms": self.freshness[view.name].max_event_ts_ms,
                "expected_freshness_ms": view.expected_freshness_ms,
                "stale": self.stale[view.name],
            }
            for view in service.views
        }


def compute(online: OnlineAccess, request: FeatureRequest) -> FeatureResult:
    service = request.service
    n, t = request.n_rows, request.t_ms
    views: dict[str, ViewValues] = {}
    freshness: dict[str, Freshness] = {}
    stale: dict[str, bool] = {}
    evaluated = read_and_evaluate(online, service.views, request.entities, n, t)
    for view, values in zip(service.views, evaluated, strict=True):
        views[view.name] = values
        fresh = online.freshness(view)
        freshness[view.name] = fresh
        lag = fresh.lag_ms(t)
        stale[view.name] = lag is not None and lag > view.expected_freshness_ms
    # Values are taken from their owner by name: two views (or a view and a transform)
    # may both have a feature "x", and only the one the service or transform declared
    # may be used.
    owner = service.feature_owner
    columns: dict[str, list[Any]] = dict(request.entities)
    for feature in service.features:
        if owner[feature] in views:
            columns[feature] = views[owner[feature]].columns[feature]
    for transform in service.transforms:
        inputs = {name: request.request_data[name] if source is None else views[source].columns[name]
                  for name, source in transform.input_views.items()}  # fmt: skip
        for name, column in run_transform(transform, inputs, n).items():
            if owner.get(name) == transform.name:
                columns[name] = column
    return FeatureResult(request, columns, views, freshness, stale)

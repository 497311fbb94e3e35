"""A one-row request without metadata answered in one pass over its service's views.

The general path (:mod:`serving.pipeline`) builds per-view columns, statuses, freshness
and staleness for any number of rows; a request for one entity that asks for no
metadata needs none of that but the values. :func:`answer_one_row` reads every view's
record once, evaluates it with the same function as the general path
(:func:`serving.evaluate.evaluate_one`, window cache included), applies the same
``as_of`` checks (:class:`serving.history.HistoricalReads`), counts non-finite values in
the same metric and runs transforms through the same runner, taking each value from
where the service's :class:`serving.registry.RowPlan` says. Whatever the general path
would answer from the Parquet log (or after re-reading a first logged time on a worker
thread) is left to it: the function then returns None.
"""

from __future__ import annotations

from typing import Any

from engine.finite import count_not_finite
from engine.json_types import JSONObject
from serving.evaluate import entity_keys, evaluate_one
from serving.history import HistoricalReads
from serving.online import OnlineAccess
from serving.request import FeatureRequest
from serving.transforms import run_transform_row


def answer_one_row(online: OnlineAccess, history: HistoricalReads, request: FeatureRequest) -> JSONObject | None:
    """The v1 answer of a one-row request without metadata (what
    ``v1_body(compute_async(...))`` answers), or None when the general path must answer
    it: more rows, metadata, or an ``as_of`` the online records cannot answer exactly."""
    if request.n_rows != 1 or request.include_metadata:
        return None
    online.check_plan(request.service)
    if request.as_of_given:
        if not history.reads_no_files(request):
            return None
        history.check_range(request)
    service = request.service
    plan = service.row_plan
    views = service.views
    t_ms = request.t_ms  # one row: its time (as_of, or now)
    keys: list[bytes] = []
    for i, view in enumerate(views):
        first = plan.key_of[i]
        keys.append(keys[first] if first < i else entity_keys(view, request.entities, 1)[0])
    records = online.read_views([(view.fingerprint, (key,)) for view, key in zip(views, keys, strict=True)])
    cache = online.window_cache
    answers = [
        evaluate_one(view, found[0], t_ms, key, cache) for view, found, key in zip(views, records, keys, strict=True)
    ]
    if request.as_of_given:
        times = (t_ms,)
        fresh = online.fresh_freshness(views)  # after the records, every view in one read
        for view, found, answer, newest in zip(views, records, answers, fresh, strict=True):
            if history.inexact_rows(
                view, (found[0] is not None,), (answer.max_event_ts,), times, newest.max_event_ts_ms
            ):
                return None  # answered from the log by the general path
    # One pass over every view's numbers; a pass per view only when it finds some.
    numbers = [answer.values[p] for answer, positions in zip(answers, plan.numeric, strict=True) for p in positions]
    if count_not_finite(numbers):
        for view, positions, answer in zip(views, plan.numeric, answers, strict=True):
            invalid = count_not_finite([answer.values[p] for p in positions])
            if invalid:
                online.metrics.invalid_values.labels(view.name).inc(invalid)
    # Any: one value of each service column (int, float, str, bool, list, None)
    values: dict[str, Any] = {name: column[0] for name, column in request.entities.items()}
    for name, view_index, position in plan.features:
        values[name] = answers[view_index].values[position]
    owner = service.feature_owner
    for transform, inputs in zip(service.transforms, plan.transform_inputs, strict=True):
        outputs = run_transform_row(
            transform,
            {
                name: request.request_data[name][0] if view_index < 0 else answers[view_index].values[position]
                for name, view_index, position in inputs
            },
        )
        for name, value in outputs.items():
            if owner.get(name) == transform.name:
                values[name] = value
    return {
        "service": service.name,
        "as_of": request.as_of_echo(),
        "features": [{name: values[name] for name in service.columns}],
    }

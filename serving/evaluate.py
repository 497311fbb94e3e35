"""Window evaluation for one request: one read of every view's records, then the kernel.

One entity uses the view's precompiled :class:`engine.kernel.window_plan.WindowPlan`
(plain Python over a few tiles); several use the vectorized
:func:`engine.kernel.window_many.evaluate_many_unchecked` on all entities' tile sets,
decoded together by :func:`engine.kernel.batch_merge.decode_many`. Every row is
evaluated as of the request's time (wall clock or ``as_of``, one for all rows or one per
row). Whether an ``as_of`` answer is exact is decided in :mod:`serving.history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter, is_, is_not
from typing import cast

import numpy as np
import numpy.typing as npt

from engine.kernel import TileCodecError
from engine.kernel.batch_merge import decode_many
from engine.kernel.codec import without_sketch_section
from engine.kernel.window import Value
from engine.kernel.window_many import evaluate_many_unchecked
from engine.state.keys import encode_entity_keys, entity_key
from serving.exceptions import ServerError
from serving.online import OnlineAccess
from serving.registry import CompiledView
from serving.request import EntityValue
from serving.window_cache import CachedWindows, WindowCache, evaluate_record


@dataclass(frozen=True, slots=True)
class ViewValues:
    """One view's features for every row of a request."""

    columns: dict[str, list[Value]]  # feature -> one value per row
    found: list[bool]  # False: the entity has no record (never seen, or expired)
    defaulted: dict[str, list[bool]]  # feature -> whether a declared default replaced an empty window
    # newest event time in the entity's record; for rows answered from the log, the newest at or before the row's time
    max_event_ts: list[int | None]
    from_log: list[bool] | None = None  # rows answered from the Parquet log (None: none)


def entity_keys(view: CompiledView, entities: dict[str, list[EntityValue]], n_rows: int) -> list[bytes]:
    if len(view.join_keys) == 1:
        # The request was validated already (str or int, no separator): the bulk
        # encoder skips entity_key's per-value checks.
        return encode_entity_keys([entities[view.join_keys[0]]])
    columns = [entities[k] for k in view.join_keys]
    return [entity_key([c[i] for c in columns]) for i in range(n_rows)]


def _corrupt(view: CompiledView, exc: TileCodecError) -> ServerError:
    return ServerError(
        f"view {view.name!r}: a stored tile record cannot be decoded: {exc}",
        hint="the state is corrupt or from another version; rebuild it with a backfill",
    )


def evaluate_one(
    view: CompiledView, record: bytes | None, t_ms: int, key: bytes | None, cache: WindowCache | None
) -> CachedWindows:
    """One entity's values of ``view`` as of ``t_ms`` from its stored ``record`` (None: no
    record), through ``cache`` under the entity ``key`` when both are given."""
    try:
        return evaluate_record(view.plan, record, t_ms, cache, None if key is None else (view.cache_prefix, key))
    except TileCodecError as exc:
        raise _corrupt(view, exc) from exc


def evaluate_view(
    view: CompiledView,
    records: list[bytes | None],
    t_ms: int | Sequence[int],
    keys: Sequence[bytes] | None = None,
    cache: WindowCache | None = None,
) -> ViewValues:
    """Records are checked once, at decode; the kernel then trusts the decoded arrays.

    ``t_ms`` is one time for every row or one per row. With ``cache`` (and the rows'
    entity ``keys``), a row's answer comes from the cache when its record is the same
    bytes as when it was cached (serving/window_cache.py)."""
    plan = view.plan
    names = plan.names
    if len(records) == 1:
        raw = records[0]
        one = evaluate_one(
            view, raw, t_ms if isinstance(t_ms, int) else t_ms[0], None if keys is None else keys[0], cache
        )
        values, empty, newest = one.values, one.empty, one.max_event_ts
        return ViewValues(
            columns={n: [v] for n, v in zip(names, values, strict=True)},
            found=[raw is not None],
            defaulted={n: [e and d] for n, e, d in zip(names, empty, plan.has_default, strict=True)},
            max_event_ts=[newest],
        )
    if cache is not None and keys is not None:
        return _evaluate_many_cached(view, records, t_ms, keys, cache)
    return _evaluate_many(view, records, t_ms)[0]


def _evaluate_many_cached(
    view: CompiledView,
    records: list[bytes | None],
    t_ms: int | Sequence[int],
    keys: Sequence[bytes],
    cache: WindowCache,
) -> ViewValues:
    """:func:`_evaluate_many` for the rows the cache cannot answer (serving/window_cache.py),
    then every row's values in request order; the evaluated rows are remembered."""
    plan, names, n = view.plan, view.plan.names, len(records)
    # Apart from one-row answers: the vectorized kernel adds tile sums in another order
    # than the plan, so each path is only ever served its own values.
    prefix = view.many_cache_prefix
    answers = cache.get_rows(prefix, plan, records, keys, t_ms)
    if None in answers:
        times = [t_ms] * n if isinstance(t_ms, int) else list(t_ms)
        # A row without a record has every window empty: the empty values, which both
        # kernels give alike (nothing is summed), so it never needs the vectorized kernel.
        # They do not depend on the time; a list value is fresh per row (callers may change it).
        shared = None if plan.list_valued else evaluate_record(plan, None, times[0])
        for i in compress(range(n), map(is_, records, repeat(None))):  # the rows without a record
            answers[i] = shared if shared is not None else evaluate_record(plan, None, times[i])
        missed = list(compress(range(n), map(is_, answers, repeat(None))))
        if missed:
            part, empty, newest = _evaluate_many(
                view, [records[i] for i in missed], t_ms if isinstance(t_ms, int) else [times[i] for i in missed]
            )
            rows = zip(*(part.columns[name] for name in names), strict=True)
            for i, values, flags, ts in zip(missed, rows, empty.tolist(), newest, strict=True):
                answers[i] = CachedWindows(list(values), tuple(flags), ts)
                raw = records[i]
                if raw is not None and ts is not None:
                    cache.put((prefix, keys[i]), plan, raw, times[i], values, flags, ts, {})
    done = cast("list[CachedWindows]", answers)  # every row by now
    # Row-major answers turned into columns by zip, in C (no rows: one empty column each).
    columns = list(map(list, zip(*map(_VALUES, done), strict=True))) or [[] for _ in names]
    empties: list[list[bool]] = []  # per aggregation, read only where a default is declared
    if any(plan.has_default):
        empties = list(map(list, zip(*map(_EMPTY, done), strict=True))) or [[] for _ in names]
    return ViewValues(
        columns=dict(zip(names, columns, strict=True)),
        found=list(map(is_not, records, repeat(None))),
        defaulted={
            name: empties[k] if d else [False] * n
            for k, (name, d) in enumerate(zip(names, plan.has_default, strict=True))
        },
        max_event_ts=list(map(_NEWEST, done)),
    )


# A row answer's fields read by C-level getters (no frame per row).
_VALUES = attrgetter("values")
_EMPTY = attrgetter("empty")
_NEWEST = attrgetter("max_event_ts")


def _evaluate_many(
    view: CompiledView, records: list[bytes | None], t_ms: int | Sequence[int]
) -> tuple[ViewValues, npt.NDArray[np.bool_], list[int | None]]:
    """Every row with the vectorized kernel: the values, each row's empty flags per
    aggregation and newest event times."""
    try:
        layout = view.partials_only
        flat = (
            decode_many(view.spec.layout, records)
            if layout is None
            else decode_many(layout, [None if r is None else without_sketch_section(r, layout.width) for r in records])
        )
    except TileCodecError as exc:
        raise _corrupt(view, exc) from exc
    n = len(records)
    # decode_many sorts rows by record index: entity i's rows start at indptr[i].
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat.codes, minlength=n), out=indptr[1:])
    batch = evaluate_many_unchecked(
        view.spec,
        flat.tiles,
        flat.partials,
        indptr,
        np.arange(n, dtype=np.int64),
        t_ms if isinstance(t_ms, int) else np.asarray(t_ms, dtype=np.int64),
        flat.sketches,
    )
    defaulted = batch.defaulted
    newest = [None if r is None else ts for r, ts in zip(records, flat.max_event_ts.tolist(), strict=True)]
    values = ViewValues(
        columns=batch.to_pylists(),
        found=[r is not None for r in records],
        defaulted={name: defaulted[:, j].tolist() for j, name in enumerate(view.plan.names)},
        max_event_ts=newest,
    )
    return values, batch.empty, newest


def read_and_evaluate(
    online: OnlineAccess,
    views: Sequence[CompiledView],
    entities: dict[str, list[EntityValue]],
    n_rows: int,
    t_ms: int | Sequence[int],
) -> list[ViewValues]:
    """One read of every view's records (one round trip for Redis), then window evaluation
    of each as of ``t_ms`` (one time, or one per row)."""
    requests = [(view.fingerprint, entity_keys(view, entities, n_rows)) for view in views]
    records = online.read_views(requests)
    cache = online.window_cache
    return [
        evaluate_view(view, recs, t_ms, keys, cache)
        for view, recs, (_, keys) in zip(views, records, requests, strict=True)
    ]

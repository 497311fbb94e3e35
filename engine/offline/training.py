"""Point-in-time training sets from the Parquet feature log.

For every spine row (entity, t) the service's features are the values serving would
have answered at t (docs/semantics.md section 3). The steps, one module each:
``service_entries`` (what the service asks for), ``spine`` (checks and times),
``view_features`` (stream views from the log, exactly, at event level) and
``on_demand`` (the shared transform runner). This module plans and joins them, and
says (``coverage``) when spine rows come before a view's logged events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import polars as pl
import pyarrow.fs as pafs

from engine.kernel.window import reaches_before
from engine.offline.coverage import coverage_notes, spine_coverage
from engine.offline.event_windows import I64
from engine.offline.exceptions import TrainingSetError
from engine.offline.on_demand import compute_on_demand
from engine.offline.service_entries import (
    OfflineOnDemand,
    OfflineService,
    OfflineView,
    entry_parts,
    find_service,
    is_feature_ref,
    is_on_demand,
    is_view,
    on_demand_outputs,
    request_field_kinds_of,
    request_fields_of,
    view_features,
)
from engine.offline.spine import spine_times_ms, validate_spine
from engine.offline.view_features import compute_view_features
from engine.timefmt import iso_utc
from engine.wording import counted

#: Spine rows evaluated together. The spine is taken in event-time order, this many rows
#: at a time, and each piece reads only the log rows its windows reach: memory follows
#: the piece, not the spine (5M spine rows over 1M entities peaked at 1.3 GB at once).
DEFAULT_SPINE_CHUNK_ROWS = 1_000_000

logger = logging.getLogger(__name__)


@dataclass
class _ServicePlan:
    """Which aggregations of which view are needed (for output or as ODFV inputs), the
    on-demand views to run, the request fields they read, and the output columns."""

    views: dict[str, OfflineView] = field(default_factory=dict)
    needed: dict[str, list[str]] = field(default_factory=dict)
    on_demand: list[tuple[OfflineOnDemand, tuple[str, ...] | None]] = field(default_factory=list)
    request_fields: list[str] = field(default_factory=list)
    request_kinds: dict[str, str] = field(default_factory=dict)  # request field -> its RequestSource type
    # (owner, feature) per output column: two views (or a view and an on-demand view) may
    # both have a feature "x"; each output and each transform input is taken from the
    # one it was declared from, as serving does.
    outputs: list[tuple[str, str]] = field(default_factory=list)

    def need(self, view: OfflineView, names: Iterable[str]) -> None:
        self.views.setdefault(view.name, view)
        lst = self.needed.setdefault(view.name, [])
        lst.extend(n for n in names if n not in lst)

    def join_keys(self) -> list[str]:
        keys: list[str] = []
        for view in self.views.values():
            keys.extend(k for k in view.join_keys if k not in keys)
        return keys

    def join_key_kinds(self) -> dict[str, str]:
        """Each join key's kind in its view's source schema (``"string"``, ``"int"``)."""
        kinds: dict[str, str] = {}
        for view in self.views.values():
            types = getattr(getattr(view, "source", None), "field_types", {})
            for key in view.join_keys:
                if key in types:
                    kinds.setdefault(key, str(getattr(types[key], "value", types[key])))
        return kinds


def views_read(repo: object, service_name: str) -> tuple[OfflineView, ...]:
    """The stream views a training set of ``service_name`` reads from the Parquet log
    (its features' views and the views its on-demand features read), each once."""
    return tuple(_plan_service(find_service(repo, service_name)).views.values())


def _plan_service(service: OfflineService) -> _ServicePlan:
    plan = _ServicePlan()
    entries = [entry_parts(item) for item in service.features]  # every entry checked first
    for target, names in entries:
        if is_on_demand(target):
            plan.on_demand.append((target, names))
            plan.outputs.extend((target.name, n) for n in (names if names is not None else on_demand_outputs(target)))
            for src in target.sources:
                if is_view(src):
                    plan.need(src, view_features(src))
                elif is_feature_ref(src):
                    plan.need(src.view, src.features)
            plan.request_fields.extend(f for f in request_fields_of(target) if f not in plan.request_fields)
            for name, kind in request_field_kinds_of(target).items():
                plan.request_kinds.setdefault(name, kind)
        else:
            target = cast(OfflineView, target)  # entry_parts gives a view when not an on-demand view
            selected = names if names is not None else tuple(view_features(target))
            plan.need(target, selected)
            plan.outputs.extend((target.name, n) for n in selected)
    return plan


def _check_output_names(service_name: str, plan: _ServicePlan, spine: pl.DataFrame) -> None:
    output_names = [n for _, n in plan.outputs]
    clash = sorted({n for n in output_names if n in spine.columns})
    dupes = sorted({n for n in output_names if output_names.count(n) > 1})
    if clash or dupes:
        raise TrainingSetError(
            f"FeatureService '{service_name}': feature names {clash or dupes} collide "
            + ("with spine columns." if clash else "with each other."),
            hint="Rename the spine columns or select features with view[[...]].",
        )


def _on_demand_inputs(
    odfv: OfflineOnDemand, computed: dict[str, dict[str, pl.Series]], spine: pl.DataFrame
) -> pl.DataFrame:
    """The ODFV's inputs per spine row: its source views' features and request fields."""
    inputs: dict[str, pl.Series] = {}
    for src in odfv.sources:
        if is_view(src):
            inputs.update({n: computed[src.name][n] for n in view_features(src)})
        elif is_feature_ref(src):
            inputs.update({n: computed[src.view.name][n] for n in src.features})
    inputs.update({f: spine.get_column(f) for f in request_fields_of(odfv)})
    return pl.DataFrame(list(inputs.values()))


def _compute_features(
    plan: _ServicePlan, spine: pl.DataFrame, t_ms: I64, log_root: str, filesystem: pafs.FileSystem | None
) -> dict[str, dict[str, pl.Series]]:
    """owner -> feature -> values: stream views first, then the on-demand views on them."""
    computed: dict[str, dict[str, pl.Series]] = {}
    for name, view in plan.views.items():
        computed[name] = compute_view_features(view, plan.needed[name], spine, t_ms, log_root, filesystem)
    for odfv, names in plan.on_demand:
        inputs = _on_demand_inputs(odfv, computed, spine)
        computed.setdefault(odfv.name, {}).update(compute_on_demand(odfv, inputs, names))
    for name in plan.views:  # after the transforms, which must see an invalid input as one
        computed[name] = {feature: _null_if_not_finite(series) for feature, series in computed[name].items()}
    return computed


def _null_if_not_finite(series: pl.Series) -> pl.Series:
    """A float feature's NaN and infinities (overflowed windows) as null: where serving
    answers null with the status INVALID, a training set holds null (docs/semantics.md)."""
    if series.dtype != pl.Float64 or bool(series.is_finite().all()):
        return series
    return series.to_frame().select(pl.when(pl.col(series.name).is_finite()).then(pl.col(series.name))).to_series()


def spine_text_columns(repo: object, service_name: str) -> list[str]:
    """The spine columns of ``service_name`` that hold text: its string join keys and
    string request fields. A spine read from CSV reads them as text, so an id such as
    "0123" stays that id (a number would be "123", another entity)."""
    plan = _plan_service(find_service(repo, service_name))
    kinds = {**plan.request_kinds, **plan.join_key_kinds()}
    return [column for column, kind in kinds.items() if kind == "string"]


def _join_notes(plan: _ServicePlan, t_ms: I64, joins: Mapping[str, int]) -> list[str]:
    """One note per view that joined its stream, naming the rows whose windows of its
    needed features reach before the join."""
    notes = []
    for name, view in plan.views.items():
        at_ms = joins.get(view.fingerprint_hex)
        if at_ms is None:
            continue
        needed = set(plan.needed.get(name, ()))
        reach = np.zeros(len(t_ms), dtype=bool)
        features = []
        for agg in view.aggregations:
            if agg.output_name in needed:
                before = np.asarray(reaches_before(t_ms, view.interval_ms, agg.window_ms, at_ms), dtype=bool)
                if before.any():
                    features.append(agg.output_name)
                    reach |= before
        if reach.any():
            n_rows = int(reach.sum())
            notes.append(
                f"note: view {name!r} joined its stream at {iso_utc(at_ms)} and its history before then is not "
                f"backfilled: {counted(n_rows, 'row')} {'holds' if n_rows == 1 else 'hold'} windows of {', '.join(features)} reaching before it, which lack the "
                f"events before {iso_utc(at_ms)} (served as INCOMPLETE); backfill the view "
                f"(`streamfeat backfill --views {name}`) and build the set again"
            )
    return notes


def get_training_set(
    repo: object,
    service_name: str,
    spine: pl.DataFrame,
    log_root: str,
    timestamp_column: str = "event_timestamp",
    *,
    filesystem: pafs.FileSystem | None = None,
    spine_chunk_rows: int = DEFAULT_SPINE_CHUNK_ROWS,
    on_note: Callable[[str], None] | None = None,
    joins: Mapping[str, int] | None = None,
) -> pl.DataFrame:
    """Point-in-time correct features of ``service_name`` for every spine row.

    Returns the spine's columns (unchanged, same row order) followed by the
    service's features in declared order. Spines longer than ``spine_chunk_rows`` are
    evaluated that many rows at a time in event-time order (the values do not depend
    on it: each row's window reads the same log rows).

    Spine rows stamped before a view's first logged event (or any row, when a view's
    log holds no events) get that view's empty windows (0, null, []): right only if
    nothing happened before. Each such case gets one note, a line of text, once the set
    is computed: passed to ``on_note`` when given (e.g. ``print``, ``notes.append``),
    else logged at WARNING by the ``engine.offline.training`` logger.

    ``joins`` (view fingerprint in hex -> join time; ``AppliedPlan.joins``): views that
    joined a running stream and lack their history before it (docs/semantics.md section
    8). Rows whose windows of such a view reach before its join get the same values as
    serving (which reports them ``INCOMPLETE``), and one note per view names them.
    """
    if isinstance(spine_chunk_rows, bool) or not isinstance(spine_chunk_rows, int) or spine_chunk_rows < 1:
        raise TrainingSetError(f"get_training_set: spine_chunk_rows: expected an int >= 1, got {spine_chunk_rows!r}")
    if on_note is not None and not callable(on_note):
        raise TrainingSetError(
            f"get_training_set: on_note: expected a callable taking one str, got {type(on_note).__name__}",
            hint="pass e.g. on_note=print, or leave it out to log the notes at WARNING",
        )
    plan = _plan_service(find_service(repo, service_name))
    validate_spine(
        spine, plan.join_keys(), timestamp_column, plan.request_fields, plan.join_key_kinds(), plan.request_kinds
    )
    _check_output_names(service_name, plan, spine)
    t_ms = spine_times_ms(spine, timestamp_column)
    frame = _features_in_spine_order(plan, spine, t_ms, log_root, filesystem, spine_chunk_rows)
    coverage = spine_coverage(tuple(plan.views.values()), t_ms, log_root, filesystem)
    for note in [*coverage_notes(coverage), *_join_notes(plan, t_ms, joins or {})]:
        if on_note is None:
            logger.warning("%s", note)
        else:
            on_note(note)
    return frame


def _features_in_spine_order(
    plan: _ServicePlan,
    spine: pl.DataFrame,
    t_ms: I64,
    log_root: str,
    filesystem: pafs.FileSystem | None,
    spine_chunk_rows: int,
) -> pl.DataFrame:
    """The spine with the plan's outputs, a long spine in event-time pieces."""
    if spine.height <= spine_chunk_rows:
        computed = _compute_features(plan, spine, t_ms, log_root, filesystem)
        return spine.with_columns([computed[owner][n] for owner, n in plan.outputs])
    order = np.argsort(t_ms, kind="stable")
    pieces: list[pl.DataFrame] = []
    for begin in range(0, spine.height, spine_chunk_rows):
        rows = order[begin : begin + spine_chunk_rows]
        piece = spine[rows]
        computed = _compute_features(plan, piece, t_ms[rows], log_root, filesystem)
        pieces.append(pl.DataFrame([computed[owner][n] for owner, n in plan.outputs]))
    features = pl.concat(pieces, how="vertical_relaxed")
    # Row i of ``features`` is spine row order[i]: put every row back in its place.
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return spine.with_columns(features[back].get_columns())

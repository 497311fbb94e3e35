"""Loaded repo + applied plan -> what serving needs per service, computed once at startup.

Per stream view: its kernel ``ViewSpec``, fingerprint, join keys (with types) and
expected freshness. Per service: join keys, request fields, the views it reads, its
on-demand transforms (resolved to callables) and its ordered output features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from engine.definitions import (
    FeatureRepo,
    FeatureService,
    FieldType,
    OnDemandFeatureView,
    StreamFeatureView,
)
from engine.definitions.base import did_you_mean, timedelta_ms
from engine.definitions.exceptions import DefinitionError
from engine.json_types import JSONObject
from engine.kernel import PartialLayout, ViewSpec
from engine.kernel.layout import LIST_FUNCTIONS
from engine.kernel.window_plan import WindowPlan
from engine.plan import MISMATCH_HINT, AppliedPlan
from serving.exceptions import ServiceNotFound, ServingSetupError, short_repr


@dataclass(frozen=True)
class CompiledView:
    name: str
    spec: ViewSpec
    fingerprint: bytes
    join_keys: tuple[str, ...]
    join_key_types: Mapping[str, FieldType]
    feature_names: tuple[str, ...]
    feature_types: Mapping[str, FieldType]
    expected_freshness_ms: int
    plan: WindowPlan  # compiled single-entity evaluation of ``spec``
    definition: StreamFeatureView  # historical reads evaluate it from the Parquet log

    @cached_property
    def max_window_ms(self) -> int:
        """Longest finite window this (possibly projected) view evaluates (a lifetime
        window loses nothing to retention: expired tiles are folded, never deleted)."""
        return self.spec.max_finite_window_tiles * self.spec.interval_ms

    @cached_property
    def cache_prefix(self) -> bytes:
        """Names this projection of the view in serving caches (serving/window_cache.py):
        its fingerprint and the features it evaluates (a repr: no two differ by a suffix)."""
        return repr((self.fingerprint, self.spec.output_names)).encode()

    @cached_property
    def many_cache_prefix(self) -> bytes:
        """:attr:`cache_prefix` of the rows of many-entity requests (another kernel path)."""
        return repr((self.fingerprint, self.spec.output_names, "many")).encode()

    @cached_property
    def max_future_skew_ms(self) -> int:
        """The source's ``max_future_skew`` in milliseconds (every ``as_of`` request reads it)."""
        return self.definition.source.max_future_skew_ms

    @cached_property
    def numeric_features(self) -> tuple[str, ...]:
        """The features this projection evaluates whose values are numbers (or null): all
        but the list functions'."""
        return tuple(a.output_name for a in self.spec.aggregations if a.function not in LIST_FUNCTIONS)

    @cached_property
    def partials_only(self) -> PartialLayout | None:
        """The layout without its sketch slots when this projection evaluates none of them
        (many-entity reads then skip the records' sketch sections); None otherwise."""
        layout = self.spec.layout
        if not layout.sketch_slots or any(j is not None for j in self.spec.sketch_index):
            return None
        return replace(layout, sketch_slots=())

    @classmethod
    def from_view(cls, view: StreamFeatureView) -> CompiledView:
        types = view.source.field_types
        spec = ViewSpec.from_view(view)
        return cls(
            name=view.name,
            spec=spec,
            fingerprint=view.fingerprint,
            join_keys=view.join_keys,
            join_key_types={k: types[k] for k in view.join_keys},
            feature_names=view.feature_names,
            feature_types=dict(view.feature_types),
            expected_freshness_ms=timedelta_ms(view.expected_freshness),
            plan=WindowPlan(spec),
            definition=view,
        )

    def project(self, names: Iterable[str]) -> CompiledView:
        """This view evaluating only the features ``names`` (declared order kept).

        A service reading 3 of a view's 15 features evaluates 3 windows per entity,
        not 15; the record read and its statuses are the same.
        """
        spec = self.spec.project(names)
        if spec.output_names == self.feature_names:
            return self
        return replace(
            self,
            spec=spec,
            feature_names=spec.output_names,
            feature_types={n: self.feature_types[n] for n in spec.output_names},
            plan=WindowPlan(spec),
        )


@dataclass(frozen=True)
class CompiledTransform:
    name: str
    mode: str  # "python" | "batch"
    # Any: the user's transform function; its results are checked against output_types where it is run
    fn: Callable[..., Any]
    view_names: tuple[str, ...]  # stream views it reads
    input_types: Mapping[str, FieldType]
    output_types: Mapping[str, FieldType]
    input_views: Mapping[str, str | None]  # input -> the view it is read from (None: request data)


@dataclass(frozen=True, slots=True)
class RowPlan:
    """Where a one-row answer of a service takes each value from (serving/one_row.py),
    fixed per service. Views are named by their index in ``CompiledService.views`` and a
    value by its position in that view's ``plan.names``; a name two views share resolves
    to the last of them, as the general path's views-by-name dict does."""

    key_of: tuple[int, ...]  # per view: the first view with the same join keys (its entity key is reused)
    features: tuple[tuple[str, int, int], ...]  # per feature a view owns: (name, view, position)
    numeric: tuple[tuple[int, ...], ...]  # per view: positions of its non-list features (invalid counts)
    # per transform, per input: (input name, view, position); view -1: request data
    transform_inputs: tuple[tuple[tuple[str, int, int], ...], ...]

    @classmethod
    def of(
        cls,
        views: tuple[CompiledView, ...],
        transforms: tuple[CompiledTransform, ...],
        features: tuple[str, ...],
        owner: Mapping[str, str],
    ) -> RowPlan:
        index = {view.name: i for i, view in enumerate(views)}
        first: dict[tuple[str, ...], int] = {}
        key_of = tuple(first.setdefault(view.join_keys, i) for i, view in enumerate(views))

        def position(view: int, name: str) -> int:
            return views[view].plan.names.index(name)

        return cls(
            key_of=key_of,
            features=tuple(
                (name, index[owner[name]], position(index[owner[name]], name))
                for name in features
                if owner[name] in index
            ),
            numeric=tuple(tuple(view.plan.names.index(name) for name in view.numeric_features) for view in views),
            transform_inputs=tuple(
                tuple(
                    (name, -1, -1) if source is None else (name, index[source], position(index[source], name))
                    for name, source in transform.input_views.items()
                )
                for transform in transforms
            ),
        )


@dataclass(frozen=True)
class CompiledService:
    name: str
    description: str
    join_keys: tuple[str, ...]
    join_key_types: Mapping[str, FieldType]
    request_fields: Mapping[str, FieldType]
    views: tuple[CompiledView, ...]
    transforms: tuple[CompiledTransform, ...]
    features: tuple[str, ...]  # output feature names, declared order (join keys excluded)
    feature_types: Mapping[str, FieldType]
    feature_owner: Mapping[str, str]  # feature -> view or on-demand view name
    fingerprint: str = ""  # FeatureService.fingerprint_hex: what a trained model depends on
    ab_split: tuple[tuple[str, float], ...] = ()  # (other service, share of entity keys), by name

    @property
    def columns(self) -> tuple[str, ...]:
        """Response column order: join keys first, then the features."""
        return self.join_keys + self.features

    @cached_property
    def row_plan(self) -> RowPlan:
        """Where a one-row answer takes each value from (built on first use, once)."""
        return RowPlan.of(self.views, self.transforms, self.features, self.feature_owner)

    def _computed_by(self, feature: str) -> JSONObject:
        """How a stream view computes ``feature``: its function, column and window
        (``window_ms`` null for a lifetime window), and the function's parameters (``q``,
        ``n``, ``max_distinct``, ...) when it has any; nothing for an on-demand feature."""
        for view in self.views:
            for agg in view.spec.aggregations:
                if agg.output_name == feature:
                    parameters: JSONObject = {"parameters": dict(agg.params)} if agg.params else {}
                    return {"function": agg.function, "column": agg.column, "window_ms": agg.window_ms, **parameters}
        return {}

    def describe(self) -> JSONObject:
        return {
            "name": self.name,
            "description": self.description,
            "fingerprint": self.fingerprint,
            **({"ab_split": dict(self.ab_split)} if self.ab_split else {}),
            "inputs": {
                "entities": [{"name": k, "type": str(t)} for k, t in self.join_key_types.items()],
                "request_data": [{"name": k, "type": str(t)} for k, t in self.request_fields.items()],
            },
            "outputs": [
                {"name": f, "type": str(self.feature_types[f]), "view": self.feature_owner[f], **self._computed_by(f)}
                for f in self.features
            ],
            "views": [
                {
                    "name": v.name,
                    "join_keys": list(v.join_keys),
                    "expected_freshness_ms": v.expected_freshness_ms,
                    "aggregation_interval_ms": v.spec.interval_ms,
                }
                for v in self.views
            ],
        }


@dataclass(frozen=True)
class Registry:
    services: Mapping[str, CompiledService]
    views: Mapping[str, CompiledView]
    n_shards: int
    # Views and on-demand views a request may name feature by feature (Feast's
    # "view:feature" references): every online view applied as defined now, and the
    # on-demand views reading only such views. Compiled on first use.
    referable: Mapping[str, StreamFeatureView | OnDemandFeatureView] = field(default_factory=dict)

    def service(self, name: str) -> CompiledService:
        found = self.services.get(name)
        if found is None:
            raise ServiceNotFound(
                f"feature service {short_repr(name)} is not defined",
                hint=did_you_mean(name, self.services, "services"),
                field="service",
            )
        return found


def _compile_transform(odfv: OnDemandFeatureView) -> CompiledTransform:
    try:
        fn = odfv.resolve()
    except DefinitionError as exc:
        raise ServingSetupError(f"on-demand view {odfv.name!r}: {exc}", hint=exc.hint) from exc
    return CompiledTransform(
        name=odfv.name,
        mode=odfv.mode,
        fn=fn,
        view_names=tuple(v.name for v in odfv.source_views),
        input_types=dict(odfv.input_types),
        output_types=dict(odfv.feature_types),
        input_views=dict(odfv.input_sources),
    )


def _service_view(service: FeatureService, view: CompiledView) -> CompiledView:
    """``view`` evaluating only the features the service returns or feeds to its
    on-demand transforms (all of them if it needs none: the read still gives statuses)."""
    needed = {name for ref in service.refs if ref.view.name == view.name for name in ref.features}
    for odfv in service.on_demand_views:
        needed.update(name for name, source in odfv.input_sources.items() if source == view.name)
    return view.project(needed) if needed else view


def compile_service(service: FeatureService, views: Mapping[str, CompiledView]) -> CompiledService:
    """``service`` over ``views`` (every stream view it reads, by name)."""
    compiled_views = tuple(_service_view(service, views[v.name]) for v in service.views)
    join_key_types: dict[str, FieldType] = {}
    for view in compiled_views:
        for key, kind in view.join_key_types.items():
            if join_key_types.setdefault(key, kind) != kind:
                raise ServingSetupError(
                    f"service {service.name!r}: join key {key!r} has type {join_key_types[key]} in one "
                    f"view and {kind} in view {view.name!r}",
                    hint="give the join key one type in every source schema",
                )
    owner = {name: ref.view.name for ref in service.refs for name in ref.features}
    compiled = CompiledService(
        name=service.name,
        description=service.description,
        join_keys=service.entity_join_keys,
        join_key_types={k: join_key_types[k] for k in service.entity_join_keys},
        request_fields=dict(service.request_fields),
        views=compiled_views,
        transforms=tuple(_compile_transform(o) for o in service.on_demand_views),
        features=service.feature_names,
        feature_types=dict(service.feature_types),
        feature_owner=owner,
        fingerprint=service.fingerprint_hex,
        ab_split=tuple(service.ab_split.items()),
    )
    compiled.row_plan  # noqa: B018  # built at start-up, not by the first request
    return compiled


def build_registry(repo: FeatureRepo, plan: AppliedPlan) -> Registry:
    """Compile every service; refuse views that are not applied as they are defined now.

    Reading a view whose fingerprint differs from the applied one would read state
    written for another definition (or none at all), so it is a startup error.
    """
    if not repo.views:
        raise ServingSetupError(
            f"the repo at {repo.path or '(unnamed)'} defines no feature views: nothing to serve",
            hint="point --repo (setting repo) at the directory holding your definitions, e.g. --repo feature_defs",
        )
    views: dict[str, CompiledView] = {}
    used = {v.name: v for s in repo.services for v in s.views}
    problems = plan.mismatches(used.values())
    for name, view in sorted(used.items()):
        if not view.online:
            problems.append(f"view {name!r} is used by a service but declares online=False")
        views[name] = CompiledView.from_view(view)
    if problems:
        raise ServingSetupError(
            "the repo does not match the applied plan: " + "; ".join(problems),
            hint=f"{MISMATCH_HINT} before serving",
        )
    services = {s.name: compile_service(s, views) for s in repo.services}
    referable: dict[str, StreamFeatureView | OnDemandFeatureView] = {
        v.name: v for v in repo.views if v.name in views or (v.online and not plan.mismatches([v]))
    }
    referable.update((o.name, o) for o in repo.on_demand_views if all(v.name in referable for v in o.source_views))
    return Registry(services=services, views=views, n_shards=plan.shards, referable=referable)

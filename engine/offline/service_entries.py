"""What a FeatureService asks for: its views, on-demand views and request fields.

Duck-typed against docs/definitions-api.md, so the offline path accepts the repo's
definition objects and light stand-ins alike. Training sets read a service through
these functions; the values themselves are computed elsewhere
(``engine.offline.view_features`` and ``engine.offline.on_demand``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard

from engine.definitions.base import FieldType, closest
from engine.kernel.layout import AggregationLike, AggregationSpec, aggregation_specs
from engine.offline.exceptions import TrainingSetError

_PY_TYPES: Mapping[type, str] = {str: "string", int: "int", float: "float", bool: "bool"}


class OfflineView(Protocol):
    """What training sets read of a ``StreamFeatureView`` (docs/definitions-api.md)."""

    @property
    def name(self) -> str: ...
    @property
    def join_keys(self) -> Sequence[str]: ...
    @property
    def interval_ms(self) -> int: ...
    @property
    def fingerprint_hex(self) -> str: ...
    @property
    def aggregations(self) -> Sequence[AggregationLike]: ...
    @property
    def int_columns(self) -> frozenset[str]: ...


class WithSchema(Protocol):
    """A source with named, typed fields (a ``RequestSource`` or an ``EventSource``)."""

    @property
    def schema(self) -> Mapping[str, object]: ...


class OfflineOnDemand(WithSchema, Protocol):
    """What training sets read of an ``OnDemandFeatureView``."""

    @property
    def name(self) -> str: ...
    @property
    def fn(self) -> str: ...
    @property
    def mode(self) -> object: ...  # a str or a str-valued enum
    @property
    def sources(self) -> Sequence[object]: ...
    @property
    def input_types(self) -> Mapping[str, FieldType]: ...
    @property
    def feature_types(self) -> Mapping[str, FieldType]: ...


class OfflineFeatureRef(Protocol):
    """A selection of a stream view's features, ``view[["a", "b"]]``."""

    @property
    def view(self) -> OfflineView: ...
    @property
    def features(self) -> Sequence[str]: ...


class OfflineService(Protocol):
    """What training sets read of a ``FeatureService``: its entries, checked one by one."""

    @property
    def features(self) -> Sequence[object]: ...


def is_on_demand(obj: object) -> TypeGuard[OfflineOnDemand]:
    return hasattr(obj, "fn") and hasattr(obj, "mode") and hasattr(obj, "sources")


def is_view(obj: object) -> TypeGuard[OfflineView]:
    return hasattr(obj, "aggregations") and hasattr(obj, "interval_ms")


def is_feature_ref(obj: object) -> TypeGuard[OfflineFeatureRef]:
    """A selection of a stream view's features, ``view[["a", "b"]]``."""
    return is_view(getattr(obj, "view", None)) and hasattr(obj, "features")


def _is_request_source(obj: object) -> TypeGuard[WithSchema]:
    return hasattr(obj, "schema") and not is_view(obj) and not is_on_demand(obj)


def find_service(repo: object, name: str) -> OfflineService:
    services = getattr(repo, "services", None)
    if services is None:
        raise TrainingSetError(
            f"get_training_set: field 'repo': expected a FeatureRepo with 'services', got {type(repo).__name__}."
        )
    # Any: duck typed, a FeatureRepo or a light stand-in; entries are checked by entry_parts.
    items: Iterable[Any] = services.values() if isinstance(services, Mapping) else services
    found: list[OfflineService] = [s for s in items if getattr(s, "name", None) == name]
    if not found:
        known = sorted(str(getattr(s, "name", "?")) for s in items)
        match = closest(name, known)
        raise TrainingSetError(
            f"FeatureService '{name}' is not defined in the repo; defined: {known}.",
            hint=(f"did you mean {match!r}? " if match else "")
            + "check the service name, or run `streamfeat list` to see the definitions.",
        )
    return found[0]


def entry_parts(item: object) -> tuple[OfflineOnDemand | OfflineView, tuple[str, ...] | None]:
    """(view or odfv, selected names or None for all) of one service entry."""
    if is_on_demand(item) or is_view(item):
        return item, None
    target = getattr(item, "view", None)
    if target is None:
        raise TrainingSetError(
            f"FeatureService entry {item!r}: expected a StreamFeatureView, OnDemandFeatureView or FeatureRef."
        )
    for attr in ("features", "feature_names", "names"):
        names = getattr(item, attr, None)
        if names is not None:
            return target, tuple(names)
    return target, None


def view_features(view: OfflineView) -> dict[str, AggregationSpec]:
    """Output name -> aggregation spec of every feature of a stream view."""
    return {spec.output_name: spec for spec in aggregation_specs(view)}


def on_demand_outputs(odfv: OfflineOnDemand) -> dict[str, str]:
    """Output name -> normalized type name ("string" | "int" | "float" | "bool")."""
    out: dict[str, str] = {}
    for name, typ in dict(odfv.schema).items():
        if isinstance(typ, type) and typ in _PY_TYPES:
            out[name] = _PY_TYPES[typ]
        else:
            out[name] = str(getattr(typ, "value", typ))
    return out


def resolve_function(odfv: OfflineOnDemand) -> Callable[..., object]:
    """The ODFV's transform, imported the way serving imports it (``odfv.resolve()``).

    Objects without ``resolve`` (duck-typed stand-ins) are resolved from their
    ``"package.module:qualname"`` path here.
    """
    resolve = getattr(odfv, "resolve", None)
    if callable(resolve):
        return resolve()  # type: ignore[no-any-return]
    path = str(odfv.fn)
    module_name, sep, qualname = path.partition(":")
    try:
        if not sep or not qualname:
            raise ImportError("expected 'package.module:function'")
        obj: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': field 'fn': cannot import {path!r}: {exc}",
            hint="Make sure the module is importable (the repo directory on sys.path).",
        ) from exc
    if not callable(obj):
        raise TrainingSetError(f"OnDemandFeatureView '{odfv.name}': field 'fn': {path!r} is not callable.")
    return obj


def request_field_kinds_of(odfv: OfflineOnDemand) -> dict[str, str]:
    """The type (``"float"``, ``"int"``, ``"string"``, ``"bool"``) of each request field an
    ODFV reads from a RequestSource schema."""
    kinds: dict[str, str] = {}
    for src in odfv.sources:
        if _is_request_source(src):
            for name, kind in dict(src.schema).items():
                kinds.setdefault(name, str(getattr(kind, "value", kind)))
    return kinds


def request_fields_of(odfv: OfflineOnDemand) -> list[str]:
    """Request data fields an ODFV reads (from its RequestSource sources)."""
    declared = getattr(odfv, "request_fields", None)
    if declared is not None:
        return list(declared)
    fields: list[str] = []
    for src in odfv.sources:
        if _is_request_source(src):
            fields.extend(f for f in dict(src.schema) if f not in fields)
    return fields

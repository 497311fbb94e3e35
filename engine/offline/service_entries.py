"""What a FeatureService asks for: its views, on-demand views and request fields.

Duck-typed against docs/definitions-api.md, so the offline path accepts the repo's
definition objects and light stand-ins alike. Training sets read a service through
these functions; the values themselves are computed elsewhere
(``engine.offline.view_features`` and ``engine.offline.on_demand``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.kernel.layout import AggregationSpec
from engine.offline.exceptions import TrainingSetError

_PY_TYPES: Mapping[type, str] = {str: "string", int: "int", float: "float", bool: "bool"}


def is_on_demand(obj: Any) -> bool:
    return hasattr(obj, "fn") and hasattr(obj, "mode") and hasattr(obj, "sources")


def is_view(obj: Any) -> bool:
    return hasattr(obj, "aggregations") and hasattr(obj, "interval_ms")


def is_feature_ref(obj: Any) -> bool:
    """A selection of a stream view's features, ``view[["a", "b"]]``."""
    return is_view(getattr(obj, "view", None)) and hasattr(obj, "features")


def _is_request_source(obj: Any) -> bool:
    return hasattr(obj, "schema") and not is_view(obj) and not is_on_demand(obj)


def find_service(repo: Any, name: str) -> Any:
    services = getattr(repo, "services", None)
    if services is None:
        raise TrainingSetError(
            f"get_training_set: field 'repo': expected a FeatureRepo with 'services', got {type(repo).__name__}."
        )
    items: Iterable[Any] = services.values() if isinstance(services, Mapping) else services
    found = [s for s in items if getattr(s, "name", None) == name]
    if not found:
        known = sorted(str(getattr(s, "name", "?")) for s in items)
        raise TrainingSetError(
            f"FeatureService '{name}' is not defined in the repo; defined: {known}.",
            hint="Check the service name or run `streamfeat plan` to list definitions.",
        )
    return found[0]


def entry_parts(item: Any) -> tuple[Any, tuple[str, ...] | None]:
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


def view_features(view: Any) -> dict[str, AggregationSpec]:
    """Output name -> aggregation spec of every feature of a stream view."""
    specs = (AggregationSpec.from_aggregation(a) for a in view.aggregations)
    return {spec.output_name: spec for spec in specs}


def on_demand_outputs(odfv: Any) -> dict[str, str]:
    """Output name -> normalized type name ("string" | "int" | "float" | "bool")."""
    out: dict[str, str] = {}
    for name, typ in dict(odfv.schema).items():
        if isinstance(typ, type) and typ in _PY_TYPES:
            out[name] = _PY_TYPES[typ]
        else:
            out[name] = str(getattr(typ, "value", typ))
    return out


def resolve_function(odfv: Any) -> Callable[..., Any]:
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
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': field 'fn': cannot import {path!r}: {exc}",
            hint="Make sure the module is importable (the repo directory on sys.path).",
        ) from exc
    if not callable(obj):
        raise TrainingSetError(f"OnDemandFeatureView '{odfv.name}': field 'fn': {path!r} is not callable.")
    return obj  # type: ignore[no-any-return]


def request_fields_of(odfv: Any) -> list[str]:
    """Request data fields an ODFV reads (from its RequestSource sources)."""
    declared = getattr(odfv, "request_fields", None)
    if declared is not None:
        return list(declared)
    fields: list[str] = []
    for src in odfv.sources:
        if _is_request_source(src):
            fields.extend(f for f in dict(src.schema) if f not in fields)
    return fields

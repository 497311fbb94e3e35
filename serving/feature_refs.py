"""Feature references (``view:feature``, Feast's syntax) -> a compiled ad hoc service.

A request may name features one by one instead of naming a feature service. The
references are grouped by view (first appearance order) into a ``FeatureService``
definition, validated and compiled exactly like a declared service, so the values
and statuses are the ones a declared service with the same features would serve.
Compiled services are kept in a small LRU: a client sends the same list again and again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from engine.definitions import FeatureRef, FeatureService, StreamFeatureView
from engine.definitions.base import did_you_mean
from engine.definitions.exceptions import DefinitionError
from serving.exceptions import FeatureViewNotFound, InvalidRequest, ServingSetupError, short_repr
from serving.registry import CompiledService, CompiledView, Registry, compile_service

REFS_SERVICE = "feature_refs"
MAX_CACHED_SERVICES = 256


def parse_refs(refs: object, field: str = "features") -> tuple[tuple[str, str], ...]:
    """``["view:feature", ...]`` -> ``((view, feature), ...)``, duplicates kept once."""
    if not isinstance(refs, list) or not refs:
        raise InvalidRequest(
            f"field '{field}': expected a non-empty list of \"view:feature\" strings, got {short_repr(refs)}",
            hint='e.g. ["user_spend:amount_sum_15m", "spend_velocity:spend_velocity_ratio"]',
            field=field,
        )
    parsed: dict[tuple[str, str], None] = {}
    for i, ref in enumerate(refs):
        parts = ref.split(":") if isinstance(ref, str) else []
        if len(parts) != 2 or not all(parts):
            raise InvalidRequest(
                f"field '{field}[{i}]': expected \"view:feature\", got {short_repr(ref)}",
                hint="one colon between the view name and the feature name",
                field=f"{field}[{i}]",
            )
        parsed[(parts[0], parts[1])] = None
    return tuple(parsed)


def _position(sent: object, view_name: str, feature: str) -> int:
    """The index of the first ``view:feature`` string in the caller's list."""
    return sent.index(f"{view_name}:{feature}") if isinstance(sent, list) else 0


class FeatureRefResolver:
    """Compiles (and caches) the service of a list of feature references."""

    def __init__(self, registry: Registry, max_cached: int = MAX_CACHED_SERVICES) -> None:
        self._registry = registry
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[tuple[str, str], ...], CompiledService] = OrderedDict()

    def service(self, refs: object, field: str = "features") -> CompiledService:
        key = parse_refs(refs, field)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        compiled = self._compile(key, field, refs)
        self._cache[key] = compiled
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return compiled

    def _compile(self, refs: tuple[tuple[str, str], ...], field: str, sent: object) -> CompiledService:
        """``sent`` is the list as the caller sent it (parse_refs checked it), so an unknown
        reference is named by its own position."""
        referable = self._registry.referable
        grouped: dict[str, list[str]] = {}
        for view_name, feature in refs:
            at = f"{field}[{_position(sent, view_name, feature)}]"
            view = referable.get(view_name)
            if view is None:
                raise FeatureViewNotFound(
                    f"field '{at}': view {view_name!r} is not served here",
                    hint=did_you_mean(view_name, referable, "views")
                    + " (a view is served once `streamfeat apply` recorded it as defined now)",
                    field=at,
                )
            if feature not in view.feature_names:
                raise InvalidRequest(
                    f"field '{at}': view {view_name!r} has no feature {feature!r}",
                    hint=did_you_mean(feature, view.feature_names, "features"),
                    field=at,
                )
            grouped.setdefault(view_name, []).append(feature)
        selections: Sequence[FeatureRef] = [referable[name][features] for name, features in grouped.items()]
        try:
            service = FeatureService(name=REFS_SERVICE, features=selections)
        except DefinitionError as exc:
            raise InvalidRequest(f"field '{field}': {exc}", hint=exc.hint, field=field) from None
        views = {v.name: self._compiled_view(v) for v in service.views}
        try:
            return compile_service(service, views)
        except ServingSetupError as exc:
            raise InvalidRequest(f"field '{field}': {exc}", hint=exc.hint, field=field) from None

    def _compiled_view(self, view: StreamFeatureView) -> CompiledView:
        return self._registry.views.get(view.name) or CompiledView.from_view(view)

"""``FeatureRef`` and ``SelectableView``: a selection of one view's features, ``view[["a", "b"]]``.

Both view kinds derive from :class:`SelectableView`, so a selection needs no import of
either view module and the views, the on-demand views and the services import each
other in one direction only (view, on_demand -> feature_ref; service -> all of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.definitions.base import Checker, FieldType, FrozenMap, definition, did_you_mean
from engine.json_types import JSONObject


class SelectableView:
    """A definition whose features a service or an on-demand view can select by name."""

    # Declared here for the type checker; every subclass is a dataclass with this field.
    name: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def feature_types(self) -> Mapping[str, FieldType]:
        raise NotImplementedError

    def __getitem__(self, features: str | Sequence[str]) -> FeatureRef:
        return FeatureRef(self, (features,) if isinstance(features, str) else tuple(features))


@definition("FeatureRef")
class FeatureRef:
    """Some features of one view, in the given order: ``view[["a", "b"]]``."""

    view: SelectableView
    features: Sequence[str]

    def __post_init__(self) -> None:
        label = self.view.name if isinstance(self.view, SelectableView) else "?"
        c = Checker("FeatureRef", label)
        features: tuple[str, ...] = ()
        if not isinstance(self.view, SelectableView):
            c.add(
                "view",
                "a StreamFeatureView or OnDemandFeatureView",
                self.view,
                "write view[['a', 'b']]",
                type_error=True,
            )
        if isinstance(self.features, str | bytes) or not isinstance(self.features, Sequence):
            c.add(
                "features", "a list of feature names", self.features, "write view[['amount_sum_1h']]", type_error=True
            )
        else:
            features = tuple(self.features)
            if not features:
                c.add(
                    "features", "at least one feature name", [], "select at least one feature or pass the view itself"
                )
            if isinstance(self.view, SelectableView):
                known = self.view.feature_names
                for name in features:
                    if name not in known:
                        c.add(
                            "features",
                            f"features of view {label!r}",
                            name,
                            did_you_mean(name, known) if isinstance(name, str) else "use feature names",
                        )
            if len(set(features)) != len(features):
                c.add("features", "each feature once", list(features), "remove the repeated names")
        c.check()
        object.__setattr__(self, "features", features)

    @property
    def feature_types(self) -> Mapping[str, FieldType]:
        types = self.view.feature_types
        return FrozenMap((name, types[name]) for name in self.features)

    def to_dict(self) -> JSONObject:
        return {"view": self.view.name, "kind": type(self.view).__name__, "features": list(self.features)}

"""``FeatureService``: the named set of features a model reads, in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.definitions.base import Checker, FieldType, FrozenMap, definition
from engine.definitions.feature_ref import FeatureRef
from engine.definitions.fingerprint import fingerprint_of
from engine.definitions.on_demand import OnDemandFeatureView
from engine.definitions.view import StreamFeatureView
from engine.json_types import JSONObject

AnyView = StreamFeatureView | OnDemandFeatureView


@definition("FeatureService")
class FeatureService:
    name: str
    features: Sequence[AnyView | FeatureRef]
    description: str = ""
    # A/B test: share of entity keys (by key hash, deterministic) answered by each other
    # service, e.g. {"fraud_scoring_v2": 0.2}; the rest by this one (docs/serving.md).
    ab_split: Mapping[str, float] = FrozenMap()

    def __post_init__(self) -> None:
        c = Checker("FeatureService", self.name)
        self._check_split(c)
        c.name_field("name", self.name)
        refs: list[FeatureRef] = []
        if isinstance(self.features, str | bytes) or not isinstance(self.features, Sequence):
            c.add(
                "features",
                "a list of views or view[[...]] selections",
                self.features,
                "write features=[user_spend, merchant_activity[['merchant_txn_count_1h']]]",
                type_error=True,
            )
        else:
            if not self.features:
                c.add("features", "at least one view or selection", [], "a service without features serves nothing")
            for item in self.features:
                if isinstance(item, FeatureRef):
                    refs.append(item)
                elif isinstance(item, StreamFeatureView | OnDemandFeatureView):
                    refs.append(FeatureRef(item, item.feature_names))
                else:
                    c.add(
                        "features",
                        "StreamFeatureView, OnDemandFeatureView or view[[...]] objects",
                        item,
                        "pass the definition objects, not names",
                        type_error=True,
                    )
        owner: dict[str, str] = {}
        for ref in refs:
            for name in ref.features:
                if name in owner:
                    c.add(
                        "features",
                        "feature names unique across the service",
                        f"<{name!r} from both {owner[name]!r} and {ref.view.name!r}>",
                        "select fewer features or name the aggregations explicitly",
                    )
                owner[name] = ref.view.name
        c.text("description", self.description)
        c.check()
        object.__setattr__(self, "features", tuple(refs))

    def _check_split(self, c: Checker) -> None:
        split = self.ab_split
        if not isinstance(split, Mapping):
            c.add(
                "ab_split",
                "a mapping of service name to share",
                split,
                "write ab_split={'fraud_scoring_v2': 0.2}",
                type_error=True,
            )
            return
        for name, share in split.items():
            if not isinstance(name, str) or name == self.name:
                c.add("ab_split", "names of other feature services", name, "name the service that answers the share")
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
                c.add(f"ab_split[{name!r}]", "a share between 0 and 1 (exclusive)", share, "write e.g. 0.2 for 20%")
        total = sum(v for v in split.values() if isinstance(v, int | float))
        if total >= 1:
            c.add(
                "ab_split",
                "shares summing to less than 1 (the rest stays on this service)",
                dict(split),
                "lower the shares",
            )
        object.__setattr__(self, "ab_split", FrozenMap(sorted(split.items())))

    @property
    def refs(self) -> tuple[FeatureRef, ...]:
        return self.features  # type: ignore[return-value]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for ref in self.refs for name in ref.features)

    @property
    def feature_types(self) -> Mapping[str, FieldType]:
        return FrozenMap(item for ref in self.refs for item in ref.feature_types.items())

    @property
    def views(self) -> tuple[StreamFeatureView, ...]:
        """Stream views whose state the service reads (directly or through on-demand views)."""
        out: list[StreamFeatureView] = []
        for ref in self.refs:
            if isinstance(ref.view, OnDemandFeatureView):
                inner = ref.view.source_views
            elif isinstance(ref.view, StreamFeatureView):
                inner = (ref.view,)
            else:  # FeatureRef.__post_init__ accepts only the two view kinds
                raise TypeError(f"FeatureRef.view: expected a view, got {type(ref.view).__name__}")
            for view in inner:
                if view not in out:
                    out.append(view)
        return tuple(out)

    @property
    def on_demand_views(self) -> tuple[OnDemandFeatureView, ...]:
        return tuple(ref.view for ref in self.refs if isinstance(ref.view, OnDemandFeatureView))

    @property
    def entity_join_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for view in self.views:
            keys.extend(k for k in view.join_keys if k not in keys)
        return tuple(keys)

    @property
    def request_fields(self) -> Mapping[str, FieldType]:
        return FrozenMap(item for odfv in self.on_demand_views for item in odfv.request_fields.items())

    @property
    def fingerprint_hex(self) -> str:
        """What a model trained on this service depends on: the features in order, the
        fingerprint of every stream view read and each on-demand transform (names of the
        service and its description do not count)."""
        parts: list[JSONObject] = []
        for ref in self.refs:
            view = ref.view
            reads: JSONObject
            if isinstance(view, StreamFeatureView):
                reads = {"view": view.fingerprint_hex}
            elif isinstance(view, OnDemandFeatureView):
                transform = {k: v for k, v in view.to_dict().items() if k not in ("name", "description")}
                reads = {"on_demand": transform, "views": [v.fingerprint_hex for v in view.source_views]}
            else:
                raise TypeError(
                    f"FeatureService {self.name!r}: a reference to {type(view).__name__}, "
                    "expected a StreamFeatureView or an OnDemandFeatureView"
                )
            parts.append({**reads, "features": list(ref.features)})
        return fingerprint_of(parts).hex()

    def to_dict(self) -> JSONObject:
        split = {"ab_split": dict(self.ab_split)} if self.ab_split else {}
        return {
            "name": self.name,
            "features": [ref.to_dict() for ref in self.refs],
            "description": self.description,
            **split,
        }

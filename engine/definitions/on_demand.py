"""``OnDemandFeatureView``: a transform computed at request time from features and request fields.

The transform is referenced by import path ``"package.module:qualname"`` and imported
only by ``resolve()`` (at plan or serve time, or for the first ``to_dict()``), never pickled
and never imported when the definition itself is imported. ``to_dict()`` carries the
digest of the transform's code (``engine.definitions.code_digest``), so editing the
function is a definition change: ``streamfeat plan`` shows it and the service fingerprint
changes.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from engine.definitions.base import (
    Checker,
    FieldType,
    FrozenMap,
    definition,
    did_you_mean,
    parse_schema,
)
from engine.definitions.code_digest import code_digest
from engine.definitions.exceptions import DefinitionError
from engine.definitions.feature_ref import FeatureRef, SelectableView
from engine.definitions.source import RequestSource
from engine.definitions.view import StreamFeatureView
from engine.json_types import JSONObject

MODES = ("python", "batch")
_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")

# A whole stream view, a selection of its features (``view[["a", "b"]]``) or request data.
OnDemandSource = StreamFeatureView | FeatureRef | RequestSource


@definition("OnDemandFeatureView")
class OnDemandFeatureView(SelectableView):
    name: str
    sources: Sequence[OnDemandSource]
    schema: Mapping[str, FieldType | str | type]
    mode: str = "python"
    fn: str = dataclasses.field(kw_only=True)
    description: str = ""
    # Set only by the decorator form: the decorated function itself, because the module
    # attribute it was defined under now holds this view instead of the function.
    _function: Callable[..., object] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        c = Checker("OnDemandFeatureView", self.name)
        c.name_field("name", self.name)
        sources: tuple[OnDemandSource, ...] = ()
        valid = True
        if isinstance(self.sources, str | bytes) or not isinstance(self.sources, Sequence):
            valid = False
            c.add(
                "sources",
                "a list of StreamFeatureView / view[[...]] / RequestSource objects",
                self.sources,
                "write sources=[user_spend[['amount_sum_15m']], transaction_request]",
                type_error=True,
            )
        else:
            sources = tuple(self.sources)
            if not sources:
                c.add(
                    "sources",
                    "at least one source",
                    self.sources,
                    "list the views and request sources the transform reads",
                )
            for item in sources:
                if isinstance(item, FeatureRef):
                    if not isinstance(item.view, StreamFeatureView):
                        valid = False
                        c.add(
                            "sources",
                            "selections of stream views",
                            f"<{item.view.name}[{list(item.features)}]>",
                            "an on-demand view reads stream views and request sources, not other on-demand views",
                            type_error=True,
                        )
                elif not isinstance(item, StreamFeatureView | RequestSource):
                    valid = False
                    c.add(
                        "sources",
                        "StreamFeatureView, view[[...]] selection or RequestSource objects",
                        item,
                        "pass the definition objects themselves, not names",
                        type_error=True,
                    )
        schema = parse_schema(c, "schema", self.schema)
        if c.type_is("mode", self.mode, str, "a mode name", f"use one of {MODES}") and self.mode not in MODES:
            c.add("mode", f"one of {', '.join(MODES)}", self.mode, did_you_mean(self.mode, MODES))
        if c.type_is(
            "fn",
            self.fn,
            str,
            "an import path 'package.module:function'",
            "reference the function by import path, e.g. fn='feature_defs.transforms:spend_velocity'",
        ) and not _PATH_RE.match(self.fn):
            c.add(
                "fn",
                "an import path 'package.module:function'",
                self.fn,
                "separate the module from the function with ':', e.g. 'feature_defs.transforms:spend_velocity'",
            )
        c.text("description", self.description)
        if valid:
            seen: dict[str, str] = {}
            for src in sources:
                for feature in _source_fields(src):
                    if feature in seen:
                        c.add(
                            "sources",
                            "distinct input names across sources",
                            f"<{feature!r} in both {seen[feature]!r} and {_source_name(src)!r}>",
                            "name the aggregations of one view explicitly so inputs do not collide",
                        )
                    seen[feature] = _source_name(src)
        c.check()
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "schema", schema)

    @property
    def field_types(self) -> Mapping[str, FieldType]:
        return self.schema  # type: ignore[return-value]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.schema)

    @property
    def feature_types(self) -> Mapping[str, FieldType]:
        return self.field_types

    @property
    def source_views(self) -> tuple[StreamFeatureView, ...]:
        """The stream views the transform reads (whole or a selection), each once."""
        views: dict[str, StreamFeatureView] = {}
        for src in self.sources:
            view = src if isinstance(src, StreamFeatureView) else getattr(src, "view", None)
            if isinstance(view, StreamFeatureView):
                views.setdefault(view.name, view)
        return tuple(views.values())

    @property
    def input_sources(self) -> Mapping[str, str | None]:
        """Where each input comes from: its stream view's name, or None for request data.

        Two views may have features of the same name; a transform's input is the one of
        the source it was declared from, whatever else a service reads.
        """
        return FrozenMap(
            (name, None if isinstance(src, RequestSource) else _source_name(src))
            for src in self.sources
            for name in _source_fields(src)
        )

    @property
    def request_sources(self) -> tuple[RequestSource, ...]:
        return tuple(s for s in self.sources if isinstance(s, RequestSource))

    @property
    def input_types(self) -> Mapping[str, FieldType]:
        """Every input the transform receives (view features and request fields), by name."""
        return FrozenMap(item for src in self.sources for item in _source_fields(src).items())

    @property
    def request_fields(self) -> Mapping[str, FieldType]:
        return FrozenMap(item for src in self.request_sources for item in src.field_types.items())

    def resolve(self) -> Callable[..., object]:
        """Imports the transform; raises DefinitionError naming the path if that fails."""
        module_name, _, qualname = self.fn.partition(":")
        c = Checker("OnDemandFeatureView", self.name)
        try:
            # Any: whatever attribute fn names; checked callable below.
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            c.add_raw(
                "fn",
                f"an importable function at {self.fn!r}",
                f"{type(exc).__name__}: {exc}",
                "check the module path and the function name (the repo's parent directory must be on sys.path)",
            )
            c.check()
        if isinstance(target, OnDemandFeatureView) and target._function is not None:
            return target._function
        if not callable(target):
            c.add_raw("fn", "a callable", f"{type(target).__name__} at {self.fn!r}", "point fn at a function")
            c.check()
        return target  # type: ignore[no-any-return]

    @cached_property
    def code_digest(self) -> str:
        """Digest of the transform's code (``engine.definitions.code_digest``), computed once
        per definition object: the code this process imported. When ``fn`` does not import
        (a definition made in memory; ``load_repo`` refuses such a repo) it says so instead."""
        try:
            function = self.resolve()
        except DefinitionError:
            return f"{UNRESOLVED_CODE} {self.fn}"
        return code_digest(function)

    def to_dict(self) -> JSONObject:
        return {
            "name": self.name,
            "sources": [_source_dict(s) for s in self.sources],
            "schema": {k: str(v) for k, v in self.schema.items()},
            "mode": self.mode,
            "fn": self.fn,
            CODE_KEY: self.code_digest,
            "description": self.description,
        }


#: The key of the transform's code digest in ``OnDemandFeatureView.to_dict()``.
CODE_KEY = "code"
UNRESOLVED_CODE = "unresolved: no importable function at"


def code_change(before: Mapping[str, object], after: Mapping[str, object]) -> str | None:
    """How the transform's code differs between two ``to_dict()`` of an on-demand view, as
    one plan line (None: the same). A definition recorded before code digests existed
    has none: it reads as changed once."""
    old, new = before.get(CODE_KEY), after.get(CODE_KEY)
    if old == new:
        return None
    if old is None:
        return (
            f"transform code: digest {new} recorded (the applied plan predates code digests, so the view "
            "reads as changed once)"
        )
    return f"transform code changed: {old} -> {new}"


def _source_fields(src: OnDemandSource) -> Mapping[str, FieldType]:
    return src.field_types if isinstance(src, RequestSource) else src.feature_types


def _source_name(src: OnDemandSource) -> str:
    return src.name if isinstance(src, StreamFeatureView | RequestSource) else src.view.name


def _source_dict(src: OnDemandSource) -> JSONObject:
    if isinstance(src, StreamFeatureView | RequestSource):
        return {"kind": type(src).__name__, "name": src.name}
    return {"kind": "FeatureRef", "name": src.view.name, "features": list(src.features)}


def on_demand_feature_view(
    *,
    name: str,
    sources: Sequence[OnDemandSource],
    schema: Mapping[str, FieldType | str | type],
    mode: str = "python",
    description: str = "",
) -> Callable[[Callable[..., object]], OnDemandFeatureView]:
    """Decorator form: the decorated module-level function becomes the transform."""

    def wrap(function: Callable[..., object]) -> OnDemandFeatureView:
        path = f"{function.__module__}:{function.__qualname__}"
        if "<locals>" in function.__qualname__ or "<lambda>" in function.__qualname__:
            c = Checker("OnDemandFeatureView", name)
            c.add_raw("fn", "a module-level function", path, "define the transform at the top level of a module")
            c.check()
        view = OnDemandFeatureView(
            name=name, sources=sources, schema=schema, mode=mode, fn=path, description=description
        )
        object.__setattr__(view, "_function", function)
        return view

    return wrap

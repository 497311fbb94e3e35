"""``StreamFeatureView``: windowed aggregations of one event source per entity."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from engine.definitions.aggregation import Aggregation
from engine.definitions.base import (
    NUMERIC_TYPES,
    Checker,
    FieldType,
    FrozenMap,
    definition,
    did_you_mean,
    is_number,
    timedelta_ms,
)
from engine.definitions.entity import Entity
from engine.definitions.feature_ref import SelectableView
from engine.definitions.filters import Compare, Expr
from engine.definitions.fingerprint import fingerprint_of
from engine.definitions.source import EventSource
from engine.json_types import JSONObject
from engine.kernel.layout import ANY_COLUMN_FUNCTIONS

_ORDERING_OPS = frozenset({"<", "<=", ">", ">="})
VERSION_SUFFIX = re.compile(r"__v([0-9]+)\Z")


@definition("StreamFeatureView")
class StreamFeatureView(SelectableView):
    name: str
    source: EventSource
    entities: Sequence[Entity]
    aggregations: Sequence[Aggregation]
    aggregation_interval: timedelta = timedelta(minutes=1)
    filter: Expr | None = None
    online: bool = True
    offline: bool = True
    expected_freshness: timedelta = timedelta(minutes=5)
    description: str = ""
    tags: Mapping[str, str] = FrozenMap()
    # A new version of a view runs beside the old one (same topic, same pass) under the
    # name "<name>__v<version>", with its own state and fingerprint; services pin one.
    version: int = 1

    def __post_init__(self) -> None:
        c = Checker("StreamFeatureView", self.name)
        if c.name_field("name", self.name):
            self._version_name(c)
        source = self.source if isinstance(self.source, EventSource) else None
        if source is None:
            c.add("source", "an EventSource", self.source, "pass the EventSource object, not its name", type_error=True)
        schema: Mapping[str, FieldType] = source.field_types if source else {}
        entities = _sequence_of(c, "entities", self.entities, Entity, "entities=[user]")
        aggregations = _sequence_of(
            c,
            "aggregations",
            self.aggregations,
            Aggregation,
            "aggregations=[Aggregation(column='amount', function='sum', window=timedelta(hours=1))]",
        )
        # A percentile over a declared list of q is one aggregation (one feature) per q.
        aggregations = tuple(one for agg in aggregations for one in agg.expand())
        interval = None
        if not isinstance(self.aggregation_interval, timedelta):
            c.duration("aggregation_interval", self.aggregation_interval, minimum_ms=1000)
        elif self.aggregation_interval.microseconds or self.aggregation_interval < timedelta(seconds=1):
            c.add(
                "aggregation_interval",
                "a whole number of seconds, at least 1 s",
                self.aggregation_interval,
                "use e.g. timedelta(minutes=1)",
            )
        else:
            interval = timedelta_ms(self.aggregation_interval)
        if source is not None:
            self._check_keys(c, entities, schema)
            self._check_aggregations(c, aggregations, schema, interval)
        if self.filter is not None:
            if not isinstance(self.filter, Expr):
                c.add(
                    "filter",
                    "a filter expression such as col('event_type') == 'PURCHASE'",
                    self.filter,
                    "build filters with col(...) from engine.definitions",
                    type_error=True,
                )
            elif source is not None:
                _check_filter(c, self.filter, schema, source.name)
        for flag in ("online", "offline"):
            c.type_is(flag, getattr(self, flag), bool, "True or False", f"write {flag}=True")
        c.duration("expected_freshness", self.expected_freshness, minimum_ms=1)
        c.text("description", self.description)
        tags = _tags(c, self.tags)
        c.check()
        object.__setattr__(self, "entities", entities)
        object.__setattr__(self, "aggregations", aggregations)
        object.__setattr__(self, "tags", tags)

    def _check_keys(self, c: Checker, entities: tuple[Entity, ...], schema: Mapping[str, FieldType]) -> None:
        if not entities and _is_list(self.entities):
            c.add("entities", "at least one Entity", self.entities, "entities=[user]")
        seen: set[str] = set()
        for entity in entities:
            for key in entity.join_keys:
                if key in seen:
                    c.add("entities", "distinct join keys across entities", key, "each join key may appear once")
                seen.add(key)
                if key not in schema:
                    c.add(
                        "entities",
                        f"join key {key!r} (of entity {entity.name!r}) in the source schema",
                        f"<not among {sorted(schema)}>",
                        did_you_mean(key, schema),
                    )
                elif schema[key] not in (FieldType.STRING, FieldType.INT):
                    c.add(
                        "entities",
                        f"join key {key!r} of type string or int",
                        f"<{schema[key]}>",
                        "use a string or int field as join key",
                    )

    def _check_aggregations(
        self, c: Checker, aggregations: tuple[Aggregation, ...], schema: Mapping[str, FieldType], interval: int | None
    ) -> None:
        if not aggregations and _is_list(self.aggregations):
            c.add(
                "aggregations",
                "at least one Aggregation",
                self.aggregations,
                "a view without aggregations serves nothing",
            )
        names: set[str] = set()
        for agg in aggregations:
            where = f"aggregations[{agg.output_name}]"
            if agg.column not in schema:
                c.add(f"{where}.column", "a field of the source schema", agg.column, did_you_mean(agg.column, schema))
            elif agg.function not in ANY_COLUMN_FUNCTIONS and schema[agg.column] not in NUMERIC_TYPES:
                c.add(
                    f"{where}.column",
                    f"a numeric (int/float) column for {agg.function}",
                    f"<{agg.column!r} of type {schema[agg.column]}>",
                    f"aggregate a numeric column with {agg.function}; only "
                    f"{', '.join(sorted(ANY_COLUMN_FUNCTIONS))} accept non-numeric columns",
                )
            else:
                _check_int_default(c, where, agg, schema[agg.column])
            if interval is not None and agg.window_ms is not None and agg.window_ms % interval:
                c.add(
                    f"{where}.window",
                    f"a whole multiple of aggregation_interval ({interval} ms)",
                    f"<{agg.window_ms} ms>",
                    "make the window a multiple of the interval or shorten the interval",
                )
            if agg.output_name in names:
                c.add(
                    f"{where}.name",
                    "an output name unique within the view",
                    agg.output_name,
                    "give one of the aggregations an explicit name=...",
                )
            names.add(agg.output_name)

    def _version_name(self, c: Checker) -> None:
        """Checks ``version`` and gives a version > 1 its registered name ``<name>__v<version>``."""
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            c.add("version", "an integer >= 1", self.version, "write version=2 for the second version of a view")
            return
        found = VERSION_SUFFIX.search(self.name)
        if found is None:
            if self.version > 1:
                object.__setattr__(self, "name", f"{self.name}__v{self.version}")
        elif int(found.group(1)) != self.version:
            c.add(
                "name",
                f"a name without a '__v<n>' suffix, or the suffix '__v{self.version}' of version",
                self.name,
                "give the base name and version=N; the version suffix is added for you",
            )

    @property
    def family(self) -> str:
        """The view's name without its version suffix: what every version shares."""
        return VERSION_SUFFIX.sub("", self.name)

    # ---- derived properties -------------------------------------------------

    @cached_property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(key for entity in self.entities for key in entity.join_keys)

    @cached_property
    def interval_ms(self) -> int:
        return timedelta_ms(self.aggregation_interval)

    @cached_property
    def max_window_ms(self) -> int:
        """Longest finite window (0 when every window is lifetime)."""
        return max((agg.window_ms for agg in self.aggregations if agg.window_ms is not None), default=0)

    @cached_property
    def has_lifetime_window(self) -> bool:
        """Whether some aggregation has a lifetime window: retention then folds expired
        tiles into one compacted partial per entity instead of deleting them."""
        return any(agg.window_ms is None for agg in self.aggregations)

    @cached_property
    def retention_ms(self) -> int:
        return self.max_window_ms + self.source.allowed_lateness_ms + self.interval_ms

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """Distinct aggregated columns, sorted (the partial layout's column order)."""
        return tuple(sorted({agg.column for agg in self.aggregations}))

    @property
    def column_types(self) -> Mapping[str, FieldType]:
        """Schema type of each aggregated column; a non-numeric one is only counted or timed."""
        types = self.source.field_types
        return FrozenMap((name, types[name]) for name in self.columns)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(agg.output_name for agg in self.aggregations)

    @property
    def int_columns(self) -> frozenset[str]:
        """Aggregated columns that are int fields: their min, max and last are ints."""
        return frozenset(name for name, ftype in self.column_types.items() if ftype == FieldType.INT)

    @property
    def feature_types(self) -> Mapping[str, FieldType]:
        """Type of each served feature (``Aggregation.output_type`` over its column's type)."""
        types = self.source.field_types
        return FrozenMap((agg.output_name, agg.output_type(types[agg.column])) for agg in self.aggregations)

    def fingerprint_dict(self) -> JSONObject:
        """Exactly what changes the partials (names, tags, defaults, flags do not); a version
        above 1 counts too, so two versions never share state even when defined alike."""
        src = self.source
        versioned = {"version": self.version} if self.version > 1 else {}
        return {
            **versioned,
            "source": {
                "name": src.name,
                "topic": src.topic,
                "timestamp_field": src.timestamp_field,
                "timestamp_format": src.timestamp_format,
                "allowed_lateness_ms": src.allowed_lateness_ms,
            },
            "join_keys": list(self.join_keys),
            "interval_ms": self.interval_ms,
            "filter": self.filter.to_dict() if self.filter is not None else None,
            "aggregations": [_fingerprint_entry(a) for a in sorted(self.aggregations, key=_fingerprint_order)],
        }

    @cached_property
    def fingerprint(self) -> bytes:
        # Cached: the definition is immutable and the write path asks for it per batch.
        return fingerprint_of(self.fingerprint_dict())

    @cached_property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    def to_dict(self) -> JSONObject:
        return {
            "name": self.name,
            "source": self.source.to_dict(),
            "entities": [e.to_dict() for e in self.entities],
            "aggregations": [a.to_dict() for a in self.aggregations],
            "aggregation_interval_ms": self.interval_ms,
            "filter": self.filter.to_dict() if self.filter is not None else None,
            "online": self.online,
            "offline": self.offline,
            "expected_freshness_ms": timedelta_ms(self.expected_freshness),
            "description": self.description,
            "tags": dict(sorted(self.tags.items())),
            **({"version": self.version} if self.version > 1 else {}),
        }


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


# Any: items of the caller's ``kind``, checked by isinstance one by one below; mypy cannot
# narrow a whole tuple from that check, so a TypeVar here would need a cast.
def _sequence_of(c: Checker, field: str, value: object, kind: type, example: str) -> tuple[Any, ...]:
    if not _is_list(value):
        c.add(field, f"a list of {kind.__name__}", value, f"write {example}", type_error=True)
        return ()
    # Any: as in the return type (each item is checked against ``kind`` next).
    items: tuple[Any, ...] = tuple(value)  # type: ignore[arg-type]
    bad = [item for item in items if not isinstance(item, kind)]
    for item in bad:
        c.add(field, f"{kind.__name__} objects", item, f"write {example}", type_error=True)
    return () if bad else items


def _check_filter(c: Checker, expr: Expr, schema: Mapping[str, FieldType], source_name: str) -> None:
    for leaf in expr.leaves():
        if leaf.field not in schema:
            c.add("filter", f"fields of source {source_name!r}", leaf.field, did_you_mean(leaf.field, schema))
            continue
        ftype = schema[leaf.field]
        values = (leaf.value,) if isinstance(leaf, Compare) else leaf.values
        for value in values:
            if not _literal_fits(ftype, value):
                c.add(
                    "filter",
                    f"a literal of type {ftype} for {leaf.field!r}",
                    value,
                    f"compare {leaf.field!r} with a {ftype} value",
                )
        if isinstance(leaf, Compare) and leaf.op in _ORDERING_OPS and ftype == FieldType.BOOL:
            c.add("filter", "== or != for a bool field", f"<{leaf!r}>", "bool fields are only tested for equality")


def _check_int_default(c: Checker, where: str, agg: Aggregation, column_type: FieldType) -> None:
    """An int feature's default is a whole number (``-1.0`` serves as ``-1``), never
    fractional: one feature's values share one type (docs/semantics.md section 3)."""
    default = agg.default
    if agg.output_type(column_type) == FieldType.INT and isinstance(default, float) and not default.is_integer():
        c.add(
            f"{where}.default",
            f"a whole number: {agg.function}({agg.column}) is an int feature",
            default,
            f"write e.g. default={math.floor(default)}, or aggregate a float column for float values",
        )


def _literal_fits(ftype: FieldType, value: object) -> bool:
    if ftype == FieldType.STRING:
        return isinstance(value, str)
    if ftype == FieldType.BOOL:
        return isinstance(value, bool)
    return is_number(value)


def _tags(c: Checker, tags: object) -> FrozenMap:
    if not isinstance(tags, Mapping):
        c.add("tags", "a mapping of str to str", tags, "write tags={'team': 'risk'}", type_error=True)
        return FrozenMap()
    bad = [(k, v) for k, v in tags.items() if not isinstance(k, str) or not isinstance(v, str)]
    for key, value in bad:
        c.add(f"tags[{key!r}]", "str keys and str values", value, "write tags={'team': 'risk'}", type_error=True)
    return FrozenMap() if bad else FrozenMap(sorted(tags.items()))


def _fingerprint_params(agg: Aggregation) -> list[list[str | int | float]]:
    return [list(p) for p in agg.params]


def _fingerprint_entry(agg: Aggregation) -> JSONObject:
    entry: JSONObject = {"column": agg.column, "function": agg.function, "window_ms": agg.window_ms}
    if agg.params:  # sketch parameters change the state; views without them keep their fingerprint
        entry["params"] = _fingerprint_params(agg)
    return entry


def _fingerprint_order(agg: Aggregation) -> tuple[str, str, int, str]:
    """The order of a fingerprint's aggregations (the fingerprint does not depend on the
    order they are declared in)."""
    window = -1 if agg.window_ms is None else agg.window_ms
    return agg.column, agg.function, window, str(_fingerprint_params(agg)) if agg.params else ""

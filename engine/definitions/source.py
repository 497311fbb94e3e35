"""Sources: ``EventSource`` (a Kafka topic of events) and ``RequestSource`` (request fields)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta

from engine.definitions.base import (
    FIELD_RE,
    Checker,
    FieldType,
    FrozenMap,
    definition,
    did_you_mean,
    parse_schema,
    timedelta_ms,
)
from engine.definitions.constraint import Constraint
from engine.io.batches import dlq_topic_for
from engine.io.timestamps import TIMESTAMP_FORMATS
from engine.json_types import JSONObject

#: How many of a partition's largest event times the watermark may ignore (docs/semantics.md
#: section 5); the offset record keeps watermark_outliers + 1 times per position.
MAX_WATERMARK_OUTLIERS = 15
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")


@definition("EventSource")
class EventSource:
    name: str
    topic: str
    timestamp_field: str
    schema: Mapping[str, FieldType | str | type]
    timestamp_format: str = "epoch_millis"
    allowed_lateness: timedelta = timedelta(0)
    history: Sequence[str] = ()
    max_payload_bytes: int = 65536
    max_future_skew: timedelta = timedelta(minutes=5)
    watermark_outliers: int = 1
    constraints: Mapping[str, Constraint] = FrozenMap()
    description: str = ""

    def __post_init__(self) -> None:
        c = Checker("EventSource", self.name)
        c.name_field("name", self.name)
        _check_topic_and_time_field(c, self.topic, self.timestamp_field)
        schema = parse_schema(c, "schema", self.schema)
        _check_timestamp_format(c, self.timestamp_format)
        _check_timestamp_type(c, schema, self.timestamp_field, self.timestamp_format)
        c.duration("allowed_lateness", self.allowed_lateness, minimum_ms=0, allow_zero=True)
        history = _check_history(c, self.history)
        _check_payload_limit(c, self.max_payload_bytes)
        c.duration("max_future_skew", self.max_future_skew, minimum_ms=1)
        _check_watermark_outliers(c, self.watermark_outliers)
        constraints = _check_constraints(c, self.constraints, schema)
        c.text("description", self.description)
        c.check()
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "constraints", constraints)

    @property
    def field_types(self) -> Mapping[str, FieldType]:
        """The normalized schema, typed (``schema`` holds the same FrozenMap)."""
        return self.schema  # type: ignore[return-value]

    @property
    def allowed_lateness_ms(self) -> int:
        return timedelta_ms(self.allowed_lateness)

    @property
    def max_future_skew_ms(self) -> int:
        return timedelta_ms(self.max_future_skew)

    @property
    def dlq_topic(self) -> str:
        return dlq_topic_for(self.topic)

    def to_dict(self) -> JSONObject:
        return {
            "name": self.name,
            "topic": self.topic,
            "timestamp_field": self.timestamp_field,
            "timestamp_format": self.timestamp_format,
            "schema": {k: str(v) for k, v in self.schema.items()},
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "history": list(self.history),
            "max_payload_bytes": self.max_payload_bytes,
            "max_future_skew_ms": self.max_future_skew_ms,
            "watermark_outliers": self.watermark_outliers,
            "constraints": {k: v.to_dict() for k, v in self.constraints.items()},
            "description": self.description,
        }


def _check_topic_and_time_field(c: Checker, topic: object, timestamp_field: object) -> None:
    if c.type_is("topic", topic, str, "a Kafka topic name", "write topic='transactions'") and not _TOPIC_RE.match(
        str(topic)
    ):
        c.add("topic", "1-249 characters from [A-Za-z0-9._-]", topic, "Kafka refuses other topic names")
    if c.type_is(
        "timestamp_field",
        timestamp_field,
        str,
        "a field name",
        "name the JSON field holding the event time, e.g. 'ts'",
    ) and not FIELD_RE.match(str(timestamp_field)):
        c.add(
            "timestamp_field",
            "a field name matching [A-Za-z_][A-Za-z0-9_]*",
            timestamp_field,
            "name the JSON field holding the event time",
        )


def _check_timestamp_format(c: Checker, timestamp_format: object) -> None:
    if (
        c.type_is(
            "timestamp_format",
            timestamp_format,
            str,
            "a timestamp format name",
            f"use one of {TIMESTAMP_FORMATS}",
        )
        and timestamp_format not in TIMESTAMP_FORMATS
    ):
        c.add(
            "timestamp_format",
            f"one of {', '.join(TIMESTAMP_FORMATS)}",
            timestamp_format,
            did_you_mean(str(timestamp_format), TIMESTAMP_FORMATS),
        )


# The schema types a timestamp field of each format can hold (engine/io/timestamps.py reads them).
_TIMESTAMP_TYPES = {
    "epoch_millis": (FieldType.INT,),
    "epoch_seconds": (FieldType.INT, FieldType.FLOAT),
    "iso8601": (FieldType.STRING,),
}


def _check_timestamp_type(c: Checker, schema: Mapping[str, object], field: object, timestamp_format: object) -> None:
    """A timestamp field declared in the schema with a type its format cannot read would
    send every record to the dead-letter topic: refused here, naming both."""
    declared = schema.get(field) if isinstance(field, str) else None
    allowed = _TIMESTAMP_TYPES.get(timestamp_format) if isinstance(timestamp_format, str) else None
    if declared is None or allowed is None or declared in allowed:
        return
    fits = [fmt for fmt, types in _TIMESTAMP_TYPES.items() if declared in types]
    c.add_raw(
        "schema",
        f"timestamp field '{field}' typed {' or '.join(map(str, allowed))} (timestamp_format {timestamp_format})",
        f"{declared}",
        f"declare '{field}' as {allowed[0]}, or set timestamp_format to {' or '.join(fits)}"
        if fits
        else f"declare '{field}' as {allowed[0]}",
    )


def _check_history(c: Checker, history: object) -> tuple[str, ...]:
    """The history paths as a tuple (empty when refused)."""
    if isinstance(history, str) or not isinstance(history, Sequence):
        c.add(
            "history",
            "a list of Parquet paths or globs",
            history,
            f"write history=[{history!r}]" if isinstance(history, str) else "write history=['data/*.parquet']",
            type_error=True,
        )
        return ()
    paths = tuple(history)
    for item in paths:
        if not isinstance(item, str) or not item:
            c.add("history", "non-empty path strings", item, "write history=['data/*.parquet']")
    return paths


def _check_payload_limit(c: Checker, max_payload_bytes: object) -> None:
    if (
        c.type_is(
            "max_payload_bytes",
            max_payload_bytes,
            int,
            "an integer number of bytes",
            "e.g. max_payload_bytes=65536",
        )
        and isinstance(max_payload_bytes, int)
        and max_payload_bytes <= 0
    ):
        c.add(
            "max_payload_bytes",
            "a positive number of bytes",
            max_payload_bytes,
            "e.g. max_payload_bytes=65536",
        )


def _check_watermark_outliers(c: Checker, watermark_outliers: object) -> None:
    if (
        c.type_is(
            "watermark_outliers",
            watermark_outliers,
            int,
            "an integer count of events",
            "e.g. watermark_outliers=1",
        )
        and isinstance(watermark_outliers, int)
        and not 0 <= watermark_outliers <= MAX_WATERMARK_OUTLIERS
    ):
        c.add(
            "watermark_outliers",
            f"0..{MAX_WATERMARK_OUTLIERS}",
            watermark_outliers,
            "1 (the default) ignores one outlier; 0 is the plain maximum",
        )


def _check_constraints(c: Checker, constraints: object, schema: Mapping[str, FieldType]) -> FrozenMap:
    """Each constraint names a schema field and bounds what that field's type can hold."""
    if not isinstance(constraints, Mapping):
        c.add(
            "constraints",
            "a mapping of field name to Constraint",
            constraints,
            "write constraints={'amount': Constraint(min=0, max=1e9)}",
            type_error=True,
        )
        return FrozenMap()
    out: dict[str, Constraint] = {}
    for name, constraint in constraints.items():
        where = f"constraints[{name!r}]"
        if name not in schema:
            c.add(where, "a field of the schema", name, did_you_mean(str(name), schema))
            continue
        if not isinstance(constraint, Constraint):
            c.add(
                where, "a Constraint", constraint, "write Constraint(min=0) (from engine.definitions)", type_error=True
            )
            continue
        kind = schema[name]
        if constraint.is_numeric and kind not in (FieldType.INT, FieldType.FLOAT):
            c.add(
                where,
                f"string bounds only (the field is {kind.value})",
                constraint,
                "min/max apply to int and float fields",
            )
            continue
        if constraint.is_textual and kind is not FieldType.STRING:
            c.add(
                where,
                f"min/max only (the field is {kind.value})",
                constraint,
                "lengths and characters apply to string fields",
            )
            continue
        out[str(name)] = constraint
    return FrozenMap(out)


@definition("RequestSource")
class RequestSource:
    """Fields the caller sends with each serving request (inputs of on-demand views)."""

    name: str
    schema: Mapping[str, FieldType | str | type]
    description: str = ""

    def __post_init__(self) -> None:
        c = Checker("RequestSource", self.name)
        c.name_field("name", self.name)
        schema = parse_schema(c, "schema", self.schema)
        c.text("description", self.description)
        c.check()
        object.__setattr__(self, "schema", schema)

    @property
    def field_types(self) -> Mapping[str, FieldType]:
        return self.schema  # type: ignore[return-value]

    def to_dict(self) -> JSONObject:
        return {
            "name": self.name,
            "schema": {k: str(v) for k, v in self.schema.items()},
            "description": self.description,
        }

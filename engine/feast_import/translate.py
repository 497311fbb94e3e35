"""Feast objects (as read by ``reader``) -> the source of an equivalent streamfeat repo module.

Translated: ``Entity``; ``KafkaSource`` with a ``JsonFormat`` schema (-> ``EventSource``,
``watermark_delay_threshold`` -> ``allowed_lateness``); ``RequestSource``;
``StreamFeatureView`` aggregations (sum, count, mean/avg, min, max; Feast's output
names kept, ``{function}_{column}_{seconds}s`` unless named); python-mode
``on_demand_feature_view`` functions (called one row at a time through an adapter);
``FeatureService`` (views and ``view[[...]]`` selections). Everything else is listed
in :attr:`Translation.not_translated` with the reason, never approximated silently.
"""

from __future__ import annotations

import ast
import copy
import keyword
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.definitions.base import timedelta_ms
from engine.feast_import.reader import FeastCall, FeastRepoSource, Projection, Symbol, Unresolved

_FEAST_TYPES = {
    "String": "string",
    "Int32": "int",
    "Int64": "int",
    "Float32": "float",
    "Float64": "float",
    "Bool": "bool",
}
_DDL_TYPES = {
    "string": "string",
    "varchar": "string",
    "char": "string",
    "int": "int",
    "integer": "int",
    "bigint": "int",
    "long": "int",
    "smallint": "int",
    "short": "int",
    "tinyint": "int",
    "double": "float",
    "float": "float",
    "real": "float",
    "decimal": "float",
    "boolean": "bool",
    "bool": "bool",
    "timestamp": "timestamp",
}
_FUNCTIONS = {"sum": "sum", "count": "count", "mean": "mean", "avg": "mean", "min": "min", "max": "max"}
_BATCH_SOURCES = (
    "FileSource",
    "BigQuerySource",
    "SnowflakeSource",
    "RedshiftSource",
    "SparkSource",
    "PostgreSQLSource",
    "TrinoSource",
    "AthenaSource",
)
_HEADER_IMPORTS = ("from datetime import timedelta", "from typing import Any")


@dataclass(frozen=True)
class Translation:
    source: str  # the streamfeat module's text
    translated: tuple[str, ...]  # "StreamFeatureView 'user_spend'", ...
    not_translated: tuple[tuple[str, str], ...]  # (what, why)

    def report(self) -> str:
        lines = [f"translated ({len(self.translated)}):", *(f"  {t}" for t in self.translated)]
        lines.append(f"not translated ({len(self.not_translated)}):")
        lines.extend(f"  {what}: {why}" for what, why in self.not_translated)
        return "\n".join(lines)


class _Skip(Exception):
    """This object cannot be translated; the message says why."""


@dataclass
class _Writer:
    repo: FeastRepoSource
    blocks: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    variables: dict[int, str] = field(default_factory=dict)  # id(call) -> emitted variable
    failed: dict[int, str] = field(default_factory=dict)  # id(call) -> why not
    used: set[str] = field(default_factory=set)
    translated: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def variable(self, name: str) -> str:
        base = re.sub(r"\W", "_", name) or "feast_object"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = f"_{base}"
        out, i = base, 2
        while out in self.used:
            out, i = f"{base}_{i}", i + 1
        self.used.add(out)
        return out

    def emit(self, call: FeastCall, build: Any) -> None:
        what = f"{call.kind} {call.name!r} ({call.where})"
        try:
            var, code = build(call)
        except _Skip as exc:
            self.failed[id(call)] = str(exc)
            self.notes.append((what, str(exc)))
            return
        self.variables[id(call)] = var
        self.blocks.append(code)
        self.translated.append(f"{call.kind} {call.name!r}")

    def ref(self, value: Any, role: str) -> str:
        """The emitted variable of a referenced object (or a view selection)."""
        if isinstance(value, Projection):
            return f"{self.ref(value.view, role)}[{list(value.features)!r}]"
        if not isinstance(value, FeastCall):
            raise _Skip(f"{role}: expected a Feast object, got {_show(value)}")
        if id(value) in self.variables:
            return self.variables[id(value)]
        why = self.failed.get(id(value), "not translated")
        raise _Skip(f"{role} {value.kind} {value.name!r} is not translated ({why})")


def _show(value: Any) -> str:
    if isinstance(value, Unresolved):
        return f"<{value.reason}>"
    if isinstance(value, FeastCall):
        return f"{value.kind}(...)"
    return repr(value)[:60]


def _string(call: FeastCall, key: str, default: str | None = None) -> str:
    value = call.kwargs.get(key, default)
    if not isinstance(value, str):
        raise _Skip(f"{key}: expected a string literal, got {_show(value)}")
    return value


def _duration(value: Any, role: str) -> timedelta:
    if not isinstance(value, timedelta):
        raise _Skip(f"{role}: expected a timedelta, got {_show(value)}")
    return value


def _td(value: timedelta) -> str:
    return f"timedelta(seconds={value.total_seconds():g})"


def _fields(value: Any, role: str) -> dict[str, str]:
    """``[Field(name=..., dtype=Float64), ...]`` -> {name: streamfeat type}."""
    if not isinstance(value, list):
        raise _Skip(f"{role}: expected a list of Field(...), got {_show(value)}")
    out: dict[str, str] = {}
    for item in value:
        if not isinstance(item, FeastCall) or item.kind != "Field":
            raise _Skip(f"{role}: expected Field(...), got {_show(item)}")
        name, dtype = item.kwargs.get("name"), item.kwargs.get("dtype")
        kind = _FEAST_TYPES.get(dtype.last) if isinstance(dtype, Symbol) else None
        if not isinstance(name, str) or kind is None:
            raise _Skip(
                f"{role}: field {name!r} has type {_show(dtype)}; streamfeat types are "
                "String, Int32/Int64, Float32/Float64 and Bool"
            )
        out[name] = kind
    return out


def _ddl_schema(ddl: str) -> dict[str, str]:
    """Spark DDL ``"user_id string, amount double, ts timestamp"`` -> {column: type}."""
    out: dict[str, str] = {}
    for part in re.sub(r"\(\s*\d+\s*(,\s*\d+\s*)?\)", "", ddl).split(","):
        words = part.replace("`", "").split()
        if len(words) != 2 or words[1].lower() not in _DDL_TYPES:
            raise _Skip(f"schema_json: column {part.strip()!r} is not 'name type' with a scalar type")
        out[words[0]] = _DDL_TYPES[words[1].lower()]
    return out


def _refs(w: _Writer, call: FeastCall, key: str, role: str) -> list[str]:
    """The emitted variables of the objects listed in ``call.kwargs[key]`` (a non-empty list)."""
    items = call.kwargs.get(key)
    if not isinstance(items, list) or not items:
        raise _Skip(f"{key}: expected a non-empty list of Feast objects, got {_show(items)}")
    return [w.ref(item, role) for item in items]


def _description(call: FeastCall) -> str:
    value = call.kwargs.get("description")
    return f", description={value!r}" if isinstance(value, str) and value else ""


def _entity(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    keys = call.kwargs.get("join_keys", [call.kwargs.get("join_key", name)])
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise _Skip(f"join_keys: expected a list of strings, got {_show(keys)}")
    var = w.variable(name)
    return var, f"{var} = Entity(name={name!r}, join_keys={keys!r}{_description(call)})"


def _kafka_source(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    topic = _string(call, "topic")
    ts_field = _string(call, "timestamp_field")
    fmt = call.kwargs.get("message_format")
    if not (isinstance(fmt, FeastCall) and fmt.kind == "JsonFormat" and isinstance(fmt.kwargs.get("schema_json"), str)):
        raise _Skip(
            f"message_format: only JsonFormat(schema_json=...) is translated (streamfeat decodes JSON), "
            f"got {_show(fmt)}"
        )
    schema = _ddl_schema(str(fmt.kwargs["schema_json"]))
    ts_type = schema.pop(ts_field, None)
    ts_format = "iso8601" if ts_type in ("timestamp", "string") else "epoch_millis"
    if ts_type not in ("timestamp", "string"):
        w.notes.append(
            (
                f"KafkaSource {name!r}",
                f"timestamp field {ts_field!r} ({ts_type or 'not in schema_json'}) "
                "read as epoch milliseconds: set timestamp_format='epoch_seconds' if it counts seconds",
            )
        )
    lateness = call.kwargs.get("watermark_delay_threshold")
    extra = (
        f", allowed_lateness={_td(_duration(lateness, 'watermark_delay_threshold'))}" if lateness is not None else ""
    )
    if "batch_source" in call.kwargs:
        w.notes.append(
            (
                f"KafkaSource {name!r}",
                "batch_source not translated: replay history with "
                f"`streamfeat backfill --source {name} --from <Parquet files>`",
            )
        )
    if "kafka_bootstrap_servers" in call.kwargs:
        w.notes.append(
            (
                f"KafkaSource {name!r}",
                "kafka_bootstrap_servers not translated: the broker is a "
                "streamfeat setting (--bootstrap / STREAMFEAT_KAFKA_BOOTSTRAP)",
            )
        )
    var = w.variable(name)
    return var, (
        f"{var} = EventSource(name={name!r}, topic={topic!r}, timestamp_field={ts_field!r}, "
        f"timestamp_format={ts_format!r},\n    schema={schema!r}{extra}{_description(call)})"
    )


def _request_source(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    var = w.variable(name)
    return var, f"{var} = RequestSource(name={name!r}, schema={_fields(call.kwargs.get('schema'), 'schema')!r})"


def _aggregation(w: _Writer, view: str, call: Any) -> tuple[str, timedelta] | None:
    if not isinstance(call, FeastCall) or call.kind != "Aggregation":
        raise _Skip(f"aggregations: expected Aggregation(...), got {_show(call)}")
    column, function = call.kwargs.get("column"), call.kwargs.get("function")
    window = _duration(call.kwargs.get("time_window"), "Aggregation time_window")
    feast_name = call.kwargs.get("name") or f"{function}_{column}_{int(window.total_seconds())}s"
    if not isinstance(column, str) or function not in _FUNCTIONS:
        w.notes.append(
            (
                f"StreamFeatureView {view!r} aggregation {feast_name!r}",
                f"function {function!r} has no streamfeat equivalent ({', '.join(sorted(_FUNCTIONS))})",
            )
        )
        return None
    slide = call.kwargs.get("slide_interval")
    if slide is not None and slide != window:
        w.notes.append(
            (
                f"StreamFeatureView {view!r} aggregation {feast_name!r}",
                f"slide_interval {slide} not translated: streamfeat windows slide at every "
                "aggregation_interval tile and are evaluated as of request time",
            )
        )
    return (
        f"Aggregation(column={column!r}, function={_FUNCTIONS[function]!r}, window={_td(window)}, name={feast_name!r})",
        window,
    )


def _stream_view(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    entity_vars = _refs(w, call, "entities", "entity")
    source = w.ref(call.kwargs.get("source"), "source")
    aggregations = call.kwargs.get("aggregations")
    if aggregations is not None and not isinstance(aggregations, list):
        raise _Skip(f"aggregations: expected a list of Aggregation(...), got {_show(aggregations)}")
    if not aggregations:
        raise _Skip(
            "no aggregations: a Feast stream view without aggregations stores rows as they come, "
            "streamfeat views are windowed aggregations"
        )
    built = [a for a in (_aggregation(w, name, item) for item in aggregations) if a is not None]
    if not built:
        raise _Skip("none of its aggregations is translatable")
    if call.function is not None or "udf" in call.kwargs:
        w.notes.append(
            (
                f"StreamFeatureView {name!r}",
                "udf (a Spark/pandas transformation) not translated: the "
                "translated view aggregates the source's columns as they arrive; write a row filter as "
                "filter=col(...) == ...",
            )
        )
    if "ttl" in call.kwargs:
        w.notes.append((f"StreamFeatureView {name!r}", "ttl not translated: state is kept for the longest window"))
    interval_ms = math.gcd(60_000, *(timedelta_ms(window) for _, window in built))
    options = "" if interval_ms == 60_000 else f"\n    aggregation_interval=timedelta(milliseconds={interval_ms}),"
    online = call.kwargs.get("online")
    if online is False:
        options += "\n    online=False,"
    tags = call.kwargs.get("tags")
    if isinstance(tags, dict) and tags and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        options += f"\n    tags={tags!r},"
    var = w.variable(name)
    aggs = "".join(f"\n        {code}," for code, _ in built)
    return var, (
        f"{var} = StreamFeatureView(\n    name={name!r}, source={source}, entities=[{', '.join(entity_vars)}],"
        f"{options}\n    aggregations=[{aggs}\n    ]{_description(call)},\n)"
    )


def _on_demand(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    mode = call.kwargs.get("mode", "pandas")
    if call.function is None:
        raise _Skip("not a decorated function: only @on_demand_feature_view functions carry their transform")
    if mode != "python":
        raise _Skip(
            f"mode {mode!r}: only python-mode transforms are translated; rewrite it as a streamfeat "
            "python (one row) or batch (polars DataFrame) transform"
        )
    source_refs = _refs(w, call, "sources", "source")
    schema = _fields(call.kwargs.get("schema"), "schema")
    var = w.variable(name)
    inner = w.variable(f"_feast_{call.function.name}")
    function = copy.deepcopy(call.function)
    function.decorator_list = []
    function.name = inner
    used = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    w.imports.extend(
        line
        for line, names in call.imports
        if used & set(names) and line not in w.imports and line not in _HEADER_IMPORTS
    )
    singleton = call.kwargs.get("singleton") is True
    body = (
        f"    return {inner}(row)"
        if singleton
        else f"    out = {inner}({{k: [v] for k, v in row.items()}})\n    return {{k: v[0] for k, v in out.items()}}"
    )
    code = (
        f"{ast.unparse(function)}\n\n\n"
        f"@on_demand_feature_view(name={name!r}, sources=[{', '.join(source_refs)}], schema={schema!r},\n"
        f'                        mode="python"{_description(call)})\n'
        f"def {var}(row: dict[str, Any]) -> dict[str, Any]:\n"
        f'    """Feast\'s python-mode transform, called on one row (lists of one value)."""\n{body}'
    )
    return var, code


def _service(w: _Writer, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    refs = _refs(w, call, "features", "feature")
    var = w.variable(name)
    return var, f"{var} = FeatureService(name={name!r}, features=[{', '.join(refs)}]{_description(call)})"


def _not_translated(w: _Writer, kinds: tuple[str, ...], why: str) -> None:
    for call in w.repo.of_kind(*kinds):
        w.failed[id(call)] = why
        w.notes.append((f"{call.kind} {call.name!r} ({call.where})", why))


def translate(repo: FeastRepoSource, origin: str) -> Translation:
    w = _Writer(repo)
    for kind, build in (
        ("Entity", _entity),
        ("KafkaSource", _kafka_source),
        ("RequestSource", _request_source),
        ("StreamFeatureView", _stream_view),
        ("OnDemandFeatureView", _on_demand),
        ("FeatureService", _service),
    ):
        if kind == "StreamFeatureView":
            _not_translated(
                w,
                ("FeatureView", "BatchFeatureView"),
                "batch feature view: streamfeat computes "
                "features from a stream (write it as a StreamFeatureView over an EventSource)",
            )
            _not_translated(
                w,
                ("PushSource",),
                "push source: streamfeat ingests from Kafka; produce the pushed "
                "events to a topic and declare an EventSource for it",
            )
            _not_translated(
                w, _BATCH_SOURCES, "batch source: backfill history from Parquet files with `streamfeat backfill --from`"
            )
        for call in repo.of_kind(kind):
            w.emit(call, lambda c, b=build: b(w, c))
    for file, why in repo.skipped_files:
        w.notes.append((file, why))
    return Translation(_module(w, origin), tuple(w.translated), tuple(w.notes))


def _module(w: _Writer, origin: str) -> str:
    missing = "".join(f"\n- {what}: {why}" for what, why in w.notes) or "\nnothing"
    header = (
        f'"""Translated from the Feast repo {origin} by `streamfeat import-feast`.\n\n'
        f'Not translated:{missing}\n"""\n\n' + "".join(f"{line}\n" for line in _HEADER_IMPORTS) + "\n"
        "from engine.definitions import (\n    Aggregation, Entity, EventSource, FeatureService, RequestSource,"
        " StreamFeatureView, on_demand_feature_view,\n)\n"
    )
    extra = "".join(f"{line}\n" for line in w.imports)
    return header + extra + "".join(f"\n\n{block}\n" for block in w.blocks)

"""One Feast object -> the streamfeat definition code that replaces it (or Untranslatable, saying
why not): entities, Kafka and request sources, stream views with their aggregations,
python-mode on-demand transforms and feature services."""

from __future__ import annotations

import ast
import copy
import math
import re
from datetime import timedelta

from engine.definitions.base import timedelta_ms
from engine.feast_import.emit import HEADER_IMPORTS, ModuleWriter, show
from engine.feast_import.exceptions import Untranslatable
from engine.feast_import.reader import FeastCall, StaticValue, Symbol

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
_HLL = (
    "count_distinct_approx",
    "approximated: an exact distinct count in Feast, a HyperLogLog estimate here (about 1.6% standard "
    "error at the default precision=12); for an exact count of a bounded set write function='count_distinct' "
    "with max_distinct=N",
)
_SAMPLE_STDDEV = (
    "stddev",
    "approximated: Spark's stddev is the sample standard deviation (divides by n - 1), streamfeat's the "
    "population one (divides by n): they differ by a factor sqrt((n - 1) / n), most for few events",
)
#: Feast functions streamfeat computes only approximately: (streamfeat function, what differs).
_APPROXIMATE = {
    "count_distinct": _HLL,
    "approx_count_distinct": _HLL,
    "stddev": _SAMPLE_STDDEV,
    "std": _SAMPLE_STDDEV,
    "stddev_samp": _SAMPLE_STDDEV,
}


def _string(call: FeastCall, key: str, default: str | None = None) -> str:
    value = call.kwargs.get(key, default)
    if not isinstance(value, str):
        raise Untranslatable(f"{key}: expected a string literal, got {show(value)}")
    return value


def _duration(value: StaticValue, role: str) -> timedelta:
    if not isinstance(value, timedelta):
        raise Untranslatable(f"{role}: expected a timedelta, got {show(value)}")
    return value


def _td(value: timedelta) -> str:
    return f"timedelta(seconds={value.total_seconds():g})"


def _fields(value: StaticValue, role: str) -> dict[str, str]:
    """``[Field(name=..., dtype=Float64), ...]`` -> {name: streamfeat type}."""
    if not isinstance(value, list):
        raise Untranslatable(f"{role}: expected a list of Field(...), got {show(value)}")
    out: dict[str, str] = {}
    for item in value:
        if not isinstance(item, FeastCall) or item.kind != "Field":
            raise Untranslatable(f"{role}: expected Field(...), got {show(item)}")
        name, dtype = item.kwargs.get("name"), item.kwargs.get("dtype")
        kind = _FEAST_TYPES.get(dtype.last) if isinstance(dtype, Symbol) else None
        if not isinstance(name, str) or kind is None:
            raise Untranslatable(
                f"{role}: field {name!r} has type {show(dtype)}; streamfeat types are "
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
            raise Untranslatable(f"schema_json: column {part.strip()!r} is not 'name type' with a scalar type")
        out[words[0]] = _DDL_TYPES[words[1].lower()]
    return out


def _refs(w: ModuleWriter, call: FeastCall, key: str, role: str) -> list[str]:
    """The emitted variables of the objects listed in ``call.kwargs[key]`` (a non-empty list)."""
    items = call.kwargs.get(key)
    if not isinstance(items, list) or not items:
        raise Untranslatable(f"{key}: expected a non-empty list of Feast objects, got {show(items)}")
    return [w.ref(item, role) for item in items]


def _description(call: FeastCall) -> str:
    value = call.kwargs.get("description")
    return f", description={value!r}" if isinstance(value, str) and value else ""


def entity(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    keys = call.kwargs.get("join_keys", [call.kwargs.get("join_key", name)])
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise Untranslatable(f"join_keys: expected a list of strings, got {show(keys)}")
    var = w.variable(name)
    return var, f"{var} = Entity(name={name!r}, join_keys={keys!r}{_description(call)})"


def kafka_source(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    topic = _string(call, "topic")
    ts_field = _string(call, "timestamp_field")
    fmt = call.kwargs.get("message_format")
    if not (isinstance(fmt, FeastCall) and fmt.kind == "JsonFormat" and isinstance(fmt.kwargs.get("schema_json"), str)):
        raise Untranslatable(
            f"message_format: only JsonFormat(schema_json=...) is translated (streamfeat decodes JSON), got {show(fmt)}"
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


def request_source(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    var = w.variable(name)
    return var, f"{var} = RequestSource(name={name!r}, schema={_fields(call.kwargs.get('schema'), 'schema')!r})"


def _aggregation(w: ModuleWriter, view: str, call: StaticValue) -> tuple[str, timedelta] | None:
    if not isinstance(call, FeastCall) or call.kind != "Aggregation":
        raise Untranslatable(f"aggregations: expected Aggregation(...), got {show(call)}")
    column, function = call.kwargs.get("column"), call.kwargs.get("function")
    window = _duration(call.kwargs.get("time_window"), "Aggregation time_window")
    feast_name = call.kwargs.get("name") or f"{function!s}_{column!s}_{int(window.total_seconds())}s"
    what = f"StreamFeatureView {view!r} aggregation {feast_name!r}"
    translatable = isinstance(function, str) and (function in _FUNCTIONS or function in _APPROXIMATE)
    if not isinstance(column, str) or not isinstance(function, str) or not translatable:
        known = ", ".join(sorted(_FUNCTIONS))
        w.notes.append((what, f"function {function!r} has no streamfeat equivalent (translated: {known})"))
        return None
    streamfeat_function = _FUNCTIONS.get(function)
    if streamfeat_function is None:
        streamfeat_function, why = _APPROXIMATE[function]
        w.approximated.append((f"{what}: {function} -> {streamfeat_function}", why))
    slide = call.kwargs.get("slide_interval")
    if slide is not None and slide != window:
        w.notes.append(
            (
                what,
                f"slide_interval {slide!s} not translated: streamfeat windows slide at every "
                "aggregation_interval tile and are evaluated as of request time",
            )
        )
    return (
        f"Aggregation(column={column!r}, function={streamfeat_function!r}, window={_td(window)}, name={feast_name!r})",
        window,
    )


def stream_view(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    entity_vars = _refs(w, call, "entities", "entity")
    source = w.ref(call.kwargs.get("source"), "source")
    aggregations = call.kwargs.get("aggregations")
    if aggregations is not None and not isinstance(aggregations, list):
        raise Untranslatable(f"aggregations: expected a list of Aggregation(...), got {show(aggregations)}")
    if not aggregations:
        raise Untranslatable(
            "no aggregations: a Feast stream view without aggregations stores rows as they come, "
            "streamfeat views are windowed aggregations"
        )
    built = [a for a in (_aggregation(w, name, item) for item in aggregations) if a is not None]
    if not built:
        raise Untranslatable("none of its aggregations is translatable")
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


def on_demand(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    mode = call.kwargs.get("mode", "pandas")
    if call.function is None:
        raise Untranslatable("not a decorated function: only @on_demand_feature_view functions carry their transform")
    if mode != "python":
        raise Untranslatable(
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
        if used & set(names) and line not in w.imports and line not in HEADER_IMPORTS
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


def service(w: ModuleWriter, call: FeastCall) -> tuple[str, str]:
    name = _string(call, "name", call.name)
    refs = _refs(w, call, "features", "feature")
    var = w.variable(name)
    return var, f"{var} = FeatureService(name={name!r}, features=[{', '.join(refs)}]{_description(call)})"

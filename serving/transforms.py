"""On-demand transforms at request time: python mode row by row, batch mode with polars.

A transform that raises, omits a declared output or returns a value of the wrong type
becomes a :class:`TransformError` naming the transform (HTTP 500); nothing else is
affected, so the next request is served normally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.definitions import FieldType
from serving.exceptions import TransformError
from serving.registry import CompiledTransform

_POLARS_TYPES: dict[FieldType, Any] = {
    FieldType.STRING: pl.String,
    FieldType.INT: pl.Int64,
    FieldType.FLOAT: pl.Float64,
    FieldType.BOOL: pl.Boolean,
}


def _coerce(transform: CompiledTransform, name: str, kind: FieldType, value: Any) -> Any:
    """Output values as declared: ints widen to float; NaN becomes null (JSON has no NaN)."""
    if value is None:
        return None
    if kind is FieldType.FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if kind is FieldType.INT and isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if (kind is FieldType.STRING and isinstance(value, str)) or (kind is FieldType.BOOL and isinstance(value, bool)):
        return value
    raise TransformError(
        f"on-demand transform {transform.name!r}: output {name!r}: expected {kind}, "
        f"got {type(value).__name__} {value!r:.60}",
        transform=transform.name,
        hint="return values of the types declared in the view's schema",
    )


def run_python(transform: CompiledTransform, inputs: Mapping[str, list[Any]], n_rows: int) -> dict[str, list[Any]]:
    outputs: dict[str, list[Any]] = {name: [] for name in transform.output_types}
    columns = [(n, inputs[n]) for n in transform.input_types]
    fn = transform.fn
    for i in range(n_rows):
        row = {n: c[i] for n, c in columns}
        try:
            result = fn(row)
        except Exception as exc:
            raise TransformError(
                f"on-demand transform {transform.name!r} raised {type(exc).__name__}: {exc}",
                transform=transform.name, hint="fix the transform; other requests are unaffected",
            ) from exc
        if not isinstance(result, dict):
            raise TransformError(
                f"on-demand transform {transform.name!r}: expected a dict of outputs, got {type(result).__name__}",
                transform=transform.name)
        for name, kind in transform.output_types.items():
            if name not in result:
                raise TransformError(
                    f"on-demand transform {transform.name!r}: output {name!r} missing from its result",
                    transform=transform.name, hint=f"return every declared output: {list(transform.output_types)}")
            outputs[name].append(_coerce(transform, name, kind, result[name]))
    return outputs


def run_batch(transform: CompiledTransform, inputs: Mapping[str, list[Any]], n_rows: int) -> dict[str, list[Any]]:
    schema = {n: _POLARS_TYPES[t] for n, t in transform.input_types.items()}
    frame = pl.DataFrame({n: inputs[n] for n in transform.input_types}, schema=schema)
    try:
        result = transform.fn(frame)
    except Exception as exc:
        raise TransformError(
            f"on-demand transform {transform.name!r} raised {type(exc).__name__}: {exc}",
            transform=transform.name, hint="fix the transform; other requests are unaffected",
        ) from exc
    if not isinstance(result, pl.DataFrame) or result.height != n_rows:
        got = f"DataFrame with {result.height} rows" if isinstance(result, pl.DataFrame) else type(result).__name__
        raise TransformError(
            f"on-demand transform {transform.name!r}: expected a polars DataFrame with {n_rows} rows, got {got}",
            transform=transform.name, hint="return one output row per input row, in order")
    outputs: dict[str, list[Any]] = {}
    for name, kind in transform.output_types.items():
        if name not in result.columns:
            raise TransformError(
                f"on-demand transform {transform.name!r}: output column {name!r} missing (got {result.columns})",
                transform=transform.name, hint=f"return every declared output: {list(transform.output_types)}")
        column = result.get_column(name)
        if kind is FieldType.FLOAT and column.dtype == pl.Float64:
            # What _coerce does to each value of a float column, in one pass: NaN and
            # infinities become null.
            outputs[name] = [v if v is None or math.isfinite(v) else None for v in column.to_list()]
        else:
            outputs[name] = [_coerce(transform, name, kind, v) for v in column.to_list()]
    return outputs


def run_transform(transform: CompiledTransform, inputs: Mapping[str, list[Any]], n_rows: int) -> dict[str, list[Any]]:
    runner = run_python if transform.mode == "python" else run_batch
    return runner(transform, inputs, n_rows)

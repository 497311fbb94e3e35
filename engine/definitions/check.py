"""``check_on_demand``: run a transform once on a synthetic input and check its outputs.

Used by ``plan`` so that a transform whose outputs do not match its declared schema
is refused before it reaches serving.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from engine.definitions.base import Checker, FieldType, is_number
from engine.definitions.exceptions import OnDemandCheckError
from engine.definitions.on_demand import OnDemandFeatureView

_SAMPLES: dict[FieldType, Any] = {
    FieldType.STRING: "sample",
    FieldType.INT: 3,
    FieldType.FLOAT: 2.5,
    FieldType.BOOL: True,
}


def sample_row(odfv: OnDemandFeatureView, sample_inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One synthetic input row from the input types, overridden by ``sample_inputs``."""
    row = {name: _SAMPLES[ftype] for name, ftype in odfv.input_types.items()}
    row.update(sample_inputs or {})
    return row


def check_on_demand(odfv: OnDemandFeatureView, sample_inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs the transform on one synthetic row; returns its output row or raises OnDemandCheckError."""
    row = sample_row(odfv, sample_inputs)
    function = odfv.resolve()
    c = Checker("OnDemandFeatureView", odfv.name)
    try:
        output = _run_python(c, function, row) if odfv.mode == "python" else _run_batch(c, odfv, function, row)
    except Exception as exc:  # the user's transform may raise anything; report it, do not crash plan
        last = traceback.extract_tb(exc.__traceback__)[-1]
        c.add_raw("fn", f"{odfv.fn} to run on a sample input", f"{type(exc).__name__}: {exc} "
                  f"(at {last.filename}:{last.lineno})", f"sample input was {row!r}; make the transform handle it")
        output = None
    if output is not None:
        _compare(c, odfv, output)
    if c.problems:
        raise OnDemandCheckError(c.kind, c.name, c.problems)
    return output if output is not None else {}


def _run_python(c: Checker, function: Any, row: dict[str, Any]) -> dict[str, Any] | None:
    result = function(dict(row))
    if not isinstance(result, Mapping):
        c.add_raw("fn", "a dict of output name -> value (python mode)", f"{type(result).__name__}",
                  "return a dict such as {'spend_velocity_ratio': 1.0}")
        return None
    return dict(result)


def _run_batch(c: Checker, odfv: OnDemandFeatureView, function: Any, row: dict[str, Any]) -> dict[str, Any] | None:
    import polars as pl

    dtypes = {FieldType.STRING: pl.String, FieldType.INT: pl.Int64, FieldType.FLOAT: pl.Float64, FieldType.BOOL: pl.Boolean}
    types = odfv.input_types
    frame = pl.DataFrame({name: [value] for name, value in row.items()},
                         schema={name: dtypes.get(types.get(name, FieldType.STRING), pl.String) for name in row})
    result = function(frame)
    if not isinstance(result, pl.DataFrame):
        c.add_raw("fn", "a polars.DataFrame (batch mode)", type(result).__name__,
                  "return df.select(...) with one column per output")
        return None
    if result.height != 1:
        c.add_raw("fn", "one output row per input row", f"{result.height} rows", "use column expressions, not aggregations")
        return None
    expected = {FieldType.STRING: (pl.String,), FieldType.BOOL: (pl.Boolean,),
                FieldType.FLOAT: (pl.Float64, pl.Float32),
                FieldType.INT: (pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt32, pl.UInt16, pl.UInt8)}
    for name, ftype in odfv.field_types.items():
        if name in result.columns and result.schema[name] not in expected[ftype]:
            c.add_raw(f"schema[{name!r}]", f"a {ftype} column", f"polars dtype {result.schema[name]}",
                      "cast the output column or fix the declared type")
    return result.row(0, named=True)


def _compare(c: Checker, odfv: OnDemandFeatureView, output: Mapping[str, Any]) -> None:
    declared = odfv.field_types
    for name in declared:
        if name not in output:
            c.add_raw(f"schema[{name!r}]", "an output of that name", f"outputs {sorted(output)}",
                      "return every declared output (or fix the declared schema)")
    for name, value in output.items():
        if name not in declared:
            c.add_raw(f"schema[{name!r}]", "only declared outputs", f"undeclared output {name!r}",
                      "declare it in schema={...} or stop returning it")
        elif value is not None and not _fits(declared[name], value):
            c.add_raw(f"schema[{name!r}]", f"a {declared[name]} value", f"{value!r} ({type(value).__name__})",
                      "convert the value or fix the declared type")


def _fits(ftype: FieldType, value: object) -> bool:
    if ftype == FieldType.FLOAT:
        return is_number(value)
    if ftype == FieldType.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == FieldType.BOOL:
        return isinstance(value, bool)
    return isinstance(value, str)

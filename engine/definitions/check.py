"""``check_on_demand``: run a transform once on a synthetic input and check its outputs.

Used by ``plan`` so that a transform whose outputs do not match its declared schema
is refused before it reaches serving.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping

from engine.definitions.base import Checker, FieldType
from engine.definitions.exceptions import OnDemandCheckError
from engine.definitions.on_demand import OnDemandFeatureView
from engine.definitions.transform_runner import TransformRunError, TransformSpec, run_transform

_SAMPLES: dict[FieldType, str | int | float | bool] = {
    FieldType.STRING: "sample",
    FieldType.INT: 3,
    FieldType.FLOAT: 2.5,
    FieldType.BOOL: True,
}


def sample_row(odfv: OnDemandFeatureView, sample_inputs: Mapping[str, object] | None = None) -> dict[str, object]:
    """One synthetic input row from the input types, overridden by ``sample_inputs``."""
    row: dict[str, object] = {name: _SAMPLES[ftype] for name, ftype in odfv.input_types.items()}
    row.update(sample_inputs or {})
    return row


def check_on_demand(odfv: OnDemandFeatureView, sample_inputs: Mapping[str, object] | None = None) -> dict[str, object]:
    """Runs the transform on one synthetic row through the runner serving and training
    sets use; returns its output row or raises OnDemandCheckError with every problem."""
    row = sample_row(odfv, sample_inputs)
    spec = TransformSpec.of(odfv)
    # Inputs the sample names beyond the declared ones are passed too (typed as strings).
    spec = dataclasses.replace(spec, input_types={**{n: FieldType.STRING for n in row}, **spec.input_types})
    c = Checker("OnDemandFeatureView", odfv.name)
    output: dict[str, object] = {}
    undeclared: tuple[str, ...] = ()
    try:
        result = run_transform(spec, {name: [value] for name, value in row.items()}, 1)
        output = {name: values[0] for name, values in result.columns.items()}
        undeclared = result.undeclared
    except TransformRunError as exc:
        undeclared = exc.undeclared
        for problem in exc.problems:
            field = "fn" if problem.output is None else f"schema[{problem.output!r}]"
            got = problem.got + _location(exc.__cause__)
            c.add_raw(field, problem.expected, got, f"sample input was {row!r}; {problem.hint}")
    for name in undeclared:
        c.add_raw(
            f"schema[{name!r}]",
            "only declared outputs",
            f"undeclared output {name!r}",
            "declare it in schema={...} or stop returning it",
        )
    if c.problems:
        raise OnDemandCheckError(c.kind, c.name, c.problems)
    return output


def _location(exc: BaseException | None) -> str:
    """`` (at file:line)`` of the innermost frame of the transform's own exception."""
    if exc is None or exc.__traceback__ is None:
        return ""
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return f" (at {last.filename}:{last.lineno})"

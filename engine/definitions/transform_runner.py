"""The one way an on-demand transform runs: serving requests, training sets and
``plan``'s dry run all call :func:`run_transform` (a one-row serving answer
:func:`run_one_row`, which runs the same per-row step), so they cannot disagree.

``python`` mode calls the function once per row with a dict of inputs and expects a
dict of outputs; ``batch`` mode calls it once with a polars DataFrame of the inputs
(typed as declared) and expects a DataFrame of as many rows. Every output value then
goes through one coercion rule (:func:`coerce_output`):

- ``None`` (a null) stays ``None``;
- ``float`` outputs take ints and floats (not bools) as float; NaN and infinities
  become ``None`` (JSON has no NaN, and a training set must hold what serving sends);
- ``int`` outputs take ints (not bools); ``string`` outputs take str; ``bool`` take bool;
- anything else, a missing output, a raise, or a result of the wrong shape is a
  :class:`TransformRunError` naming the transform, the output and the row.

A row with an invalid input (a float that is NaN or infinite: an overflowed window,
docs/semantics.md "Numbers") has no value: every output of that row is ``None`` and is
reported with the non-finite results, whatever the transform would make of the input.
Python mode does not call the function for such a row; batch mode passes the input as
null and discards that row's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.definitions.base import FieldType
from engine.definitions.on_demand import OnDemandFeatureView
from engine.exceptions import StreamfeatError
from engine.finite import may_hold_not_finite, not_finite, not_finite_rows


class RunnableTransform(Protocol):
    """What running a transform needs (serving's compiled transform, :class:`TransformSpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def fn(self) -> Callable[..., object]: ...
    @property
    def mode(self) -> str: ...
    @property
    def input_types(self) -> Mapping[str, FieldType]: ...
    @property
    def output_types(self) -> Mapping[str, FieldType]: ...


@dataclass(frozen=True)
class TransformSpec:
    """A resolved on-demand view, ready to run."""

    name: str
    fn: Callable[..., object]
    mode: str
    input_types: Mapping[str, FieldType]
    output_types: Mapping[str, FieldType]

    def __post_init__(self) -> None:
        if self.mode not in ("python", "batch"):
            raise ValueError(
                f"TransformSpec {self.name!r}: field 'mode': expected 'python' or 'batch', got {self.mode!r}"
            )

    @classmethod
    def of(cls, odfv: OnDemandFeatureView) -> TransformSpec:
        """Resolve an ``OnDemandFeatureView`` (raises its DefinitionError if unimportable)."""
        return cls(
            name=odfv.name,
            fn=odfv.resolve(),
            mode=str(getattr(odfv.mode, "value", odfv.mode)),
            input_types=dict(odfv.input_types),
            output_types=dict(odfv.feature_types),
        )


@dataclass(frozen=True)
class OutputProblem:
    """One way a transform's result broke the contract; ``output`` None: the call itself."""

    output: str | None
    expected: str
    got: str
    hint: str

    def describe(self) -> str:
        where = f"output {self.output!r}: " if self.output is not None else ""
        return f"{where}expected {self.expected}, got {self.got}"


class TransformRunError(StreamfeatError):
    """A transform raised, or returned something the coercion rule refuses."""

    def __init__(
        self,
        transform: str,
        problems: Sequence[OutputProblem],
        *,
        row: int | None,
        undeclared: Sequence[str] = (),
    ) -> None:
        at = f" (row {row})" if row is not None else ""
        details = "; ".join(p.describe() for p in problems)
        super().__init__(f"on-demand transform {transform!r}{at}: {details}", hint=problems[0].hint)
        self.transform = transform
        self.problems = tuple(problems)
        self.row = row
        self.undeclared = tuple(undeclared)


@dataclass(frozen=True)
class TransformResult:
    """Coerced output columns (declared order), outputs returned but not declared, and per
    output the rows that are null because the result was NaN or infinite or an input was
    (serving reports them ``INVALID``, docs/serving.md)."""

    columns: dict[str, list[object]]
    undeclared: tuple[str, ...]
    not_finite: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _invalid_input_rows(transform: RunnableTransform, inputs: Mapping[str, Sequence[object]]) -> list[int]:
    """Rows where any float input is :func:`not_finite` (only floats can be)."""
    rows: set[int] = set()
    for name, kind in transform.input_types.items():
        if kind is FieldType.FLOAT:
            rows.update(not_finite_rows(inputs[name]))
    return sorted(rows)


_REFUSED = object()


def coerce_output(kind: FieldType, value: object) -> object:
    """``value`` as the declared ``kind`` (see the module docstring); ``_REFUSED`` if it is not one."""
    if value is None:
        return None
    if kind is FieldType.FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    if kind is FieldType.INT and isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if (kind is FieldType.STRING and isinstance(value, str)) or (kind is FieldType.BOOL and isinstance(value, bool)):
        return value
    return _REFUSED


def _wrong_type(name: str, kind: FieldType, value: object) -> OutputProblem:
    return OutputProblem(
        name,
        f"a value of type {kind}",
        f"{value!r:.60} ({type(value).__name__})",
        "return values of the types declared in the view's schema (or fix the declared type)",
    )


def _missing(name: str, got: Sequence[str]) -> OutputProblem:
    return OutputProblem(
        name,
        "an output of that name",
        f"outputs {sorted(got)}",
        "return every declared output (or fix the declared schema)",
    )


def _call(transform: RunnableTransform, argument: object, row: int | None) -> object:
    try:
        return transform.fn(argument)
    except Exception as exc:  # the user's code may raise anything: name the transform
        problem = OutputProblem(
            None,
            "the transform to return",
            f"{type(exc).__name__}: {exc}",
            "fix the transform so it handles this input",
        )
        raise TransformRunError(transform.name, [problem], row=row) from exc


def run_transform(transform: RunnableTransform, inputs: Mapping[str, Sequence[object]], n_rows: int) -> TransformResult:
    """Run ``transform`` over ``n_rows`` rows of ``inputs`` (a list per input name)."""
    if transform.mode == "python":
        return _run_python(transform, inputs, n_rows)
    return _run_batch(transform, inputs, n_rows)


def run_one_row(transform: RunnableTransform, row: Mapping[str, object]) -> tuple[dict[str, object], tuple[str, ...]]:
    """:func:`run_transform` of one row given as input name -> value: the coerced outputs
    (declared order) and the float outputs whose result was not finite (now null), with
    the same rules and errors. Python mode runs the very step :func:`run_transform` runs
    for each row (no columns to build for one row); batch mode is a one-row
    :func:`run_transform`."""
    if transform.mode == "python":
        argument = {name: row[name] for name in transform.input_types}
        if any(not_finite(argument[name]) for name, kind in transform.input_types.items() if kind is FieldType.FLOAT):
            return dict.fromkeys(transform.output_types), tuple(transform.output_types)
        return _python_row(transform, argument, 0, set())
    result = _run_batch(transform, {name: [row[name]] for name in transform.input_types}, 1)
    return {name: column[0] for name, column in result.columns.items()}, tuple(result.not_finite)


def _python_row(
    transform: RunnableTransform, argument: dict[str, object], row: int, undeclared: set[str]
) -> tuple[dict[str, object], tuple[str, ...]]:
    """One call of a python-mode transform (``row`` names it in errors): the coerced
    outputs and the float outputs that were not finite. Outputs returned but not declared
    are added to ``undeclared`` (a run's error names every one seen so far)."""
    output_types = transform.output_types
    result = _call(transform, argument, row)
    if not isinstance(result, Mapping):
        problem = OutputProblem(
            None,
            "a dict of output name -> value (python mode)",
            type(result).__name__,
            "return a dict with one entry per declared output",
        )
        raise TransformRunError(transform.name, [problem], row=row)
    undeclared.update(name for name in result if name not in output_types)
    problems: list[OutputProblem] = []
    values: dict[str, object] = {}
    overflowed: tuple[str, ...] = ()
    for name, kind in output_types.items():
        if name not in result:
            problems.append(_missing(name, list(result)))
            continue
        raw = result[name]
        value = coerce_output(kind, raw)
        if value is _REFUSED:
            problems.append(_wrong_type(name, kind, raw))
        elif value is None and raw is not None:
            overflowed += (name,)
        values[name] = value
    if problems:
        raise TransformRunError(transform.name, problems, row=row, undeclared=sorted(undeclared))
    return values, overflowed


def _run_python(transform: RunnableTransform, inputs: Mapping[str, Sequence[object]], n_rows: int) -> TransformResult:
    outputs: dict[str, list[object]] = {name: [] for name in transform.output_types}
    columns = [(name, inputs[name]) for name in transform.input_types]
    undeclared: set[str] = set()
    null_rows: dict[str, list[int]] = {}
    invalid = set(_invalid_input_rows(transform, inputs))
    for i in range(n_rows):
        if i in invalid:  # no value to compute on: not called, every output null
            for name in outputs:
                outputs[name].append(None)
                null_rows.setdefault(name, []).append(i)
            continue
        values, overflowed = _python_row(transform, {name: column[i] for name, column in columns}, i, undeclared)
        for name, value in values.items():
            outputs[name].append(value)
        for name in overflowed:
            null_rows.setdefault(name, []).append(i)
    return TransformResult(outputs, tuple(sorted(undeclared)), {name: tuple(rows) for name, rows in null_rows.items()})


def _run_batch(transform: RunnableTransform, inputs: Mapping[str, Sequence[object]], n_rows: int) -> TransformResult:
    import polars as pl

    dtypes = {
        FieldType.STRING: pl.String,
        FieldType.INT: pl.Int64,
        FieldType.FLOAT: pl.Float64,
        FieldType.BOOL: pl.Boolean,
    }
    invalid = _invalid_input_rows(transform, inputs)
    if invalid:  # the transform sees null there; those rows' outputs are discarded below
        inputs = {name: [None if not_finite(v) else v for v in inputs[name]] for name in transform.input_types}
    try:
        # Series by Series: the same checks and errors as a dict with a schema, at about
        # two thirds of the cost for the ~100-row frames of a serving request.
        frame = pl.DataFrame(
            [pl.Series(name, list(inputs[name]), dtype=dtypes[kind]) for name, kind in transform.input_types.items()]
        )
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        problem = OutputProblem(
            None,
            f"inputs of the declared types {dict(transform.input_types)}",
            str(exc),
            "pass input values of the declared types",
        )
        raise TransformRunError(transform.name, [problem], row=None) from exc
    result = _call(transform, frame, None)
    if not isinstance(result, pl.DataFrame) or result.height != n_rows:
        got = f"a DataFrame of {result.height} rows" if isinstance(result, pl.DataFrame) else type(result).__name__
        problem = OutputProblem(
            None,
            f"a polars.DataFrame of {n_rows} rows (batch mode)",
            got,
            "return one output row per input row, in order (column expressions, not aggregations)",
        )
        raise TransformRunError(transform.name, [problem], row=None)
    undeclared = tuple(name for name in result.columns if name not in transform.output_types)
    outputs: dict[str, list[object]] = {}
    problems: list[OutputProblem] = []
    null_rows: dict[str, tuple[int, ...]] = {}
    for name, kind in transform.output_types.items():
        if name not in result.columns:
            problems.append(_missing(name, result.columns))
            continue
        column = result.get_column(name)
        values = column.to_list()
        # The column's dtype, not result.schema[name]: the schema is built afresh per call.
        if kind is FieldType.FLOAT and column.dtype == pl.Float64:
            if not may_hold_not_finite(values):  # the usual column: nothing to replace, kept as it is
                outputs[name] = values
                continue
            # The rule for a float column in one pass: NaN and infinities become null.
            outputs[name] = [v if v is None or math.isfinite(v) else None for v in values]
            if rows := not_finite_rows(values):
                null_rows[name] = rows
            continue
        coerced = [coerce_output(kind, v) for v in values]
        bad = next((i for i, v in enumerate(coerced) if v is _REFUSED), None)
        if bad is not None:
            problems.append(_wrong_type(name, kind, values[bad]))
        if kind is FieldType.FLOAT and (rows := not_finite_rows(values)):
            null_rows[name] = rows
        outputs[name] = coerced
    if problems:
        raise TransformRunError(transform.name, problems, row=None, undeclared=undeclared)
    for name in outputs if invalid else ():
        nulled = outputs[name] = list(outputs[name])
        for i in invalid:
            nulled[i] = None
        null_rows[name] = tuple(sorted({*null_rows.get(name, ()), *invalid}))
    return TransformResult(outputs, undeclared, null_rows)

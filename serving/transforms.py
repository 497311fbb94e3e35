"""On-demand transforms at request time, through the one runner
(engine/definitions/transform_runner.py) that training sets and ``plan`` use too.

A transform that raises, omits a declared output or returns a value of the wrong type
becomes a :class:`TransformError` naming the transform (HTTP 500); nothing else is
affected, so the next request is served normally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.definitions.transform_runner import TransformResult, TransformRunError, run_one_row
from engine.definitions.transform_runner import run_transform as run
from serving.exceptions import TransformError
from serving.registry import CompiledTransform


def _served(transform: CompiledTransform, exc: TransformRunError) -> TransformError:
    return TransformError(str(exc), transform=transform.name, hint=exc.hint)


def run_transform(transform: CompiledTransform, inputs: Mapping[str, Sequence[object]], n_rows: int) -> TransformResult:
    """The outputs (``.columns``) and the rows of each float output that were not finite
    (``.not_finite``: served as null with the status ``INVALID``)."""
    try:
        return run(transform, inputs, n_rows)
    except TransformRunError as exc:
        raise _served(transform, exc) from exc


def run_transform_row(transform: CompiledTransform, row: Mapping[str, object]) -> dict[str, object]:
    """:func:`run_transform` of one row (input name -> value): its outputs, one value each."""
    try:
        return run_one_row(transform, row)[0]
    except TransformRunError as exc:
        raise _served(transform, exc) from exc

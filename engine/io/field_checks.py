"""Field-level checks of decoded records: declared kinds, lenient re-parsing of documents
orjson refuses, and declared constraints (docs/semantics.md section 1).

The decoder (``engine.io.decoder``) runs them in the order of ``DeadLetterReason``; each
refused row keeps the first reason found for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.exact_doubles import MAX_EXACT_INTEGER
from engine.io.batches import DeadLetterReason
from engine.io.exceptions import IoValueError
from engine.io.timestamps import show_value

FIELD_KINDS = ("string", "int", "float", "bool")


# Python types each declared kind accepts (bool is never an int or a float here).
ACCEPTED: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "int": frozenset({int}),
    "float": frozenset({float, int}),
    "bool": frozenset({bool}),
}
PLACEHOLDER: dict[str, object] = {"string": "", "int": 0, "float": 0.0, "bool": False}
DTYPE: dict[str, npt.DTypeLike] = {
    "string": object,
    "int": np.int64,
    "float": np.float64,
    "bool": np.bool_,
}
PY_TYPE_KINDS: dict[object, str] = {str: "string", int: "int", float: "float", bool: "bool"}

_R = DeadLetterReason


def kind_of(declared: object, source_name: str, field: str) -> str:
    # Accept a str enum (value), a plain str, or a Python type, whichever definitions hands us.
    kind = PY_TYPE_KINDS.get(declared)
    if kind is None:
        value = declared.value if isinstance(declared, Enum) else declared
        kind = value if isinstance(value, str) else None
    if kind not in FIELD_KINDS:
        raise IoValueError(
            f"EventSource '{source_name}': field '{field}': expected a type in {FIELD_KINDS}, "
            f"got {declared!r}. Hint: declare the schema with string/int/float/bool."
        )
    return kind


class _LenientHooks:
    """Marks whether the stdlib JSON parser met NaN/Infinity or an overflowing number."""

    def __init__(self) -> None:
        self.non_finite = False

    def constant(self, name: str) -> float:
        self.non_finite = True
        return float(name)

    def number(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.non_finite = True
        return value


def parse_non_finite(value: bytes) -> object | None:
    """The document when it is JSON except for NaN/Infinity/overflowing numbers, else None.

    Such documents are not JSON to orjson, but the contract refuses their non-finite fields as
    ``wrong_type``, so they are parsed leniently to find out which field holds one.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    hooks = _LenientHooks()
    try:
        doc = json.loads(text, parse_constant=hooks.constant, parse_float=hooks.number)
    except (ValueError, RecursionError):
        return None
    return doc if hooks.non_finite else None


def lone_surrogate(doc: object) -> str | None:
    """The first string (key or value) of ``doc`` holding a lone UTF-16 surrogate, else None.

    The stdlib parser accepts ``"\\ud800"`` where orjson refuses it; such a string is not
    Unicode text (it cannot be written as UTF-8, hashed for a distinct count or logged),
    so the record is refused like any other invalid JSON.
    """
    pending = [doc]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


class ConstraintLike(Protocol):
    """What the decoder reads of an ``engine.definitions.Constraint``."""

    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def min_length(self) -> int | None: ...
    @property
    def max_length(self) -> int | None: ...
    @property
    def allowed_characters(self) -> str | None: ...


@dataclass(frozen=True)
class Bounds:
    """A field's declared ``Constraint`` in the form the decoder checks it."""

    low: float | None
    high: float | None
    min_length: int | None
    max_length: int | None
    allowed: re.Pattern[str] | None
    allowed_text: str | None

    @classmethod
    def of(cls, constraint: ConstraintLike) -> Bounds:
        chars = constraint.allowed_characters
        return cls(
            constraint.min,
            constraint.max,
            constraint.min_length,
            constraint.max_length,
            None if chars is None else re.compile(f"[{chars}]*"),
            chars,
        )

    # Any: the field's values as decoded from JSON (strings here once the dtype is object).
    def refuse(self, field: str, vals: list[Any], arr: np.ndarray, refused: dict[int, tuple[str, str]]) -> None:
        """Refuse every row whose value breaks the bounds (rows refused earlier keep their
        first reason)."""
        if arr.dtype.kind in "if":
            self._refuse_numbers(field, arr, refused)
        elif arr.dtype.kind == "O":
            self._refuse_strings(field, vals, refused)

    def _refuse_numbers(self, field: str, arr: np.ndarray, refused: dict[int, tuple[str, str]]) -> None:
        bad = np.zeros(len(arr), dtype=np.bool_)
        # NaN compares False both ways; non-finite floats are refused as wrong_type anyway.
        if self.low is not None:
            bad |= arr < self.low
        if self.high is not None:
            bad |= arr > self.high
        if not bad.any():
            return
        low = "-inf" if self.low is None else repr(self.low)
        high = "inf" if self.high is None else repr(self.high)
        refuse_rows(
            refused,
            bad,
            _R.VALUE_OUT_OF_RANGE,
            lambda i: (
                f"field '{field}': value {arr[i].item()!r} is outside the declared range "
                f"[{low}, {high}] (EventSource constraints)"
            ),
        )

    def _refuse_strings(self, field: str, vals: Sequence[str], refused: dict[int, tuple[str, str]]) -> None:
        lengths = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
        bad = np.zeros(len(vals), dtype=np.bool_)
        if self.min_length is not None:
            bad |= lengths < self.min_length
        if self.max_length is not None:
            bad |= lengths > self.max_length
        high = "inf" if self.max_length is None else self.max_length
        refuse_rows(
            refused,
            bad,
            _R.INVALID_STRING,
            lambda i: (
                f"field '{field}': length {int(lengths[i])} is outside the declared "
                f"[{self.min_length or 0}, {high}] characters (EventSource constraints)"
            ),
        )
        if self.allowed is None:
            return
        fullmatch = self.allowed.fullmatch
        for i, v in enumerate(vals):
            if i not in refused and fullmatch(v) is None:
                refused[i] = (
                    _R.INVALID_STRING,
                    f"field '{field}': {show_value(v)} has characters outside the declared "
                    f"[{self.allowed_text}] (EventSource constraints)",
                )


def refuse_separator(field: str, vals: list[str], separator: str, refused: dict[int, tuple[str, str]]) -> None:
    """Refuse the join-key values holding ``separator`` (rows refused earlier keep their
    first reason). One scan of the joined text in C; rows are only looked at when it hits."""
    if separator not in "".join(vals):
        return
    for i, v in enumerate(vals):
        if i not in refused and separator in v:
            refused[i] = (
                _R.INVALID_STRING,
                f"field '{field}': join-key value {show_value(v)} holds the character {separator!r}, which "
                "separates the values of a compound entity key (two entities would become one); "
                "remove it from the producer's ids",
            )


def refuse_inexact_ints(
    field: str, vals: Sequence[object], arr: npt.NDArray[np.int64], refused: dict[int, tuple[str, str]]
) -> None:
    """Refuse the int values a double cannot hold exactly, in a field some aggregation reads
    as a double (docs/semantics.md section 5): summed, averaged or served as min/max/last,
    they would come back rounded."""
    bad = (arr > MAX_EXACT_INTEGER) | (arr < -MAX_EXACT_INTEGER)  # int64 compares: exact
    if not bool(bad.any()):
        return
    refuse_rows(
        refused,
        bad,
        _R.VALUE_OUT_OF_RANGE,
        lambda i: (
            f"field '{field}': {vals[i]} is beyond +-2**53 ({MAX_EXACT_INTEGER}), the largest integers a "
            "double holds exactly, and an aggregation reads this field as a double (sum, mean, min, max, "
            "last, stddev); declare the field a string if it is an id, or send it in smaller units"
        ),
    )


def refuse_rows(
    refused: dict[int, tuple[str, str]],
    bad: npt.NDArray[np.bool_],
    reason: str,
    detail: Callable[[int], str],
) -> None:
    """Refuse the ``bad`` rows not refused yet (the first reason wins)."""
    for i in np.flatnonzero(bad).tolist():
        if i not in refused:
            refused[i] = (reason, detail(i))


# Any: values straight from JSON; the decoder checks them by type() (hot path, not narrowed by mypy).
def field_values(objs: list[dict[str, object]], field: str) -> list[Any]:
    """The field of every object, None where absent."""
    try:
        # itemgetter through map runs in C: about twice as fast as a comprehension with .get.
        return list(map(itemgetter(field), objs))
    except KeyError:
        return [o.get(field) for o in objs]

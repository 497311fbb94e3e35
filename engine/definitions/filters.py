"""Declarative filter expressions over source fields: ``col("event_type") == "PURCHASE"``.

Expressions evaluate vectorized over a mapping of column name -> numpy array (strings
as object or unicode arrays) and have a canonical ``to_dict()`` used by fingerprints
and plan files. ``bool(expr)`` raises, because ``a and b`` or ``1 < col("x") < 5``
would silently keep only one side; use ``&``, ``|`` and ``~``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from engine.array_types import AnyArray, BoolArray
from engine.definitions.exceptions import DefinitionTypeError, Problem
from engine.json_types import JSONObject

Scalar = str | int | float | bool
_OPS = ("==", "!=", "<", "<=", ">", ">=")
_ORDERING = frozenset({"<", "<=", ">", ">="})


def _check_scalar(field: str, op: str, value: object) -> Scalar:
    if not isinstance(value, str | int | float | bool):
        raise DefinitionTypeError(
            "Filter",
            f"col({field!r}) {op} ...",
            [
                Problem(
                    "value",
                    "a str, int, float or bool literal",
                    f"{value!r} ({type(value).__name__})",
                    "compare a column with a literal, e.g. col('event_type') == 'PURCHASE'",
                    True,
                )
            ],
        )
    return value


class Expr:
    """Base class of boolean filter expressions."""

    def evaluate(self, columns: Mapping[str, AnyArray]) -> BoolArray:
        raise NotImplementedError

    def to_dict(self) -> JSONObject:
        raise NotImplementedError

    def leaves(self) -> Iterator[Compare | IsIn]:
        """The comparisons the expression is built from (for schema checks)."""
        raise NotImplementedError

    def fields(self) -> frozenset[str]:
        return frozenset(leaf.field for leaf in self.leaves())

    def __and__(self, other: Expr) -> Expr:
        return And(self, _expr(other, "&"))

    def __or__(self, other: Expr) -> Expr:
        return Or(self, _expr(other, "|"))

    def __invert__(self) -> Expr:
        return Not(self)

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of filter {self!r} is ambiguous. Hint: combine filters with & | ~ "
            "(not 'and', 'or', 'not'), and write range checks as (col('x') > 1) & (col('x') < 5)"
        )


def _expr(value: object, op: str) -> Expr:
    if not isinstance(value, Expr):
        raise DefinitionTypeError(
            "Filter",
            f"... {op} {value!r}",
            [
                Problem(
                    "operand",
                    "a filter expression",
                    f"{value!r} ({type(value).__name__})",
                    "both sides of & and | must be comparisons such as col('x') == 1",
                    True,
                )
            ],
        )
    return value


def _column(columns: Mapping[str, AnyArray], field: str) -> AnyArray:
    try:
        return columns[field]
    except KeyError:
        raise KeyError(f"filter needs column {field!r}; columns given: {sorted(columns)}") from None


@dataclass(frozen=True, eq=True)
class Compare(Expr):
    field: str
    op: str
    value: Scalar

    def evaluate(self, columns: Mapping[str, AnyArray]) -> BoolArray:
        arr = _column(columns, self.field)
        if self.op == "==":
            out = arr == self.value
        elif self.op == "!=":
            out = arr != self.value
        elif self.op == "<":
            out = arr < self.value
        elif self.op == "<=":
            out = arr <= self.value
        elif self.op == ">":
            out = arr > self.value
        else:
            out = arr >= self.value
        return np.asarray(out, dtype=np.bool_)

    def to_dict(self) -> JSONObject:
        return {"op": self.op, "field": self.field, "value": self.value}

    def leaves(self) -> Iterator[Compare | IsIn]:
        yield self

    def __repr__(self) -> str:
        return f"col({self.field!r}) {self.op} {self.value!r}"


@dataclass(frozen=True, eq=True)
class IsIn(Expr):
    field: str
    values: tuple[Scalar, ...]

    def evaluate(self, columns: Mapping[str, AnyArray]) -> BoolArray:
        arr = _column(columns, self.field)
        out = np.zeros(arr.shape, dtype=np.bool_)
        # One vectorized equality per listed value: works for object (string) arrays,
        # where np.isin would fall back to sorting mixed Python objects.
        for value in self.values:
            out |= np.asarray(arr == value, dtype=np.bool_)
        return out

    def to_dict(self) -> JSONObject:
        # Canonical: order and repetition of the listed values do not matter.
        ordered = sorted(set(self.values), key=lambda v: (type(v).__name__, json.dumps(v)))
        return {"op": "isin", "field": self.field, "values": ordered}

    def leaves(self) -> Iterator[Compare | IsIn]:
        yield self

    def __repr__(self) -> str:
        return f"col({self.field!r}).isin({list(self.values)!r})"


@dataclass(frozen=True, eq=True)
class _Binary(Expr):
    left: Expr
    right: Expr
    _name = ""
    _symbol = ""

    def _combine(self, a: BoolArray, b: BoolArray) -> BoolArray:
        raise NotImplementedError

    def evaluate(self, columns: Mapping[str, AnyArray]) -> BoolArray:
        return self._combine(self.left.evaluate(columns), self.right.evaluate(columns))

    def to_dict(self) -> JSONObject:
        return {"op": self._name, "args": [self.left.to_dict(), self.right.to_dict()]}

    def leaves(self) -> Iterator[Compare | IsIn]:
        yield from self.left.leaves()
        yield from self.right.leaves()

    def __repr__(self) -> str:
        return f"({self.left!r}) {self._symbol} ({self.right!r})"


@dataclass(frozen=True, eq=True, repr=False)
class And(_Binary):
    _name = "and"
    _symbol = "&"

    def _combine(self, a: BoolArray, b: BoolArray) -> BoolArray:
        return a & b


@dataclass(frozen=True, eq=True, repr=False)
class Or(_Binary):
    _name = "or"
    _symbol = "|"

    def _combine(self, a: BoolArray, b: BoolArray) -> BoolArray:
        return a | b


@dataclass(frozen=True, eq=True)
class Not(Expr):
    operand: Expr

    def evaluate(self, columns: Mapping[str, AnyArray]) -> BoolArray:
        return ~self.operand.evaluate(columns)

    def to_dict(self) -> JSONObject:
        return {"op": "not", "arg": self.operand.to_dict()}

    def leaves(self) -> Iterator[Compare | IsIn]:
        yield from self.operand.leaves()

    def __repr__(self) -> str:
        return f"~({self.operand!r})"


class Col:
    """A reference to a source field; compare it to get an ``Expr``."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    def _cmp(self, op: str, value: object) -> Compare:
        return Compare(self.field, op, _check_scalar(self.field, op, value))

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        return self._cmp("==", value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        return self._cmp("!=", value)

    def __lt__(self, value: object) -> Compare:
        return self._cmp("<", value)

    def __le__(self, value: object) -> Compare:
        return self._cmp("<=", value)

    def __gt__(self, value: object) -> Compare:
        return self._cmp(">", value)

    def __ge__(self, value: object) -> Compare:
        return self._cmp(">=", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[object]) -> IsIn:
        if isinstance(values, str | bytes):
            raise DefinitionTypeError(
                "Filter",
                f"col({self.field!r}).isin(...)",
                [
                    Problem(
                        "values",
                        "a list of literals",
                        repr(values),
                        f"write col({self.field!r}).isin([{values!r}])",
                        True,
                    )
                ],
            )
        items = tuple(_check_scalar(self.field, "isin", v) for v in values)
        if not items:
            raise DefinitionTypeError(
                "Filter",
                f"col({self.field!r}).isin(...)",
                [Problem("values", "at least one value", "an empty list", "list the accepted values", True)],
            )
        return IsIn(self.field, items)

    def __repr__(self) -> str:
        return f"col({self.field!r})"


def col(field: str) -> Col:
    if not isinstance(field, str):
        raise DefinitionTypeError(
            "Filter",
            repr(field),
            [
                Problem(
                    "field",
                    "a source field name",
                    f"{field!r} ({type(field).__name__})",
                    "write col('event_type')",
                    True,
                )
            ],
        )
    return Col(field)

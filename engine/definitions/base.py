"""Shared building blocks of the definition classes.

``FieldType`` (schema types), ``FrozenMap`` (an immutable, hashable mapping),
``Checker`` (collects every problem of one object, then raises once) and the
``definition`` class decorator, which makes a frozen dataclass whose constructor
reports unknown or missing keyword arguments by kind, name and field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar, cast, dataclass_transform

from engine.definitions.exceptions import DefinitionError, DefinitionTypeError, Problem
from engine.wording import quoted, shortened

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*\Z")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class FieldType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    LIST = "list"  # the value of last_n / first_n / last_distinct_n; never a schema field's type


_PY_TYPES: dict[object, FieldType] = {
    str: FieldType.STRING,
    int: FieldType.INT,
    float: FieldType.FLOAT,
    bool: FieldType.BOOL,
}
NUMERIC_TYPES = frozenset({FieldType.INT, FieldType.FLOAT})


# Any: one map type holds every definition map (schemas, constraints, options); a value type
# per use would need a generic FrozenMap and changes at every reader.
class FrozenMap(Mapping[str, Any]):
    """Read-only mapping that keeps insertion order and can be hashed."""

    __slots__ = ("_data",)

    # Any: the values of whichever definition map this is (see the class comment).
    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._data: dict[str, Any] = dict(data)  # Any: the map's values (see the class comment)

    def __getitem__(self, key: str) -> Any:  # one map type holds every definition map (schemas, constraints, ...)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)


def closest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str], what: str = "values") -> str:
    options = sorted(choices)
    match = closest(word, options)
    return (f"did you mean {match!r}? " if match else "") + f"valid {what}: {quoted(options)}"


def window_label(ms: int) -> str:
    """Shortest exact label of a duration: 15m, 1h, 1d, 90s, 1500ms."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def timedelta_ms(value: timedelta) -> int:
    """Whole milliseconds of a timedelta (callers check wholeness first)."""
    return (value.days * 86_400 + value.seconds) * 1000 + value.microseconds // 1000


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Checker:
    """Collects the problems of one definition object and raises them together."""

    def __init__(self, kind: str, name: object) -> None:
        self.kind = kind
        self.name = name if isinstance(name, str) else repr(name)
        self.problems: list[Problem] = []

    def add(self, field: str, expected: str, got: object, hint: str, *, type_error: bool = False) -> None:
        shown = got if isinstance(got, str) and got.startswith("<") else _describe(got)
        self.problems.append(Problem(field, expected, shown, hint, type_error))

    def add_raw(self, field: str, expected: str, got: str, hint: str) -> None:
        """Like ``add`` but ``got`` is already a description, not a value."""
        self.problems.append(Problem(field, expected, got, hint))

    def type_is(self, field: str, value: object, types: type | tuple[type, ...], expected: str, hint: str) -> bool:
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            self.add(field, expected, value, hint, type_error=True)
        return ok

    def name_field(self, field: str, value: object) -> bool:
        if not isinstance(value, str):
            self.add(
                field,
                "a name string",
                value,
                "give the definition an explicit name such as 'user_spend'",
                type_error=True,
            )
            return False
        if not NAME_RE.match(value):
            self.add(
                field,
                "a lower-case identifier matching [a-z_][a-z0-9_]*",
                value,
                "use lower-case letters, digits and underscores, not starting with a digit",
            )
            return False
        return True

    def text(self, field: str, value: object) -> None:
        self.type_is(field, value, str, "a string", f"pass {field}='...' or leave it out")

    def duration(self, field: str, value: object, *, minimum_ms: int, allow_zero: bool = False) -> int | None:
        """Checks a timedelta of whole milliseconds; returns its ms or None."""
        if not isinstance(value, timedelta):
            self.add(
                field,
                "a datetime.timedelta",
                value,
                f"write {field}=timedelta(minutes=15) (from datetime import timedelta)",
                type_error=True,
            )
            return None
        if value.microseconds % 1000:
            self.add(field, "a whole number of milliseconds", value, "round the duration to milliseconds")
            return None
        ms = timedelta_ms(value)
        if ms < 0 or (ms == 0 and not allow_zero) or (0 < ms < minimum_ms):
            low = "0" if allow_zero else f"{minimum_ms} ms"
            self.add_raw(
                field,
                f"a duration of at least {low}",
                f"{ms} ms" if ms < 0 else f"{ms} ms ({value!r})",
                "use a positive duration" if not allow_zero else "use timedelta(0) or a positive duration",
            )
            return None
        return ms

    def check(self) -> None:
        if not self.problems:
            return
        if all(p.is_type_error for p in self.problems):
            raise DefinitionTypeError(self.kind, self.name, self.problems)
        raise DefinitionError(self.kind, self.name, self.problems)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _describe(value: object) -> str:
    return f"{shortened(repr(value), 80)} ({type(value).__name__})"


def parse_schema(checker: Checker, field: str, schema: object, *, allow_empty: bool = False) -> FrozenMap:
    """Normalizes a schema mapping of field name -> type to FrozenMap[str, FieldType]."""
    out: dict[str, FieldType] = {}
    if not isinstance(schema, Mapping):
        checker.add(
            field,
            "a mapping of field name to type",
            schema,
            "write {'amount': 'float', 'user_id': 'string'}",
            type_error=True,
        )
        return FrozenMap()
    if not schema and not allow_empty:
        checker.add(field, "at least one field", schema, "declare the fields, e.g. {'amount': 'float'}")
    valid = [t.value for t in FieldType if t is not FieldType.LIST]
    for key, raw in schema.items():
        if not isinstance(key, str) or not FIELD_RE.match(key):
            checker.add(
                f"{field}[{key!r}]",
                "a field name matching [A-Za-z_][A-Za-z0-9_]*",
                key,
                "use letters, digits and underscores",
            )
            continue
        ftype = _PY_TYPES.get(raw) if isinstance(raw, type) else None
        if ftype is None and isinstance(raw, str) and raw in valid:
            ftype = FieldType(raw)
        if ftype is None:
            hint = did_you_mean(raw, valid) if isinstance(raw, str) else f"use one of {valid} or str/int/float/bool"
            checker.add(f"{field}[{key!r}]", "a field type (string, int, float, bool)", raw, hint)
            continue
        out[key] = ftype
    return FrozenMap(out)


def finite_number_or_none(value: object) -> bool:
    return value is None or (is_number(value) and math.isfinite(float(value)))  # type: ignore[arg-type]


_C = TypeVar("_C", bound=type)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def definition(kind: str) -> Callable[[_C], _C]:
    """Frozen dataclass whose constructor names unknown/missing arguments clearly."""

    def wrap(cls: _C) -> _C:
        # Any: the decorated class gets its __init__ replaced below, which mypy cannot follow on a type.
        dc: Any = dataclasses.dataclass(frozen=True)(cls)
        fields = [f for f in dataclasses.fields(dc) if f.init]
        names = [f.name for f in fields]
        required = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        positional = [f.name for f in fields if not f.kw_only]
        original = dc.__init__

        @functools.wraps(original)
        def __init__(self: object, *args: object, **kwargs: object) -> None:
            given = dict(zip(positional, args, strict=False))
            label = kwargs.get("name", given.get("name", "?"))
            checker = Checker(kind, label if isinstance(label, str) else "?")
            if len(args) > len(positional):
                checker.add_raw(
                    "<positional>",
                    f"at most {len(positional)} positional arguments",
                    str(len(args)),
                    f"pass the rest by keyword: {', '.join(names)}",
                )
            for key in kwargs:
                if key not in names:
                    checker.add_raw(
                        key, "a known field", f"unknown keyword argument {key!r}", did_you_mean(key, names, "fields")
                    )
                elif key in given:
                    checker.add_raw(key, "one value", "the field given both by position and by keyword", "pass it once")
            for key in required:
                if key not in kwargs and key not in given:
                    checker.add_raw(key, "a value", "nothing", f"{kind} needs {key}=...")
            if checker.problems:
                raise DefinitionTypeError(
                    kind, checker.name, [dataclasses.replace(p, is_type_error=True) for p in checker.problems]
                )
            original(self, *args, **kwargs)

        dc.__init__ = __init__
        return cast(_C, dc)

    return wrap

"""Errors raised while defining, loading and checking feature definitions.

``DefinitionError`` is a ``ValueError`` and ``DefinitionTypeError`` a ``TypeError``
(and a ``DefinitionError``), so callers can catch either the specific or the broad
kind. Both carry every problem of one definition object, not only the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.exceptions import StreamfeatError
from engine.wording import counted


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of one definition."""

    field: str
    expected: str
    got: str
    hint: str
    is_type_error: bool = False

    def render(self) -> str:
        return f"field '{self.field}': expected {self.expected}, got {self.got}. Hint: {self.hint}"


class DefinitionError(StreamfeatError, ValueError):
    """A definition object is invalid; the message lists every problem found."""

    exit_code = 2

    def __init__(self, kind: str, name: str, problems: Sequence[Problem]) -> None:
        self.kind = kind
        self.name = name
        self.problems: tuple[Problem, ...] = tuple(problems)
        prefix = f"{kind} '{name}'"
        if len(self.problems) == 1:
            message = f"{prefix}: {self.problems[0].render()}"
        else:
            lines = "\n".join(f"  - {p.render()}" for p in self.problems)
            message = f"{prefix}: {len(self.problems)} problems:\n{lines}"
        super().__init__(message)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(p.field for p in self.problems)


class DefinitionTypeError(DefinitionError, TypeError):
    """Every problem of the definition is a value of the wrong Python type."""


class RepoValidationError(StreamfeatError, ValueError):
    """A feature repo could not be loaded; ``errors`` lists every error, by module."""

    exit_code = 2

    def __init__(self, path: str, errors: Sequence[str]) -> None:
        self.path = path
        self.errors: tuple[str, ...] = tuple(errors)
        # Nested multi-problem messages are indented so each top-level error stays one item.
        lines = "\n".join("  - " + e.replace("\n", "\n    ") for e in self.errors)
        super().__init__(
            f"feature repo {path} is invalid: {counted(len(self.errors), 'error')}:\n{lines}",
            hint="fix every error listed; each starts with the file:line at fault",
        )


class OnDemandCheckError(DefinitionError):
    """Running an on-demand transform on a synthetic input did not give its declared outputs."""


class PlanError(StreamfeatError):
    """A plan cannot be computed or applied (bad plan file, shard count change, ...)."""

    exit_code = 2


class PlanMismatchError(PlanError):
    """The repo does not match the applied plan (or nothing was applied yet)."""

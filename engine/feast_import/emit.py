"""The module a Feast translation writes: its blocks, imports and variable names, and
what was translated or not (with the reason)."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.feast_import.exceptions import Untranslatable
from engine.feast_import.reader import FeastCall, FeastRepoSource, Projection, StaticValue, Unresolved

HEADER_IMPORTS = ("from datetime import timedelta", "from typing import Any")


@dataclass
class ModuleWriter:
    repo: FeastRepoSource
    blocks: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    variables: dict[int, str] = field(default_factory=dict)  # id(call) -> emitted variable
    failed: dict[int, str] = field(default_factory=dict)  # id(call) -> why not
    used: set[str] = field(default_factory=set)
    translated: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (what, why): not translated
    approximated: list[tuple[str, str]] = field(default_factory=list)  # (what, what differs): translated approximately

    def variable(self, name: str) -> str:
        base = re.sub(r"\W", "_", name) or "feast_object"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = f"_{base}"
        out, i = base, 2
        while out in self.used:
            out, i = f"{base}_{i}", i + 1
        self.used.add(out)
        return out

    def emit(self, call: FeastCall, build: Callable[[FeastCall], tuple[str, str]]) -> None:
        what = f"{call.kind} {call.name!r} ({call.where})"
        try:
            var, code = build(call)
        except Untranslatable as exc:
            self.failed[id(call)] = str(exc)
            self.notes.append((what, str(exc)))
            return
        self.variables[id(call)] = var
        self.blocks.append(code)
        self.translated.append(f"{call.kind} {call.name!r}")

    def ref(self, value: StaticValue, role: str) -> str:
        """The emitted variable of a referenced object (or a view selection)."""
        if isinstance(value, Projection):
            return f"{self.ref(value.view, role)}[{list(value.features)!r}]"
        if not isinstance(value, FeastCall):
            raise Untranslatable(f"{role}: expected a Feast object, got {show(value)}")
        if id(value) in self.variables:
            return self.variables[id(value)]
        why = self.failed.get(id(value), "not translated")
        raise Untranslatable(f"{role} {value.kind} {value.name!r} is not translated ({why})")


def show(value: StaticValue) -> str:
    if isinstance(value, Unresolved):
        return f"<{value.reason}>"
    if isinstance(value, FeastCall):
        return f"{value.kind}(...)"
    return repr(value)[:60]

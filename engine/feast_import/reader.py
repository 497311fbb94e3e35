"""Read a Feast repo's Python without running it (and without Feast installed).

Feast repos declare their objects as module-level calls with literal arguments
(``Entity(name=..., join_keys=[...])``, ``timedelta(minutes=15)``, decorated
on-demand functions). This reader parses every ``.py`` file with :mod:`ast` and
evaluates that subset statically: literals, names bound at module level (across the
repo's files), constructor calls (kept as :class:`FeastCall` records), ``timedelta``,
``view[["a", "b"]]`` projections and decorated functions. Anything else becomes an
:class:`Unresolved` value carrying the reason, which the translator lists instead of
guessing. Nothing of the repo is imported or executed.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import EllipsisType
from typing import TypeAlias

from engine.feast_import.exceptions import FeastImportError

# Decorators that turn a function into a Feast object (the function is its transform).
DECORATORS = {"on_demand_feature_view": "OnDemandFeatureView", "stream_feature_view": "StreamFeatureView"}
_PASSES = 3  # names defined in a later file resolve on the next pass
_SYMBOL_MODULES = ("feast", "datetime")  # their imported names become Symbols


@dataclass(frozen=True)
class Symbol:
    """An imported name or attribute chain, e.g. ``Float64`` or ``ValueType.STRING``."""

    path: str

    @property
    def last(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Unresolved:
    """A value the reader cannot evaluate statically; ``reason`` says what it was."""

    reason: str


@dataclass(eq=False)
class FeastCall:
    """One constructor call (or decorated function) of the repo: ``kind`` is the callee's name."""

    kind: str
    kwargs: dict[str, StaticValue]
    args: tuple[StaticValue, ...]
    where: str  # file:line
    variable: str = ""  # the module-level name bound to it
    function: ast.FunctionDef | None = None  # decorated function (the transform)
    imports: tuple[tuple[str, tuple[str, ...]], ...] = ()  # its file's non-Feast imports: (line, names bound)

    @property
    def name(self) -> str:
        value = self.kwargs.get("name", self.args[0] if self.args and isinstance(self.args[0], str) else None)
        if isinstance(value, str):
            return value
        if self.function is not None:
            return self.function.name
        return self.variable


@dataclass(frozen=True)
class Projection:
    """``view[["a", "b"]]``: some features of a view."""

    view: FeastCall
    features: tuple[str, ...]


#: What the reader evaluates a repo expression to: a literal (lists and sets as lists),
#: a Feast call or projection, an imported symbol, a timedelta, or an Unresolved reason.
StaticValue: TypeAlias = (
    "bool | int | float | complex | str | bytes | EllipsisType | timedelta | Symbol | Unresolved"
    " | FeastCall | Projection | list[StaticValue] | dict[StaticValue, StaticValue] | None"
)


@dataclass
class FeastRepoSource:
    """Every Feast object found in a repo, in file order."""

    calls: list[FeastCall] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, why)

    def of_kind(self, *kinds: str) -> list[FeastCall]:
        return [c for c in self.calls if c.kind in kinds]


def _timedelta(args: tuple[StaticValue, ...], kwargs: Mapping[str, StaticValue], text: str) -> timedelta | Unresolved:
    # Literal numbers only (bool is an int to isinstance, not to timedelta's reader).
    numbers = [v for v in args if isinstance(v, int | float) and not isinstance(v, bool)]
    named = {k: v for k, v in kwargs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if len(numbers) != len(args) or len(named) != len(kwargs):
        return Unresolved(f"timedelta with non-literal arguments: {text}")
    try:
        return timedelta(*numbers, **named)
    except (TypeError, ValueError, OverflowError) as exc:
        return Unresolved(f"invalid timedelta {text}: {exc}")


class _Module:
    """Evaluates one file's module-level statements against the shared namespace."""

    def __init__(self, path: Path, rel: str, tree: ast.Module, names: dict[str, StaticValue]) -> None:
        self.path = path
        self.rel = rel
        self.tree = tree
        self.names = names
        self.imports = tuple(
            (ast.unparse(s), tuple(a.asname or a.name.split(".")[0] for a in s.names))
            for s in tree.body
            if isinstance(s, ast.Import | ast.ImportFrom) and not _imports_from(s, ("feast",))
        )
        self.calls: dict[int, FeastCall] = {}  # by node id: the same object on every pass

    def run(self) -> None:
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self._bind_import(stmt)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                self._bind(stmt.targets[0].id, self.eval(stmt.value))
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                self._bind(stmt.target.id, self.eval(stmt.value))
            elif isinstance(stmt, ast.FunctionDef):
                self._bind(stmt.name, self._function(stmt))

    def _bind(self, name: str, value: StaticValue) -> None:
        if isinstance(value, FeastCall) and not value.variable:
            value.variable = name
        self.names[name] = value

    def _bind_import(self, stmt: ast.Import | ast.ImportFrom) -> None:
        for alias in stmt.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name.split(".")[0]
            if isinstance(stmt, ast.ImportFrom) and not _imports_from(stmt, _SYMBOL_MODULES):
                continue  # a repo module's name: bound where that module defines it
            existing = self.names.get(local)
            if existing is None or isinstance(existing, Symbol | Unresolved):
                self.names[local] = Symbol(alias.name if isinstance(stmt, ast.ImportFrom) else local)

    def _function(self, node: ast.FunctionDef) -> FeastCall | Unresolved:
        for decorator in node.decorator_list:
            func = decorator.func if isinstance(decorator, ast.Call) else decorator
            callee = self.eval(func)
            if isinstance(callee, Symbol) and callee.last in DECORATORS:
                call = self.calls.get(id(node))
                kwargs = (
                    {k.arg: self.eval(k.value) for k in decorator.keywords if k.arg}
                    if isinstance(decorator, ast.Call)
                    else {}
                )
                if call is None:
                    call = FeastCall(
                        DECORATORS[callee.last],
                        kwargs,
                        (),
                        f"{self.rel}:{node.lineno}",
                        variable=node.name,
                        function=node,
                        imports=self.imports,
                    )
                    self.calls[id(node)] = call
                else:
                    call.kwargs = kwargs
                return call
        return Unresolved(f"function {node.name}() (plain functions are not Feast objects)")

    def eval(self, node: ast.expr) -> StaticValue:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {
                self.eval(k) if k is not None else None: self.eval(v)
                for k, v in zip(node.keys, node.values, strict=True)
            }
        if isinstance(node, ast.Name):
            return self.names.get(node.id, Unresolved(f"name {node.id!r} is not bound at module level"))
        if isinstance(node, ast.Attribute):
            base = self.eval(node.value)
            if isinstance(base, Symbol):
                return Symbol(f"{base.path}.{node.attr}")
            return Unresolved(f"attribute {ast.unparse(node)}")
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.eval(node.operand)
            if isinstance(operand, int | float):
                return -operand
        return Unresolved(f"expression not evaluated statically: {ast.unparse(node)[:80]}")

    def _subscript(self, node: ast.Subscript) -> Projection | Unresolved:
        target = self.eval(node.value)
        features = self.eval(node.slice)
        names = [f for f in features if isinstance(f, str)] if isinstance(features, list) else None
        if (
            isinstance(target, FeastCall)
            and isinstance(features, list)
            and names is not None
            and len(names) == len(features)
        ):
            return Projection(target, tuple(names))
        return Unresolved(f"subscript {ast.unparse(node)[:80]}")

    def _call(self, node: ast.Call) -> FeastCall | timedelta | Unresolved:
        callee = self.eval(node.func)
        text = ast.unparse(node)[:80]
        if not isinstance(callee, Symbol):
            return Unresolved(f"call of something not imported from Feast: {text}")
        args = tuple(self.eval(a) for a in node.args)
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords if k.arg}
        if callee.last == "timedelta":
            return _timedelta(args, kwargs, text)
        call = self.calls.get(id(node))
        if call is None:
            call = FeastCall(callee.last, kwargs, args, f"{self.rel}:{node.lineno}")
            self.calls[id(node)] = call
        else:
            call.kwargs, call.args = kwargs, args
        return call


def _imports_from(stmt: ast.Import | ast.ImportFrom, modules: tuple[str, ...]) -> bool:
    if isinstance(stmt, ast.ImportFrom):
        return stmt.level == 0 and (stmt.module or "").split(".")[0] in modules
    return any(a.name.split(".")[0] in modules for a in stmt.names)


def _collect(value: StaticValue, out: list[FeastCall], seen: set[int]) -> None:
    if isinstance(value, FeastCall):
        if id(value) in seen:
            return
        seen.add(id(value))
        for item in (*value.args, *value.kwargs.values()):
            _collect(item, out, seen)
        out.append(value)
    elif isinstance(value, Projection):
        _collect(value.view, out, seen)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, out, seen)


def read_feast_repo(path: str | Path) -> FeastRepoSource:
    """Every Feast object of the ``.py`` files under ``path`` (tests and hidden dirs skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise FeastImportError(
            f"Feast repo {root}: expected a directory of Python files, got {'a file' if root.exists() else 'nothing'}",
            hint="pass the directory holding feature_store.yaml",
        )
    result = FeastRepoSource()
    names: dict[str, StaticValue] = {}
    modules: list[_Module] = []
    for file in sorted(root.rglob("*.py")):
        rel = str(file.relative_to(root))
        if any(
            part.startswith((".", "test")) or part in ("venv", "__pycache__") for part in file.relative_to(root).parts
        ):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"), filename=rel)
        except (SyntaxError, UnicodeDecodeError) as exc:
            result.skipped_files.append((rel, f"not readable Python: {exc}"))
            continue
        modules.append(_Module(file, rel, tree, names))
    for _ in range(_PASSES):
        for module in modules:
            module.run()
    seen: set[int] = set()
    for value in list(names.values()):
        _collect(value, result.calls, seen)
    return result

"""Import a feature repo's modules one top-level statement at a time, collecting errors.

Python stops executing a module at its first exception, so a repo with two bad
definitions in one file would show only the first. While :func:`load_repo` reads a
repo, its modules are executed statement by statement instead: a statement that raises
is recorded (with its file:line) and the next one runs: each statement is compiled
inside a ``try`` whose handler reports to the loader. A later statement that fails
only because it uses a name an earlier failure left unbound (``NameError``, or an
``ImportError`` of that name from another repo module) is a consequence, not a new
mistake: its names are marked unbound in turn and nothing more is reported. Inside a
failed statement, each definition it builds is built again on its own (``_probes``), so
two bad ``Aggregation``s of one view are both reported, each at its line.

Only repo modules loaded through :func:`collecting_imports` behave like this; importing
definitions anywhere else, and constructing them, raises at once as usual.
"""

from __future__ import annotations

import ast
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType

# Formats one failure as ``file:line: message`` (repo.py owns the wording).
ErrorText = Callable[[str, BaseException], str]


@dataclass
class FailedStatements:
    """What the statement-wise loader met: reported errors and the names left unbound."""

    describe: ErrorText
    errors: list[str] = field(default_factory=list)
    unbound: dict[str, set[str]] = field(default_factory=dict)  # module -> names

    def is_consequence(self, module: str, exc: BaseException) -> bool:
        """True when ``exc`` only repeats an earlier failure (a name it left unbound)."""
        if isinstance(exc, NameError) and exc.name is not None:
            return exc.name in self.unbound.get(module, set())
        if isinstance(exc, ImportError) and exc.name is not None:
            missing = _missing_import_name(exc)
            return missing is not None and missing in self.unbound.get(exc.name, set())
        return False


def _missing_import_name(exc: ImportError) -> str | None:
    # "cannot import name 'x' from 'pkg.mod' (...)": the message is the only place naming x.
    text = str(exc)
    prefix = "cannot import name '"
    if not text.startswith(prefix):
        return None
    return text[len(prefix) :].split("'", 1)[0]


def _bound_names(statement: ast.stmt) -> set[str]:
    """Module-level names a statement would bind."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    names: set[str] = set()
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


_HOOK = "__streamfeat_statement_failed__"
_NESTED_HOOK = "__streamfeat_definition_failed__"
_IS_DEFINITION = "__streamfeat_is_definition__"


def _is_definition_class(target: object) -> bool:
    """Whether ``target`` is a class of ``engine.definitions`` (plain constructors)."""
    return isinstance(target, type) and target.__module__.startswith("engine.definitions.")


def _probes(statement: ast.stmt) -> list[ast.stmt]:
    """For a failed statement: every definition built inside it, built again on its own.

    Python stops a statement at its first exception, so a view whose first ``Aggregation``
    raised would hide a second bad one. Each nested call of a definition class (checked
    when the probe runs; other calls are left alone) runs in its own ``try``, at its own
    line, and reports to the loader; a call that needs a name bound only inside the
    statement raises NameError, which the loader ignores.
    """
    outer = statement.value if isinstance(statement, ast.Assign | ast.AnnAssign | ast.Expr) else None
    probes: list[ast.stmt] = []
    for node in ast.walk(statement):
        if not isinstance(node, ast.Call) or node is outer:
            continue
        if not isinstance(node.func, ast.Name | ast.Attribute):
            continue
        call = copy.deepcopy(node)
        check = ast.Call(func=ast.Name(_IS_DEFINITION, ast.Load()), args=[copy.deepcopy(node.func)], keywords=[])
        report = ast.Expr(
            ast.Call(
                func=ast.Name(_NESTED_HOOK, ast.Load()),
                args=[ast.Name("__streamfeat_nested_error__", ast.Load())],
                keywords=[],
            )
        )
        handler = ast.ExceptHandler(
            type=ast.Name("Exception", ast.Load()), name="__streamfeat_nested_error__", body=[report]
        )
        body: list[ast.stmt] = [ast.If(test=check, body=[ast.Expr(call)], orelse=[])]
        probe = ast.Try(body=body, handlers=[handler], orelse=[], finalbody=[])
        probes.append(ast.copy_location(probe, node))
    return probes


def _keeps_its_place(statement: ast.stmt) -> bool:
    """A docstring or ``from __future__`` import: must stay a bare top-level statement."""
    if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


def _guarded(statement: ast.stmt, index: int) -> ast.stmt:
    """``try: <statement> except (Exception, SystemExit) as e: __streamfeat_statement_failed__(index, e)``,
    the handler followed by the statement's :func:`_probes`."""
    handler_call = ast.Expr(
        ast.Call(
            func=ast.Name(_HOOK, ast.Load()),
            args=[ast.Constant(index), ast.Name("__streamfeat_error__", ast.Load())],
            keywords=[],
        )
    )
    # SystemExit too: a module calling sys.exit() would end `streamfeat plan` silently.
    caught = ast.Tuple([ast.Name("Exception", ast.Load()), ast.Name("SystemExit", ast.Load())], ast.Load())
    handler = ast.ExceptHandler(type=caught, name="__streamfeat_error__", body=[handler_call, *_probes(statement)])
    guard = ast.Try(body=[statement], handlers=[handler], orelse=[], finalbody=[])
    return ast.fix_missing_locations(ast.copy_location(guard, statement))


class _StatementwiseLoader(importlib.machinery.SourceFileLoader):
    """Runs each top-level statement of the module guarded by a ``try`` (see the module
    docstring). The guarded code is never written to ``__pycache__``: a normal import of
    the same file must get the normal code."""

    def __init__(self, fullname: str, path: Path, failed: FailedStatements) -> None:
        super().__init__(fullname, str(path))
        self.failed = failed
        self.statements: list[ast.stmt] = []

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        tree = ast.parse(self.get_data(path), filename=path)  # a SyntaxError fails the module
        self.statements = list(tree.body)
        tree.body = [s if _keeps_its_place(s) else _guarded(s, i) for i, s in enumerate(self.statements)]
        return self.source_to_code(tree, path)

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__[_HOOK] = lambda index, exc: self._failed(module.__name__, index, exc)
        module.__dict__[_NESTED_HOOK] = lambda exc: self._nested_failed(module.__name__, exc)
        module.__dict__[_IS_DEFINITION] = _is_definition_class
        try:
            super().exec_module(module)
        finally:
            for name in (_HOOK, _NESTED_HOOK, _IS_DEFINITION):
                module.__dict__.pop(name, None)

    def _failed(self, module: str, index: int, exc: BaseException) -> None:
        statement = self.statements[index]
        if not self.failed.is_consequence(module, exc):
            self.failed.errors.append(self.failed.describe(module, exc))
        self.failed.unbound.setdefault(module, set()).update(_bound_names(statement))

    def _nested_failed(self, module: str, exc: BaseException) -> None:
        """A definition built inside a failed statement raised on its own (see _probes)."""
        if isinstance(exc, NameError | ImportError):
            return  # a name bound only inside the statement (a comprehension's variable)
        if not self.failed.is_consequence(module, exc):
            text = self.failed.describe(module, exc)
            if text not in self.failed.errors:
                self.failed.errors.append(text)


@dataclass(frozen=True)
class _RepoFinder(importlib.abc.MetaPathFinder):
    """Finds ``package`` and ``package.<module>`` in ``root``, loaded statement-wise."""

    package: str
    root: Path
    failed: FailedStatements

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package:
            init = self.root / "__init__.py"
            if not init.exists():
                return None  # a namespace package: the caller builds it
            loader = _StatementwiseLoader(fullname, init, self.failed)
            return importlib.util.spec_from_file_location(
                fullname, init, loader=loader, submodule_search_locations=[str(self.root)]
            )
        head, _, stem = fullname.rpartition(".")
        file = self.root / f"{stem}.py"
        if head != self.package or not file.is_file():
            return None
        return importlib.util.spec_from_file_location(
            fullname, file, loader=_StatementwiseLoader(fullname, file, self.failed)
        )


@contextmanager
def collecting_imports(package: str, root: Path, describe: ErrorText) -> Iterator[FailedStatements]:
    """While open, the repo package's modules import statement-wise into the result."""
    failed = FailedStatements(describe)
    finder = _RepoFinder(package, root, failed)
    sys.meta_path.insert(0, finder)
    try:
        yield failed
    finally:
        sys.meta_path.remove(finder)

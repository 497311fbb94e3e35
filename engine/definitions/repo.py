"""``FeatureRepo`` and ``load_repo``: collect and cross-validate a directory of definitions."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from engine.definitions.entity import Entity
from engine.definitions.exceptions import DefinitionError, RepoValidationError
from engine.definitions.on_demand import OnDemandFeatureView
from engine.definitions.service import FeatureService
from engine.definitions.source import EventSource, RequestSource
from engine.definitions.statementwise import FailedStatements, collecting_imports
from engine.definitions.view import StreamFeatureView

Definition = Entity | EventSource | RequestSource | StreamFeatureView | OnDemandFeatureView | FeatureService
_KINDS: tuple[type, ...] = (Entity, EventSource, RequestSource, StreamFeatureView, OnDemandFeatureView, FeatureService)
_D = TypeVar("_D", Entity, EventSource, RequestSource, StreamFeatureView, OnDemandFeatureView, FeatureService)


@dataclass(frozen=True)
class FeatureRepo:
    """Every definition of a repo, cross-validated; each tuple sorted by name."""

    entities: tuple[Entity, ...]
    sources: tuple[EventSource, ...]
    views: tuple[StreamFeatureView, ...]
    on_demand_views: tuple[OnDemandFeatureView, ...]
    services: tuple[FeatureService, ...]
    request_sources: tuple[RequestSource, ...] = ()
    path: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        errors = cross_validate(self)
        if errors:
            raise RepoValidationError(self.path or "<in memory>", errors)

    @classmethod
    def from_objects(cls, objects: Iterable[object], path: str = "") -> FeatureRepo:
        """Builds a repo from definitions, adding the entities and sources views refer to."""
        found: dict[type, list[Definition]] = {kind: [] for kind in _KINDS}

        def add(obj: Definition) -> None:
            bucket = found[type(obj)]
            if not any(obj is other for other in bucket):
                bucket.append(obj)

        def of_kind(kind: type[_D]) -> list[_D]:
            return [o for o in found[kind] if isinstance(o, kind)]

        def ordered(kind: type[_D]) -> tuple[_D, ...]:
            return tuple(sorted(of_kind(kind), key=lambda o: o.name))

        for obj in objects:
            if isinstance(obj, Definition):
                add(obj)
        for view in of_kind(StreamFeatureView):
            add(view.source)
            for entity in view.entities:
                add(entity)
        for odfv in of_kind(OnDemandFeatureView):
            for src in odfv.request_sources:
                add(src)

        return cls(
            entities=ordered(Entity),
            sources=ordered(EventSource),
            views=ordered(StreamFeatureView),
            on_demand_views=ordered(OnDemandFeatureView),
            services=ordered(FeatureService),
            request_sources=ordered(RequestSource),
            path=path,
        )

    def _find(self, items: Sequence[_D], name: str, kind: str) -> _D:
        for item in items:
            if item.name == name:
                return item
        raise KeyError(f"no {kind} named {name!r} in the repo; known: {[i.name for i in items]}")

    def view(self, name: str) -> StreamFeatureView:
        return self._find(self.views, name, "StreamFeatureView")

    def on_demand_view(self, name: str) -> OnDemandFeatureView:
        return self._find(self.on_demand_views, name, "OnDemandFeatureView")

    def service(self, name: str) -> FeatureService:
        return self._find(self.services, name, "FeatureService")

    def source(self, name: str) -> EventSource:
        return self._find(self.sources, name, "EventSource")

    def views_for_source(self, source_name: str) -> tuple[StreamFeatureView, ...]:
        return tuple(v for v in self.views if v.source.name == source_name)


def cross_validate(repo: FeatureRepo) -> list[str]:
    """Every consistency error between the definitions of one repo."""
    errors: list[str] = []
    groups: list[tuple[str, Sequence[Definition]]] = [
        ("Entity", repo.entities),
        ("EventSource", repo.sources),
        ("RequestSource", repo.request_sources),
        ("FeatureService", repo.services),
        # Views and on-demand views share one namespace: services and serving name them alike.
        ("StreamFeatureView/OnDemandFeatureView", (*repo.views, *repo.on_demand_views)),
    ]
    for kind, items in groups:
        seen: dict[str, Definition] = {}
        for item in items:
            if item.name in seen and seen[item.name] != item:
                errors.append(
                    f"{kind} '{item.name}': defined twice with different contents. "
                    "Hint: names must be unique per kind; rename one of them"
                )
            seen.setdefault(item.name, item)
    errors.extend(_split_errors(repo.services))
    sources = {s.name: s for s in repo.sources}
    entities = {e.name: e for e in repo.entities}
    for view in repo.views:
        if sources.get(view.source.name, view.source) != view.source:
            errors.append(
                f"StreamFeatureView '{view.name}': field 'source': its EventSource "
                f"'{view.source.name}' differs from the repo's source of that name. "
                "Hint: import the one source object instead of redefining it"
            )
        for entity in view.entities:
            if entities.get(entity.name, entity) != entity:
                errors.append(
                    f"StreamFeatureView '{view.name}': field 'entities': Entity '{entity.name}' "
                    "differs from the repo's entity of that name. Hint: import the one entity object"
                )
    by_fingerprint: dict[bytes, str] = {}
    for view in repo.views:
        other = by_fingerprint.setdefault(view.fingerprint, view.name)
        if other != view.name:
            errors.append(
                f"StreamFeatureView '{view.name}': same fingerprint as '{other}' (same source, keys, "
                "interval, filter and aggregations), so both would share state. Hint: keep one view"
            )
    views = {v.name: v for v in repo.views}
    odfvs = {o.name: o for o in repo.on_demand_views}
    for odfv in repo.on_demand_views:
        for src in odfv.source_views:
            if views.get(src.name) != src:
                errors.append(
                    f"OnDemandFeatureView '{odfv.name}': field 'sources': StreamFeatureView "
                    f"'{src.name}' is not defined in the repo (or differs from it). "
                    "Hint: define the view at module level in a repo module and import it"
                )
    for service in repo.services:
        for ref in service.refs:
            known: Mapping[str, StreamFeatureView | OnDemandFeatureView] = (
                views if isinstance(ref.view, StreamFeatureView) else odfvs
            )
            if known.get(ref.view.name) != ref.view:
                errors.append(
                    f"FeatureService '{service.name}': field 'features': {type(ref.view).__name__} "
                    f"'{ref.view.name}' is not defined in the repo (or differs from it). "
                    "Hint: define it at module level in a repo module and import it"
                )
    return errors


def _import_modules(package: str, root: Path, failed: FailedStatements) -> list[ModuleType]:
    """The package and each of its top-level modules; failures go to ``failed``."""
    init = root / "__init__.py"
    if init.exists():
        spec = importlib.util.find_spec(package)
    else:  # a directory without __init__.py is imported like a namespace package
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
    if spec is None:
        raise RepoValidationError(str(root), [f"{root}: cannot be imported as a package"])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[package] = pkg
    try:
        if spec.loader is not None:
            spec.loader.exec_module(pkg)
    except Exception as exc:  # a SyntaxError: the module never ran
        failed.errors.append(_module_error(package, exc, root))
    modules: list[ModuleType] = [pkg]
    for file in sorted(root.glob("*.py")):
        if file.name == "__init__.py":
            continue
        name = f"{package}.{file.stem}"
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # a SyntaxError, or an import of a module that has one
            if not failed.is_consequence(name, exc):
                failed.errors.append(_module_error(name, exc, root))
    return modules


def _evict(package: str) -> None:
    """Forgets earlier imports of the package so the repo is read fresh from its path."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def _module_error(module_name: str, exc: BaseException, path: Path) -> str:
    """``file:line: message`` at the repo line that raised (the definition at fault).

    A module that imports a broken module fails with the same error at the same line,
    so the text is identical and the caller reports it once.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(path))]
    if isinstance(exc, SyntaxError) and exc.filename and exc.filename.startswith(str(path)):
        where = f"{exc.filename}:{exc.lineno}"
    elif frames:
        where = f"{frames[-1].filename}:{frames[-1].lineno}"
    else:
        where = f"module {module_name}"
    text = str(exc) if isinstance(exc, DefinitionError) else f"{type(exc).__name__}: {exc}"
    return f"{where}: {text}"


def _definition_lines(modules: Sequence[ModuleType], root: Path) -> dict[str, str]:
    """``definition name -> file:line`` of the module-level assignment that defines it."""
    places: dict[str, str] = {}
    for module in modules:
        file = getattr(module, "__file__", None)
        if not file or not file.startswith(str(root)):
            continue
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for variable, value in vars(module).items():
            if not isinstance(value, _KINDS):
                continue
            pattern = re.compile(rf"^{re.escape(variable)}\s*(:[^=]*)?=")
            for number, line in enumerate(lines, start=1):
                if pattern.match(line):
                    places.setdefault(str(getattr(value, "name", "")), f"{file}:{number}")
                    break
    return places


_NAMED = re.compile(r"^[\w/]+ '([^']+)'")


def _located(error: str, places: dict[str, str]) -> str:
    """Prefix a cross-validation error with file:line of the definition it names."""
    named = _NAMED.match(error)
    place = places.get(named.group(1)) if named else None
    return f"{place}: {error}" if place else error


def locate_errors(repo_path: str, errors: Sequence[str]) -> list[str]:
    """``errors`` found after loading (``plan``'s transform checks), each prefixed with the
    file:line of the definition it names, as :func:`load_repo`'s own errors are."""
    root = Path(repo_path).resolve()
    modules = [m for m in list(sys.modules.values()) if str(getattr(m, "__file__", None) or "").startswith(str(root))]
    places = _definition_lines(modules, root)
    return [_located(error, places) for error in errors]


def _transform_errors(objects: Sequence[object]) -> list[str]:
    """Every on-demand view whose ``fn`` does not import: reported with the repo's other
    errors, so one ``plan`` lists them all (the dry run of each transform comes later, in
    ``plan``, once the repo loads)."""
    errors: list[str] = []
    for odfv in objects:
        if isinstance(odfv, OnDemandFeatureView):
            try:
                odfv.resolve()
            except DefinitionError as exc:
                errors.append(str(exc))
            except Exception as exc:  # the transform's module raised while importing
                errors.append(f"OnDemandFeatureView '{odfv.name}': field 'fn': importing {odfv.fn!r} raised {exc!r}")
    return errors


def load_repo(path: str | Path) -> FeatureRepo:
    """Imports every .py module of the repo directory as a package and collects its definitions.

    Raises RepoValidationError listing every error: every module statement that raises
    (modules run statement by statement here, see ``statementwise``, so two bad definitions
    in one file are both reported) and every cross-validation error.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise RepoValidationError(
            str(path), [f"{path}: not a directory. Hint: pass the repo directory, e.g. --repo feature_defs"]
        )
    package = root.name
    if not package.isidentifier():
        raise RepoValidationError(
            str(path),
            [
                f"{root}: directory name {package!r} is not an importable package name. "
                "Hint: rename it to a Python identifier such as feature_defs"
            ],
        )
    parent = str(root.parent)
    # The parent goes first on sys.path so transforms referenced as "<package>.module:fn"
    # resolve to this directory at serve time as well.
    if parent in sys.path:
        sys.path.remove(parent)
    sys.path.insert(0, parent)
    _evict(package)
    importlib.invalidate_caches()
    with collecting_imports(package, root, lambda name, exc: _module_error(name, exc, root)) as failed:
        modules = _import_modules(package, root, failed)
    errors = list(failed.errors)
    objects = [value for module in modules for value in vars(module).values() if isinstance(value, _KINDS)]
    try:
        repo = FeatureRepo.from_objects(objects, path=str(path))
    except RepoValidationError as exc:
        places = _definition_lines(modules, root)
        errors.extend(_located(error, places) for error in exc.errors)
    if errors:
        places = _definition_lines(modules, root)
        errors.extend(_located(error, places) for error in _transform_errors(objects))
        raise RepoValidationError(str(path), list(dict.fromkeys(errors)))
    return repo


def _split_errors(services: Sequence[FeatureService]) -> list[str]:
    """An A/B split names services answering the same request with the same features."""
    errors: list[str] = []
    by_name = {s.name: s for s in services}
    for service in services:
        for name in service.ab_split:
            other = by_name.get(name)
            where = f"FeatureService '{service.name}': field 'ab_split'"
            if other is None:
                errors.append(f"{where}: service {name!r} is not defined. Hint: define it or remove it from the split")
            elif other.ab_split:
                errors.append(f"{where}: service {name!r} has its own ab_split. Hint: split from one service only")
            elif (other.entity_join_keys, other.request_fields, other.feature_names) != (
                service.entity_join_keys,
                service.request_fields,
                service.feature_names,
            ):
                errors.append(
                    f"{where}: service {name!r} must take the same join keys and request data and answer "
                    f"the same features in the same order; got {list(other.feature_names)} for "
                    f"{list(service.feature_names)}. Hint: pin other versions of the same views"
                )
    return errors

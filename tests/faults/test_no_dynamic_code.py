"""No eval/exec/pickle anywhere in the shipped code, and dynamic imports only where the
feature repo (a configured path, never request or event data) is loaded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.config import Settings
from engine.definitions import OnDemandFeatureView, load_repo
from tests.serving.serving_support import REPO_DIR

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "engine", "serving", "dataflows", "feature_defs")
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "jsonpickle"}
# Loading the feature repo (a directory from settings) and resolving its transforms.
# Each allowed module imports only paths written in code or in the repo definitions:
IMPORT_ALLOWED = {
    "engine/definitions/repo.py",  # the repo package at settings.repo_path
    "engine/definitions/statementwise.py",  # its modules, one guarded statement at a time
    "engine/definitions/on_demand.py",  # OnDemandFeatureView.fn, from the repo definitions
    "engine/offline/service_entries.py",  # the same fn, for training sets
    "cli/__init__.py",  # the fixed list of subcommand modules
}


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 50, "the scan should see the whole code base"
    return files


def _called_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def test_no_eval_exec_or_pickle() -> None:
    problems: list[str] = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                problems.append(f"{rel}:{node.lineno}: {node.func.id}()")
            if isinstance(node, ast.Import):
                problems += [
                    f"{rel}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES
                ]
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{rel}:{node.lineno}: from {node.module} import")
            if (
                isinstance(node, ast.Call)
                and _called_name(node) == "load"
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "yaml"
            ):
                problems.append(f"{rel}:{node.lineno}: yaml.load (use yaml.safe_load)")
    assert not problems, "dynamic code execution or unsafe deserialization:\n" + "\n".join(problems)


def test_dynamic_imports_only_where_the_repo_is_loaded() -> None:
    found: set[str] = set()
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Call) and _called_name(node) in {
                "import_module",
                "spec_from_file_location",
                "exec_module",
                "module_from_spec",
                "load_module",
            }:
                found.add(rel)
    assert found <= IMPORT_ALLOWED, f"dynamic imports outside the repo loader: {sorted(found - IMPORT_ALLOWED)}"


def test_transform_import_paths_come_from_the_repo_definitions() -> None:
    repo = load_repo(REPO_DIR)
    odfvs = [v for v in repo.on_demand_views if isinstance(v, OnDemandFeatureView)]
    assert odfvs
    for odfv in odfvs:
        module = odfv.fn.partition(":")[0]
        # The loader imports the repo as a package of its directory's name.
        assert module.split(".")[0] == REPO_DIR.name, odfv.fn


@pytest.mark.parametrize("repo", ["feature_defs", "/abs/defs"])
def test_repo_path_is_the_configured_one(tmp_path: Path, repo: str) -> None:
    settings = Settings(project_dir=tmp_path, repo=Path(repo))
    expected = Path(repo) if Path(repo).is_absolute() else tmp_path / repo
    assert settings.repo_path == expected

"""`streamfeat init`: a scaffolded project loads, plans and applies with its own settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from engine.config import load_settings
from engine.definitions import load_repo
from tests.engine.streaming_support import REPO


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_init_scaffolds_a_working_project(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    done = _cli("init", str(project), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "streamfeat apply" in done.stdout
    copied = sorted(p.name for p in (project / "feature_defs").glob("*.py"))
    assert copied == sorted(p.name for p in REPO.glob("*.py"))
    settings = load_settings(project, env={})
    assert yaml.safe_load((project / "streamfeat.yaml").read_text())["metrics_port"] == settings.metrics_port
    repo = load_repo(settings.repo_path)
    assert {v.name for v in repo.views} == {v.name for v in load_repo(REPO).views}
    applied = _cli("apply", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert (project / ".streamfeat" / "plan.json").is_file()


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "streamfeat.yaml").write_text("repo: mine\n")
    done = _cli("init", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "streamfeat.yaml already exists" in done.stderr
    assert (tmp_path / "streamfeat.yaml").read_text() == "repo: mine\n"
    assert not (tmp_path / "feature_defs").exists()


def test_init_into_a_file_or_an_uncreatable_directory_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    done = _cli("init", str(tmp_path / "a_file"), cwd=tmp_path)
    assert done.returncode == 2 and "init: " + str(tmp_path / "a_file") + " is a file, not a directory" in done.stderr
    blocked = tmp_path / "a_file" / "below"  # a file cannot hold a directory
    done = _cli("init", str(blocked), cwd=tmp_path)
    assert done.returncode == 2 and f"init: cannot create the directory {blocked}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

"""An on-demand view's definition covers its transform's code: editing the function's body
shows in ``streamfeat plan`` and changes the service fingerprint, and the digest is the
same in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.definitions import load_repo
from engine.definitions.on_demand import CODE_KEY, code_change
from engine.plan import apply_plan, compute_plan, load_applied_plan

ROOT = Path(__file__).resolve().parents[2]
DEFS = """
from datetime import timedelta
from engine.definitions import Aggregation, Entity, EventSource, FeatureService, OnDemandFeatureView, StreamFeatureView
user = Entity(name="user", join_keys=["user_id"])
tx = EventSource(name="tx", topic="tx", timestamp_field="ts", schema={"user_id": "string", "amount": "float"})
spend = StreamFeatureView(name="spend", source=tx, entities=[user],
    aggregations=[Aggregation(column="amount", function="count", window=timedelta(hours=1), name="n")])
odfv = OnDemandFeatureView(name="odfv", sources=[spend[["n"]]], schema={"n_x": "float"}, fn="{pkg}.xf:double")
svc = FeatureService(name="svc", features=[spend, odfv])
"""
TRANSFORM = """
def _scale():
    return 2.0


def double(row):
    return {"n_x": _scale() * (row.get("n") or 0)}
"""


def write(repo: Path, name: str, text: str) -> None:
    path = repo / name
    path.write_text(textwrap.dedent(text))
    stamp = path.stat().st_mtime + 10 + len(text)  # stale bytecode is keyed by (mtime, size)
    os.utime(path, (stamp, stamp))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    pkg = "repo_xf_code"
    root = tmp_path / pkg
    root.mkdir()
    write(root, "__init__.py", "")
    write(root, "defs.py", DEFS.replace("{pkg}", pkg))
    write(root, "xf.py", TRANSFORM)
    saved = list(sys.path)
    yield root
    sys.path[:] = saved
    for name in [m for m in sys.modules if m.startswith(pkg)]:
        del sys.modules[name]


def test_editing_a_transform_changes_the_plan_and_the_service_fingerprint(repo: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    before = load_repo(repo)
    apply_plan(before, plan_file)
    fingerprint = before.service("svc").fingerprint_hex
    assert not compute_plan(load_repo(repo), load_applied_plan(plan_file)).has_changes  # same code: no change
    assert load_repo(repo).service("svc").fingerprint_hex == fingerprint

    write(repo, "xf.py", TRANSFORM.replace('{"n_x": _scale()', '{"n_x": 5.0 * _scale()'))  # the body
    after = load_repo(repo)
    plan = compute_plan(after, load_applied_plan(plan_file))
    (change,) = plan.changes
    assert (change.kind, change.name, change.action, change.needs_backfill) == (
        "on_demand_view",
        "odfv",
        "changed",
        False,
    )
    assert any(d.startswith("transform code changed: ") for d in change.details), change.details
    assert "~ on-demand view odfv: changed" in plan.render()
    assert after.service("svc").fingerprint_hex != fingerprint

    # A helper of the same module counts too.
    apply_plan(after, plan_file)
    fingerprint = after.service("svc").fingerprint_hex
    write(
        repo,
        "xf.py",
        TRANSFORM.replace("return 2.0", "return 3.0").replace('{"n_x": _scale()', '{"n_x": 5.0 * _scale()'),
    )
    again = load_repo(repo)
    assert compute_plan(again, load_applied_plan(plan_file)).has_changes
    assert again.service("svc").fingerprint_hex != fingerprint


def test_a_plan_file_written_before_code_digests_loads_and_reads_changed_once(repo: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    defs = load_repo(repo)
    apply_plan(defs, plan_file)
    data = json.loads(plan_file.read_text())
    for entry in data["on_demand_views"].values():
        del entry["definition"][CODE_KEY]  # as an older streamfeat wrote it
    plan_file.write_text(json.dumps(data))
    previous = load_applied_plan(plan_file)
    assert previous is not None
    (change,) = compute_plan(defs, previous).changes
    assert (change.name, change.action, change.needs_backfill) == ("odfv", "changed", False)
    old = previous.entries["on_demand_view"]["odfv"]["definition"]
    note = code_change(old, defs.on_demand_view("odfv").to_dict())
    assert note is not None and "predates code digests" in note
    apply_plan(defs, plan_file)
    assert not compute_plan(load_repo(repo), load_applied_plan(plan_file)).has_changes  # once only


def test_code_change_lines() -> None:
    same = {CODE_KEY: "source sha256:aa"}
    assert code_change(same, dict(same)) is None
    assert code_change(same, {CODE_KEY: "source sha256:bb"}) == (
        "transform code changed: source sha256:aa -> source sha256:bb"
    )


DIGEST = """
import sys
from engine.definitions import load_repo
from engine.definitions.code_digest import code_digest
sys.path.insert(0, sys.argv[1])
repo = load_repo(sys.argv[2])
print(repo.on_demand_view("odfv").code_digest)
namespace = {}
exec("def f(row):\\n    return {'k': row['x'] in {'a', 'b', 'c', 'd'}, 'y': 1.5}", namespace)  # no source file
print(code_digest(namespace["f"]))
"""


def test_the_digest_is_the_same_in_two_processes(repo: Path) -> None:
    outputs = []
    for seed in ("1", "2"):  # hash() of strings differs: frozenset constants iterate differently
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", DIGEST, str(repo.parent), str(repo)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        outputs.append(done.stdout.split("\n"))
    assert outputs[0] == outputs[1]
    source, bytecode = outputs[0][:2]
    assert source.startswith("source sha256:") and source == load_repo(repo).on_demand_view("odfv").code_digest
    assert bytecode.startswith(f"bytecode-py{sys.version_info.major}.{sys.version_info.minor} sha256:")

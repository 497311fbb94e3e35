"""A running server follows the applied plan file (serving/plan_watch.py): services reading a
view or on-demand view that `apply` changed after it started are refused (their records, or
their code, are no longer the applied ones), and joins and completed backfills are taken in
as they happen."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan, apply_plan
from serving.exceptions import PlanChanged
from serving.plan_watch import PlanWatch
from serving.registry import build_registry
from tests.serving.serving_support import N_SHARDS


def _rewrite(plan_file: Path, edit: dict[str, object]) -> None:
    data = json.loads(plan_file.read_text())
    for key, value in edit.items():
        data[key] = value
    plan_file.write_text(json.dumps(data))
    stamp = plan_file.stat().st_mtime + 5  # a new mtime however fast the test runs
    os.utime(plan_file, (stamp, stamp))


def test_a_server_refuses_services_whose_definitions_apply_changed(repo: FeatureRepo, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    _, plan = apply_plan(repo, plan_file, shards=N_SHARDS, check_transforms=False)
    registry = build_registry(repo, plan)
    on_demand = {t.name for s in registry.services.values() for t in s.transforms}
    assert on_demand, "the test repo's services run on-demand views"
    watch = PlanWatch(plan, registry.views, plan_file, on_demand=on_demand, check_every_s=0.0)
    services = list(registry.services.values())
    for service in services:
        watch.check(service)  # the applied definitions: nothing refused
    watch.check_all()
    assert watch.joins == {}

    view = next(iter(registry.views.values()))
    data = json.loads(plan_file.read_text())
    fp = view.fingerprint.hex()
    # A join recorded (apply of a view over a running stream), then completed by a backfill.
    _rewrite(plan_file, {"joins": {fp: {"view": view.name, "topic": "t", "at_ms": 1_767_225_600_000}}})
    watch.refresh()
    assert watch.joins == {view.fingerprint: 1_767_225_600_000}
    _rewrite(plan_file, {"joins": {}})
    watch.refresh()
    assert watch.joins == {}

    # `apply` of a changed view: its services are refused, the others answer.
    views = dict(data["views"])
    views[view.name] = {**views[view.name], "fingerprint": "00" * 8}
    _rewrite(plan_file, {"views": views})
    readers = [s for s in services if any(v.name == view.name for v in s.views)]
    others = [s for s in services if s not in readers]
    assert readers
    for service in readers:
        with pytest.raises(PlanChanged, match=rf"reads view '{view.name}', changed by `streamfeat apply`"):
            watch.check(service)
    for service in others:
        if not any(t.name in on_demand for t in service.transforms):
            watch.check(service)
    with pytest.raises(PlanChanged):
        watch.check_all()

    # An on-demand view whose code was applied changed: this server runs the code it loaded.
    _rewrite(plan_file, {"views": data["views"]})
    name = sorted(on_demand)[0]
    entries = dict(data["on_demand_views"])
    entries[name] = {"definition": {**entries[name]["definition"], "code": "source sha256:other"}}
    _rewrite(plan_file, {"on_demand_views": entries})
    runners = [s for s in services if any(t.name == name for t in s.transforms)]
    for service in runners:
        with pytest.raises(PlanChanged, match=rf"on-demand view '{name}'"):
            watch.check(service)


def test_a_plan_given_in_code_is_never_read_again(repo: FeatureRepo, plan: AppliedPlan, tmp_path: Path) -> None:
    registry = build_registry(repo, plan)
    watch = PlanWatch(plan, registry.views, None, check_every_s=0.0)
    watch.refresh()
    watch.check_all()
    assert watch.joins == {}


def test_a_server_on_a_plan_recorded_before_code_digests_answers_until_apply_changes_it(
    repo: FeatureRepo, tmp_path: Path
) -> None:
    """An upgrade: the applied plan's on-demand entries lack the code digest this version
    records. The server started on that plan answers (the plan did not change under it);
    an apply, which records the digests, is a change like any other."""
    from engine.plan import load_applied_plan

    plan_file = tmp_path / "plan.json"
    apply_plan(repo, plan_file, shards=N_SHARDS, check_transforms=False)
    data = json.loads(plan_file.read_text())
    for entry in data["on_demand_views"].values():
        del entry["definition"]["code"]  # as an older streamfeat wrote it
    recorded = json.loads(json.dumps(data))
    plan_file.write_text(json.dumps(data))
    old_plan = load_applied_plan(plan_file)
    assert old_plan is not None
    registry = build_registry(repo, old_plan)
    on_demand = {t.name for s in registry.services.values() for t in s.transforms}
    watch = PlanWatch(old_plan, registry.views, plan_file, on_demand=on_demand, check_every_s=0.0)
    for service in registry.services.values():
        watch.check(service)
    watch.check_all()
    _rewrite(plan_file, {"on_demand_views": {**recorded["on_demand_views"], **_with_code(repo)}})
    with pytest.raises(PlanChanged, match="on-demand view"):
        watch.check_all()


def _with_code(repo: FeatureRepo) -> dict[str, object]:
    return {o.name: {"definition": o.to_dict()} for o in repo.on_demand_views}

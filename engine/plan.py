"""``plan`` / ``apply``: diff a feature repo against the last applied plan file.

The plan file (default ``.streamfeat/plan.json``) is versioned JSON holding, for
every view, its canonical definition and fingerprint, plus the number of state
shards. The shard count is fixed at the first apply: entities are placed by
``crc32(fingerprint + key) mod shards`` (docs/semantics.md section 6), so changing it
would strand existing state; ``apply`` refuses a different count instead of silently
re-sharding.

It also records the **joins**: a view applied while its source's stream already has
state (a new view, or a changed or re-added fingerprint) joins that stream at a time
``H``: its state holds the events with ``e >= H`` only, until a backfill of its history
(``e < H``) completes (docs/semantics.md section 8). The plan file is the one owner of
that record; serving and training sets read it to say which windows are incomplete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from engine.config import PLAN_FILE_NAME
from engine.definitions.check import check_on_demand
from engine.definitions.exceptions import (
    DefinitionError,
    PlanError,
    PlanMismatchError,
    RepoValidationError,
)
from engine.definitions.on_demand import CODE_KEY, code_change
from engine.definitions.repo import FeatureRepo, locate_errors
from engine.json_types import JSONObject, json_kind
from engine.kernel.layout import COLUMN_VALUE_FUNCTIONS
from engine.timefmt import duration_text
from engine.wording import counted

PLAN_FORMAT_VERSION = 1
DEFAULT_SHARDS = 8
DEFAULT_PLAN_FILE = Path(".streamfeat") / PLAN_FILE_NAME
KINDS = ("view", "on_demand_view", "service")
#: Plan-file entries by kind and name. Any: JSON read back from the plan file (a
#: definition's ``to_dict()`` and its fingerprint), whose fields the diff reads by name.
PlanEntries = Mapping[str, Mapping[str, Mapping[str, Any]]]


def default_plan_path(state_dir: str | Path | None = None) -> Path:
    """``<state_dir>/plan.json`` when a state directory is configured, else ``.streamfeat/plan.json``."""
    return Path(state_dir) / PLAN_FILE_NAME if state_dir is not None else DEFAULT_PLAN_FILE


@dataclass(frozen=True)
class ViewJoin:
    """A view that joined its source's running stream at ``at_ms``: its state holds the
    events with ``e >= at_ms`` until a backfill of its history completes."""

    view: str
    topic: str
    at_ms: int

    def __post_init__(self) -> None:
        for name in ("view", "topic"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise PlanError(f"join: field {name!r}: expected a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.at_ms, bool) or not isinstance(self.at_ms, int):
            raise PlanError(f"join of view {self.view!r}: field 'at_ms': expected int, got {self.at_ms!r}")

    def to_dict(self) -> JSONObject:
        return {"view": self.view, "topic": self.topic, "at_ms": self.at_ms}


@dataclass(frozen=True)
class AppliedPlan:
    """The content of a plan file: what was applied last."""

    shards: int
    # kind -> name -> {"definition": canonical dict, "fingerprint": hex (views only)}
    entries: PlanEntries
    applied_at: str = ""
    format_version: int = PLAN_FORMAT_VERSION
    # view fingerprint (hex) -> its join of a running stream, while its history is missing
    joins: Mapping[str, ViewJoin] = field(default_factory=dict)

    @property
    def join_times(self) -> dict[str, int]:
        """View fingerprint (hex) -> join time, for every view lacking its history."""
        return {fp: join.at_ms for fp, join in self.joins.items()}

    def join_ms(self, fingerprint_hex: str) -> int | None:
        """When the view of this fingerprint joined its stream (None: its state is whole)."""
        join = self.joins.get(fingerprint_hex)
        return None if join is None else join.at_ms

    @property
    def view_fingerprints(self) -> dict[str, str]:
        return {name: str(entry["fingerprint"]) for name, entry in self.entries.get("view", {}).items()}

    def mismatches(self, views: Iterable[AppliedView]) -> list[str]:
        """Every way ``views`` differ from what was applied (empty when they match).

        A view read or written under a fingerprint other than the applied one would
        use state built for another definition (or none), so callers refuse to start.
        """
        applied = self.view_fingerprints
        problems: list[str] = []
        for view in sorted(views, key=lambda v: v.name):
            if view.name not in applied:
                problems.append(f"view {view.name!r} is not in the applied plan")
            elif applied[view.name] != view.fingerprint_hex:
                problems.append(
                    f"view {view.name!r} changed since apply (fingerprint {applied[view.name]} "
                    f"applied, {view.fingerprint_hex} defined)"
                )
        return problems

    def to_dict(self) -> JSONObject:
        return {
            "format_version": self.format_version,
            "applied_at": self.applied_at,
            "shards": self.shards,
            "views": {k: dict(v) for k, v in sorted(self.entries.get("view", {}).items())},
            "on_demand_views": {k: dict(v) for k, v in sorted(self.entries.get("on_demand_view", {}).items())},
            "services": {k: dict(v) for k, v in sorted(self.entries.get("service", {}).items())},
            "joins": {fp: join.to_dict() for fp, join in sorted(self.joins.items())},
        }


def repo_entries(repo: FeatureRepo) -> dict[str, dict[str, JSONObject]]:
    """The plan-file entries describing a repo, by kind and name."""
    return {
        "view": {v.name: {"fingerprint": v.fingerprint_hex, "definition": v.to_dict()} for v in repo.views},
        "on_demand_view": {o.name: {"definition": o.to_dict()} for o in repo.on_demand_views},
        "service": {s.name: {"definition": s.to_dict()} for s in repo.services},
    }


@dataclass(frozen=True)
class Change:
    kind: str  # "view" | "on_demand_view" | "service"
    name: str
    action: str  # "new" | "changed" | "removed"
    needs_backfill: bool = False
    details: tuple[str, ...] = ()
    fingerprint_before: str | None = None
    fingerprint_after: str | None = None
    starts_empty: bool = False  # a new view in a project holding no state: nothing to backfill from it


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unchanged: tuple[tuple[str, str], ...]  # (kind, name)
    shards: int
    first_apply: bool
    entries: PlanEntries = field(repr=False, default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def needs_backfill(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.changes if c.needs_backfill)

    def _version_note(self, change: Change) -> str:
        """For a view version > 1: which view it is a version of."""
        entry = self.entries.get(change.kind, {}).get(change.name) if change.kind == "view" else None
        version = entry["definition"].get("version", 1) if entry else 1
        if version == 1:
            return ""
        return f" (version {version} of {change.name.rsplit('__v', 1)[0]}; other versions keep running)"

    def render(self) -> str:
        lines = [f"state shards: {self.shards}" + (" (first apply)" if self.first_apply else "")]
        if not self.changes:
            lines.append("No changes: the repo matches the applied plan.")
            return "\n".join(lines)
        marks = {"new": "+", "changed": "~", "removed": "-"}
        for change in self.changes:
            label = change.kind.replace("on_demand", "on-demand").replace("_", " ")
            suffix = (
                "  [needs backfill]"
                if change.needs_backfill
                else "  [state starts empty]"
                if change.starts_empty
                else ""
            )
            lines.append(
                f"  {marks[change.action]} {label} {change.name}: {change.action}{suffix}" + self._version_note(change)
            )
            lines.extend(f"      {d}" for d in change.details)
        counts = {a: sum(1 for c in self.changes if c.action == a) for a in marks}
        lines.append(
            f"{counts['new']} new, {counts['changed']} changed, {counts['removed']} removed, "
            f"{len(self.unchanged)} unchanged; needs backfill: {', '.join(self.needs_backfill) or 'none'}"
        )
        empty = sum(c.starts_empty for c in self.changes)
        if empty:
            lines.append(
                f"{counted(empty, 'new view')} {'starts' if empty == 1 else 'start'} with empty state: the project "
                "holds no state yet, so there is nothing to backfill; run `streamfeat backfill` only if you have history"
            )
        return "\n".join(lines)


def _diff(before: object, after: object, path: str = "") -> list[str]:
    """Readable list of the differing leaves of two canonical dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in before:
                out.append(f"{sub}: added {json.dumps(after[key])}")
            elif key not in after:
                out.append(f"{sub}: removed")
            else:
                out.extend(_diff(before[key], after[key], sub))
        return out
    if before == after:
        return []
    if isinstance(before, list) and isinstance(after, list):
        keyed = _list_diff(before, after, path)
        if keyed is not None:
            return keyed
    return [f"{path}: {json.dumps(before, sort_keys=True)} -> {json.dumps(after, sort_keys=True)}"]


# How an element of a list in a definition is identified (aggregations by output name,
# service entries by view); elements without one of these keys are diffed as a whole.
_ELEMENT_KEYS = ("output_name", "view", "name")


def _element_key(item: object) -> str | None:
    if isinstance(item, dict):
        return next((str(item[k]) for k in _ELEMENT_KEYS if k in item), None)
    return json.dumps(item) if isinstance(item, str | int | float | bool) else None


def _describe(item: object) -> str:
    """One element as a line: an aggregation as ``function(column) over window``."""
    if isinstance(item, dict) and {"function", "column", "window_ms", "output_name"} <= set(item):
        window = "its lifetime" if item["window_ms"] is None else duration_text(int(item["window_ms"]))
        return f"{item['output_name']} = {item['function']}({item['column']}) over {window}"
    if isinstance(item, dict):
        key = _element_key(item)
        rest = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(item.items()) if k not in _ELEMENT_KEYS)
        return f"{key} ({rest})" if rest else str(key)
    return str(item)


def _list_diff(before: list[object], after: list[object], path: str) -> list[str] | None:
    """Added, removed and changed elements of two keyed lists, one line each (None: not keyed)."""
    old = {_element_key(item): item for item in before}
    new = {_element_key(item): item for item in after}
    if None in old or None in new or len(old) != len(before) or len(new) != len(after):
        return None
    out = [f"{path}: - {_describe(old[k])}" for k in old if k not in new]
    out += [f"{path}: + {_describe(new[k])}" for k in new if k not in old]
    for key in (k for k in new if k in old and old[k] != new[k]):
        changed = _diff(old[key], new[key], f"{path}[{key}]")
        out += (
            changed
            if all(isinstance(x, dict) for x in (old[key], new[key]))
            else [f"{path}[{key}]: {_describe(old[key])} -> {_describe(new[key])}"]
        )
    if not out:  # same elements, another order
        out.append(f"{path}: order {[k for k in old]} -> {[k for k in new]}")
    return out


# Any: view definitions as plan-file JSON, the leaves of PlanEntries.
def _int_retyping(view: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """A field that min, max or last reads, retyped from float to int under the same
    fingerprint, would serve the stored partials' fractional values as ints (docs/semantics.md
    section 8: field types are not part of the fingerprint): what is wrong, or None."""
    old, new = before["source"]["schema"], after["source"]["schema"]
    read = {a["column"] for a in after["aggregations"] if a["function"] in COLUMN_VALUE_FUNCTIONS}
    retyped = sorted(c for c in read if old.get(c) == "float" and new.get(c) == "int")
    if not retyped:
        return None
    return (
        f"view {view!r}: {'field' if len(retyped) == 1 else 'fields'} {retyped} of source "
        f"{after['source']['name']!r}: expected the type of a field min/max/last read to stay float under the "
        "same state, got int: the stored partials may hold fractional values, which int features cannot serve"
    )


def compute_plan(
    repo: FeatureRepo,
    previous: AppliedPlan | None,
    *,
    shards: int | None = None,
    check_transforms: bool = True,
    has_state: bool | None = None,
    stored: Iterable[str] | None = None,
) -> Plan:
    """Diffs the repo against the previous applied plan (None: nothing applied yet).

    A view whose fingerprint changed needs a backfill: its old state is not reused. A new
    view does too when the project already holds state (its source's past events were
    applied to the other views only); in a project with none (``has_state`` False; None:
    whether a plan was applied before) it starts empty like every view, so there is
    nothing to backfill unless the user has history (``Change.starts_empty``).
    ``stored``: the view fingerprints whose records the state holds; without a plan file
    (lost, or started over), such a view is not new to the state.
    """
    if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 4096):
        raise PlanError(f"shards: expected an integer from 1 to 4096, got {shards!r}", hint="use e.g. --shards 8")
    if previous is not None and shards is not None and shards != previous.shards:
        raise PlanError(
            f"the state has {previous.shards} shards (fixed at the first apply); {shards} were requested",
            hint="shard placement depends on the count; start a fresh state directory and plan file to re-shard",
        )
    if check_transforms:
        errors = []
        for odfv in repo.on_demand_views:
            try:
                check_on_demand(odfv)
            except DefinitionError as exc:
                errors.append(str(exc))
        if errors:
            raise RepoValidationError(
                repo.path or "<in memory>", locate_errors(repo.path, errors) if repo.path else errors
            )
    now: PlanEntries = repo_entries(repo)
    old: PlanEntries = previous.entries if previous else {}
    removed_fps = {e["fingerprint"] for n, e in old.get("view", {}).items() if n not in now["view"]}
    project_has_state = previous is not None if has_state is None else has_state
    stored = frozenset(stored or ())
    changes: list[Change] = []
    unchanged: list[tuple[str, str]] = []
    retypings: list[str] = []
    for kind in KINDS:
        before_all, after_all = old.get(kind, {}), now[kind]
        for name in sorted(set(before_all) | set(after_all)):
            before, after = before_all.get(name), after_all.get(name)
            fp_before = before.get("fingerprint") if before else None
            fp_after = after.get("fingerprint") if after else None
            if before is None:
                # A new view has no state, unless it is a rename of a removed view with the same partials.
                renamed = kind == "view" and fp_after in removed_fps
                # Without a plan file, state the shards hold for this very fingerprint.
                found = kind == "view" and previous is None and fp_after in stored
                notes: tuple[str, ...] = (
                    ("same fingerprint as a removed view: its state is reused",)
                    if renamed
                    else ("the state holds this definition's records: they are used as they are",)
                    if found
                    else ()
                )
                empty = kind == "view" and not renamed and not found
                changes.append(
                    Change(
                        kind,
                        name,
                        "new",
                        empty and project_has_state,
                        notes,
                        None,
                        fp_after,
                        starts_empty=empty and not project_has_state,
                    )
                )
            elif after is None:
                changes.append(Change(kind, name, "removed", False, (), fp_before, None))
            elif dict(before) != after:
                backfill = kind == "view" and fp_before != fp_after
                if kind == "view" and not backfill:
                    retyped = _int_retyping(name, before["definition"], after["definition"])
                    if retyped is not None:
                        retypings.append(retyped)
                details = tuple(_diff(dict(before["definition"]), after["definition"]))
                if kind == "on_demand_view":  # the code digest, said in words
                    note = code_change(before["definition"], after["definition"])
                    details = tuple(d for d in details if not d.startswith(f"{CODE_KEY}:")) + ((note,) if note else ())
                if backfill:
                    details += (f"fingerprint {fp_before} -> {fp_after}: old state is not reused",)
                changes.append(Change(kind, name, "changed", backfill, details, fp_before, fp_after))
            else:
                unchanged.append((kind, name))
    if retypings:  # every view at once
        raise PlanError(
            "; ".join(retypings),
            hint="declare each view with the next version=N (fresh state, then backfill it), or keep the field float",
        )
    chosen = previous.shards if previous else (shards if shards is not None else DEFAULT_SHARDS)
    return Plan(tuple(changes), tuple(unchanged), chosen, previous is None, now)


def load_applied_plan(path: str | Path) -> AppliedPlan | None:
    """Reads a plan file; None when it does not exist yet."""
    file = Path(path)
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(
            f"plan file {file} cannot be read: {exc}", hint="restore it from version control or delete it to start over"
        ) from exc
    if not isinstance(data, dict):
        raise PlanError(
            f"plan file {file}: expected a JSON object (the plan `streamfeat apply` writes), got a JSON {json_kind(data)}",
            hint="restore it from version control, or delete it and run `streamfeat apply` again",
        )
    if data.get("format_version") != PLAN_FORMAT_VERSION:
        got = data.get("format_version")
        raise PlanError(
            f"plan file {file}: expected format_version {PLAN_FORMAT_VERSION}, got {got!r}",
            hint="this plan file was written by another streamfeat version",
        )
    shards = data.get("shards")
    if not isinstance(shards, int) or shards < 1:
        raise PlanError(
            f"plan file {file}: expected a positive integer 'shards', got {shards!r}",
            hint="restore the plan file; the shard count must match the existing state",
        )
    entries = {
        kind: data.get(key) or {}
        for kind, key in (("view", "views"), ("on_demand_view", "on_demand_views"), ("service", "services"))
    }
    raw_joins = data.get("joins") or {}  # absent in plan files written before joins were recorded
    try:
        joins = {str(fp): ViewJoin(str(j["view"]), str(j["topic"]), j["at_ms"]) for fp, j in raw_joins.items()}
    except (AttributeError, KeyError, TypeError, PlanError) as exc:
        raise PlanError(
            f"plan file {file}: 'joins' is not what `streamfeat apply` writes: {exc}",
            hint="restore the plan file from version control",
        ) from None
    return AppliedPlan(shards=shards, entries=entries, applied_at=str(data.get("applied_at", "")), joins=joins)


class AppliedView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def fingerprint_hex(self) -> str: ...


MISMATCH_HINT = (
    "run `streamfeat plan` to review and `streamfeat apply` to record the change (and backfill changed views)"
)


def load_applied(path: str | Path, views: Iterable[AppliedView]) -> AppliedPlan:
    """The applied plan at ``path``, after checking that ``views`` are applied exactly as
    they are defined now: the one "repo matches the applied plan" check.

    Raises :class:`PlanMismatchError` when there is no plan file, or with every
    mismatch at once.
    """
    plan = load_applied_plan(path)
    if plan is None:
        raise PlanMismatchError(f"no applied plan at {path}", hint="run `streamfeat apply` first")
    problems = plan.mismatches(views)
    if problems:
        raise PlanMismatchError("the repo does not match the applied plan: " + "; ".join(problems), hint=MISMATCH_HINT)
    return plan


def apply_plan(
    repo: FeatureRepo,
    plan_file: str | Path | None = None,
    *,
    shards: int | None = None,
    check_transforms: bool = True,
    has_state: bool | None = None,
    join_time: Callable[[str], int | None] | None = None,
    stored: Mapping[str, int | None] | None = None,
) -> tuple[Plan, AppliedPlan]:
    """Computes the plan against the plan file and writes the new plan file atomically.

    ``join_time(topic)``: when a view applied now would join the running stream of
    ``topic`` (one past the newest event time its state has applied; None when the
    stream has no state yet). Every view that needs a backfill (new in a project with
    state, or a changed or re-added fingerprint) is recorded as joining then; joins of
    fingerprints still applied (a rename keeps its fingerprint) are kept.
    ``stored``: view fingerprint (hex) -> its pending join in the shards (None: none),
    for every fingerprint whose records the state holds; read without a plan file, so a
    lost plan file neither loses a join nor calls stored views new.
    """
    file = Path(plan_file) if plan_file is not None else DEFAULT_PLAN_FILE
    previous = load_applied_plan(file)
    plan = compute_plan(
        repo, previous, shards=shards, check_transforms=check_transforms, has_state=has_state, stored=stored
    )
    fingerprints = {v.fingerprint_hex: v for v in repo.views}
    # The joins kept: the plan's, or without a plan file (lost, or started over) the shards'
    # own pending ones; named as the views are now (a rename keeps its fingerprint).
    kept = (
        previous.join_times if previous is not None else {fp: at for fp, at in (stored or {}).items() if at is not None}
    )
    joins = {fp: ViewJoin(view.name, view.source.topic, kept[fp]) for fp, view in fingerprints.items() if fp in kept}
    # Without an applied plan there is nothing to join: a state directory found without its
    # plan file holds records of unknown definitions, which only a plan could tell stale.
    for change in plan.changes if previous is not None else ():
        if change.kind == "view" and change.needs_backfill and change.fingerprint_after not in joins:
            view = fingerprints[str(change.fingerprint_after)]
            at_ms = join_time(view.source.topic) if join_time is not None else None
            if at_ms is not None:
                joins[view.fingerprint_hex] = ViewJoin(view.name, view.source.topic, at_ms)
    applied = AppliedPlan(
        shards=plan.shards,
        entries=plan.entries,
        applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
        joins=joins,
    )
    write_applied_plan(file, applied)
    return plan, applied


def write_applied_plan(file: Path, applied: AppliedPlan) -> None:
    """Write the plan file atomically: readers never see a half-written one."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(applied.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, file)


def complete_joins(plan_file: str | Path, fingerprints: Iterable[str]) -> None:
    """A whole backfill filled these views' history: they no longer lack it."""
    file = Path(plan_file)
    applied = load_applied_plan(file)
    done = set(fingerprints)
    if applied is None or not done & set(applied.joins):
        return
    kept = {fp: join for fp, join in applied.joins.items() if fp not in done}
    write_applied_plan(file, dataclasses.replace(applied, joins=kept))

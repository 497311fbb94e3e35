"""What the applied plan says about the views this server answers, kept current.

A server compiles its services from the repo and the applied plan when it starts. Two
things can change under it while it runs, and both would make it serve wrong values
labelled ``PRESENT``:

- ``streamfeat apply`` of a changed view: the dataflow then writes the new fingerprint
  only, and the old one's records stay frozen. Services reading a view whose served
  fingerprint is no longer the applied one are refused (503 ``plan_changed``) and the
  server is not ready, until it is restarted on the applied plan.
- A view that joined its running stream (engine/plan.py) holds the events from its join
  time on; features whose windows reach before it are ``INCOMPLETE`` until a backfill
  completes its history, which the backfill records in the plan.

The same holds for an on-demand view whose definition (its transform's code included)
was applied changed: this server runs the code it imported at start.

The plan file is checked at most every ``check_every_s`` seconds (a ``stat``; it is read
again only when it changed: ``apply`` and ``backfill`` replace it atomically).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.plan import AppliedPlan, load_applied_plan
from serving.exceptions import PlanChanged
from serving.registry import CompiledService, CompiledView

log = logging.getLogger(__name__)


class PlanWatch:
    def __init__(
        self,
        plan: AppliedPlan,
        views: Mapping[str, CompiledView],
        plan_file: Path | None,
        *,
        on_demand: Iterable[str] | None = None,
        check_every_s: float = 1.0,
    ) -> None:
        """``views``: the served views by name; ``on_demand``: the names of the served
        on-demand views; ``plan_file``: the file ``plan`` was read from (None: never re-read).
        What changes is judged against ``plan``, the plan this server started on (its views
        are the served ones; an on-demand entry recorded by an older version may lack its
        code digest, which is no change until the plan is applied again)."""
        self._served = {name: view.fingerprint.hex() for name, view in views.items()}
        entries = plan.entries.get("on_demand_view", {})
        self._on_demand = {name: _definition(entries.get(name)) for name in (on_demand or ())}
        self._plan_file = plan_file
        self._check_every_s = check_every_s
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()
        self.joins: dict[bytes, int] = {}
        self.changed: tuple[str, ...] = ()
        self.changed_on_demand: tuple[str, ...] = ()
        self._take(plan)

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._plan_file is None:
            return None
        try:
            stat = os.stat(self._plan_file)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _take(self, plan: AppliedPlan) -> None:
        # By fingerprint: a renamed view keeps its state, which the dataflow goes on writing.
        applied = set(plan.view_fingerprints.values())
        joined = ((fp, plan.join_ms(fp)) for fp in self._served.values())
        self.joins = {bytes.fromhex(fp): at for fp, at in joined if at is not None}
        self.changed = tuple(sorted(name for name, fp in self._served.items() if fp not in applied))
        entries = plan.entries.get("on_demand_view", {})
        self.changed_on_demand = tuple(
            sorted(name for name, started in self._on_demand.items() if _definition(entries.get(name)) != started)
        )

    def refresh(self) -> None:
        """Re-read the plan file if it changed since the last look (at most every
        ``check_every_s``)."""
        now = time.monotonic()
        if self._plan_file is None or now - self._checked < self._check_every_s:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp is None:
            return
        try:
            plan = load_applied_plan(self._plan_file)
        except Exception as exc:  # a plan that does not read: keep what was known, say so
            log.error("the applied plan %s could not be read again: %s", self._plan_file, exc)
            return
        self._stamp = stamp
        if plan is not None:
            before = self.changed + self.changed_on_demand
            self._take(plan)
            now_changed = self.changed + self.changed_on_demand
            if now_changed and now_changed != before:
                log.warning(
                    "the applied plan changed definitions this server answers (%s): the services reading them "
                    "are refused until `streamfeat serve` is restarted",
                    ", ".join(now_changed),
                )

    def check(self, service: CompiledService) -> None:
        """Refuse a service reading a view whose definition is no longer the applied one."""
        self.refresh()
        if not self.changed and not self.changed_on_demand:
            return
        views = [view.name for view in service.views if view.name in self.changed]
        on_demand = [t.name for t in service.transforms if t.name in self.changed_on_demand]
        if views or on_demand:
            raise PlanChanged(
                f"service {service.name!r} reads {_named(views, on_demand)}, changed by `streamfeat apply` after "
                "this server started: it would answer with the definitions it loaded then, which are no longer "
                "the applied ones (the dataflow writes only those), so its values would be wrong"
            )

    def check_all(self) -> None:
        """Readiness: refuse while any served view is no longer applied as served."""
        self.refresh()
        if self.changed or self.changed_on_demand:
            raise PlanChanged(
                f"{_named(list(self.changed), list(self.changed_on_demand))} changed by `streamfeat apply` after "
                "this server started: the services reading them are refused"
            )


def _definition(entry: Mapping[str, object] | None) -> str | None:
    """An on-demand plan entry's definition as canonical JSON (None: not in the plan)."""
    return None if entry is None else json.dumps(entry.get("definition"), sort_keys=True)


def _named(views: list[str], on_demand: list[str]) -> str:
    parts = [
        f"{kind}{'' if len(names) == 1 else 's'} {', '.join(map(repr, names))}"
        for kind, names in (("view", views), ("on-demand view", on_demand))
        if names
    ]
    return " and ".join(parts)

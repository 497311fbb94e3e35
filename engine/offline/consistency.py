"""Recompute logged serving requests offline and report skew per feature.

Serving (with ``request_log_dir`` set) logs every answered row: the service, the
``as_of`` time it used, the join keys, the request data and the values it served.
:func:`check_logged_requests` turns those rows into a spine, computes the same
service with :func:`engine.offline.training.get_training_set` over the Parquet log
(the same time contract and the same transforms), and compares value by value:
counts exactly, floats with the tolerance of docs/semantics.md (relative and
absolute 1e-9).

A mismatch means the online path and the offline path disagree for that request:
typically an event that reached the online table after the request was answered
(ingestion delay), an event applied online that the Parquet log has not published
yet, or a real bug. The report says which features and how often.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from engine.definitions.repo import FeatureRepo
from engine.exact_doubles import FLOAT_TOLERANCE
from engine.io.request_log import read_request_log
from engine.json_types import JSONValue
from engine.offline.exceptions import TrainingSetError
from engine.offline.training import get_training_set
from engine.wording import counted

AS_OF_COLUMN = "__served_as_of_ms"
# Statuses of an exact value (docs/serving.md); the others say why a value may differ.
_EXACT = "PRESENT"
_DEFAULTED = "DEFAULTED"
TOLERANCE = FLOAT_TOLERANCE


@dataclass(frozen=True)
class FeatureSkew:
    feature: str
    rows: int
    mismatches: int
    examples: tuple[str, ...] = ()
    # Mismatched rows served with a status saying the value was not exact as of the
    # request (FUTURE_EVENTS, STALE, ...), by status; known only for rows logged with
    # their statuses (every /v1/features request; older logs may lack them).
    flagged: tuple[tuple[str, int], ...] = ()

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class ConsistencyReport:
    service: str
    rows: int
    features: tuple[FeatureSkew, ...] = field(default_factory=tuple)
    # What the comparison does not cover, one line each ("note: ..."): rows answered from
    # empty windows because they are before a view's log, a service no longer defined.
    notes: tuple[str, ...] = ()

    @property
    def mismatched_rows(self) -> int:
        return max((f.mismatches for f in self.features), default=0)

    def render(self) -> str:
        rows = counted(self.rows, "logged row")
        lines = [f"service {self.service}: {rows} " + ("recomputed offline" if self.features else "(none compared)")]
        for f in self.features:
            flagged = sum(n for _, n in f.flagged)
            said = ", ".join(f"{status} {n}" for status, n in f.flagged)
            why = f"; {flagged} of them served with a status saying why ({said})" if flagged else ""
            lines.append(f"  {f.feature:<32} mismatches {f.mismatches:>7} / {f.rows:<7} ({f.rate:.2%}){why}")
            lines.extend(f"      e.g. {example}" for example in f.examples)
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


def same_value(online: Any, offline: Any) -> bool:  # feature values: numbers, strings, lists or None
    if online is None or offline is None:
        return online is None and offline is None
    if isinstance(online, list) or isinstance(offline, list):  # last_n and the other list functions
        return (
            isinstance(online, list)
            and isinstance(offline, list)
            and len(online) == len(offline)
            and all(same_value(a, b) for a, b in zip(online, offline, strict=True))
        )
    if isinstance(online, bool | str) or isinstance(offline, bool | str):  # list items keep their type
        return bool(online == offline)
    if isinstance(online, int) and isinstance(offline, int):
        return online == offline
    a, b = float(online), float(offline)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= TOLERANCE * max(abs(a), abs(b)) + TOLERANCE


def check_logged_requests(
    repo: FeatureRepo, service_name: str, logged: pl.DataFrame, log_root: str
) -> ConsistencyReport:
    """Compare the served values of ``logged`` (rows of one service) with offline values."""
    service = repo.service(service_name)
    if logged.height == 0:
        return ConsistencyReport(service_name, 0)
    keys = [orjson.loads(k) for k in logged["keys_json"].to_list()]
    data = [orjson.loads(d) for d in logged["request_json"].to_list()]
    served = [orjson.loads(f) for f in logged["features_json"].to_list()]
    logged_statuses = logged["statuses_json"].to_list() if "statuses_json" in logged.columns else [None] * logged.height
    statuses: list[dict[str, str]] = [orjson.loads(t) if t is not None else {} for t in logged_statuses]
    columns: dict[str, list[JSONValue]] = {}  # the logged JSON values, one list per spine column
    for name in service.entity_join_keys:
        columns[name] = [k.get(name) for k in keys]
    for name in service.request_fields:
        columns[name] = [d.get(name) for d in data]
    columns[AS_OF_COLUMN] = logged["as_of_ms"].to_list()
    spine = pl.DataFrame(columns)
    notes: list[str] = []
    offline = get_training_set(repo, service_name, spine, log_root, timestamp_column=AS_OF_COLUMN, on_note=notes.append)
    skews = []
    for feature in service.feature_names:
        recomputed = offline[feature].to_list()
        bad = [
            i
            for i, (row, value) in enumerate(zip(served, recomputed, strict=True))
            if not same_value(row.get(feature), value)
        ]
        examples = tuple(
            f"{keys[i]} as of {columns[AS_OF_COLUMN][i]}: served {served[i].get(feature)!r}"
            + (f" ({statuses[i][feature]})" if feature in statuses[i] else "")
            + f", offline {recomputed[i]!r}"
            for i in bad[:3]
        )
        flagged = Counter(
            statuses[i][feature] for i in bad if statuses[i].get(feature, _EXACT) not in (_EXACT, _DEFAULTED)
        )
        skews.append(FeatureSkew(feature, logged.height, len(bad), examples, tuple(sorted(flagged.items()))))
    return ConsistencyReport(service_name, logged.height, tuple(skews), tuple(notes))


def check_request_log(
    repo: FeatureRepo, request_log_dir: str | Path, log_root: str, services: Mapping[str, object] | None = None
) -> list[ConsistencyReport]:
    table = pl.from_arrow(read_request_log(request_log_dir))
    if not isinstance(table, pl.DataFrame):
        raise TrainingSetError(f"request log {request_log_dir}: unexpected content")
    reports = []
    names = sorted(set(table["service"].to_list())) if table.height else []
    defined = {s.name for s in repo.services}
    for name in names:
        if services is not None and name not in services:
            continue
        logged = table.filter(pl.col("service") == name)
        if name not in defined:
            note = (
                f"note: service {name!r} is not defined in the repo now, so its {counted(logged.height, 'logged row')} "
                f"{'was' if logged.height == 1 else 'were'} not compared; check them with the repo that served them"
            )
            reports.append(ConsistencyReport(name, logged.height, notes=(note,)))
            continue
        reports.append(check_logged_requests(repo, name, logged, log_root))
    for name in sorted(services or ()):
        if name not in names and table.height:
            note = f"note: the request log holds no rows of service {name!r}: nothing of it was compared"
            reports.append(ConsistencyReport(name, 0, notes=(note,)))
    return reports

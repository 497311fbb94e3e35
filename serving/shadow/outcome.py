"""The record of one compared request: one JSON line, written by ``streamfeat shadow``
(``<out>/outcomes.jsonl``) and by the client's live sampler (its ``log_path``), read by
the report. The one owner of that format (docs/shadow.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from serving.shadow.classify import CAUSES
from serving.shadow.feast_http import FAILURE_REASONS

FORMAT_VERSION = 1
SIDES = ("baseline", "streamfeat")


@dataclass(frozen=True)
class Mismatch:
    feature: str  # streamfeat "view:feature"
    baseline_feature: str  # the baseline's name for it (the mapping applied)
    row: int
    entity: Mapping[str, Any]  # the row's join keys and request fields
    streamfeat: Any  # a feature value of any JSON type
    streamfeat_status: str
    baseline: Any  # a feature value of any JSON type
    baseline_status: str
    cause: str
    evidence: str

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"Mismatch.cause: expected one of {sorted(CAUSES)}, got {self.cause!r}")


@dataclass(frozen=True)
class RequestFailure:
    side: str
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.side not in SIDES or self.reason not in FAILURE_REASONS:
            raise ValueError(
                f"RequestFailure: expected side in {SIDES} and reason in {FAILURE_REASONS}, "
                f"got {self.side!r}, {self.reason!r}"
            )


@dataclass(frozen=True)
class Outcome:
    request: int  # index in the requests file / replay log, or the live sampler's sequence number
    as_of_ms: int  # the time streamfeat was asked about (the baseline answers "now")
    compared: Mapping[str, int] = field(default_factory=dict)  # feature -> rows compared
    mismatches: tuple[Mismatch, ...] = ()
    failure: RequestFailure | None = None

    def to_line(self) -> bytes:
        return orjson.dumps({"format": FORMAT_VERSION, **asdict(self)}) + b"\n"

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> Outcome:  # Any: one parsed JSON line; int() and constructors check it
        failure = raw.get("failure")
        return Outcome(
            request=int(raw["request"]),
            as_of_ms=int(raw["as_of_ms"]),
            compared={str(k): int(v) for k, v in dict(raw.get("compared") or {}).items()},
            mismatches=tuple(Mismatch(**m) for m in raw.get("mismatches") or ()),
            failure=RequestFailure(**failure) if failure else None,
        )


@dataclass
class OutcomeFile:
    """Outcomes read from a JSON-lines file; lines that are not outcomes are counted, not fatal."""

    outcomes: list[Outcome] = field(default_factory=list)
    unreadable_lines: list[int] = field(default_factory=list)


def read_outcomes(path: Path) -> OutcomeFile:
    read = OutcomeFile()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                read.outcomes.append(Outcome.from_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                read.unreadable_lines.append(number)  # e.g. a line cut short by a crash
    return read

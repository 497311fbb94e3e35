"""One question to a server speaking Feast's ``POST /get-online-features``, and its answer.

Both sides of a shadow run are asked this way (streamfeat serves the same route), with
full feature names, so one parser reads both. A server that cannot be reached, does not
answer in time, answers an error status or a body that is not Feast's shape gives a
:class:`Failure` naming why: the run records it and continues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from serving.routes_feast import FEAST_ROUTE
from serving.shadow.mapping import ref_from_full_name

FAILURE_REASONS = ("unreachable", "timeout", "http_error", "garbage")


@dataclass(frozen=True)
class Cell:
    value: Any  # a feature value of any JSON type
    status: str


@dataclass(frozen=True)
class Answer:
    """Rows of ``{"view:feature": Cell}`` (join keys and echoed request fields left out)."""

    rows: tuple[Mapping[str, Cell], ...]
    as_of_ms: int | None = None  # metadata.as_of: the time the server says it evaluated at (streamfeat does)

    def row_missing(self, i: int, view: str) -> bool:
        """Every feature of ``view`` in row ``i`` is NOT_FOUND: no record of that view's entity."""
        cells = [c for ref, c in self.rows[i].items() if ref.split(":")[0] == view]
        return bool(cells) and all(c.status == "NOT_FOUND" for c in cells)


@dataclass(frozen=True)
class Failure:
    reason: str  # one of FAILURE_REASONS
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in FAILURE_REASONS:
            raise ValueError(f"Failure.reason: expected one of {FAILURE_REASONS}, got {self.reason!r}")


def request_body(
    entities: Mapping[str, Sequence[object]], *, service: str | None, features: Sequence[str], as_of_ms: int | None
) -> dict[str, object]:
    body: dict[str, object] = {"entities": {k: list(v) for k, v in entities.items()}, "full_feature_names": True}
    if service is not None:
        body["feature_service"] = service
    else:
        body["features"] = list(features)
    if as_of_ms is not None:
        body["as_of"] = as_of_ms  # a streamfeat extension; Feast's server ignores fields it does not know
    return body


def _garbage(detail: str) -> Failure:
    return Failure("garbage", detail[:300])


def parse_answer(payload: object, n_rows: int) -> Answer | Failure:
    """Feast's column-major answer -> rows; anything else -> Failure("garbage", what was wrong)."""
    if not isinstance(payload, dict):
        return _garbage(f"expected a JSON object, got {type(payload).__name__}")
    metadata = payload.get("metadata")
    names = metadata.get("feature_names") if isinstance(metadata, dict) else None
    results = payload.get("results")
    if not isinstance(names, list) or not isinstance(results, list) or len(names) != len(results):
        return _garbage("expected metadata.feature_names and results of the same length")
    rows: list[dict[str, Cell]] = [{} for _ in range(n_rows)]
    for name, result in zip(names, results, strict=True):
        ref = ref_from_full_name(name) if isinstance(name, str) else None
        if ref is None:
            continue
        values = result.get("values") if isinstance(result, dict) else None
        statuses = result.get("statuses") if isinstance(result, dict) else None
        if (
            not isinstance(values, list)
            or not isinstance(statuses, list)
            or len(values) != n_rows
            or len(statuses) != n_rows
        ):
            return _garbage(f"feature {name!r}: expected {n_rows} values and statuses")
        for i in range(n_rows):
            rows[i][ref] = Cell(values[i], str(statuses[i]))
    as_of = metadata.get("as_of") if isinstance(metadata, dict) else None
    return Answer(tuple(rows), as_of if isinstance(as_of, int) and not isinstance(as_of, bool) else None)


def ask(http: httpx.Client, body: Mapping[str, object], n_rows: int) -> Answer | Failure:
    """POST ``body`` to ``http``'s base URL + FEAST_ROUTE; never raises for the server's faults."""
    try:
        response = http.post(FEAST_ROUTE, content=orjson.dumps(body), headers={"content-type": "application/json"})
    except httpx.TimeoutException as exc:
        return Failure("timeout", f"no answer within {http.timeout.read} s ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Failure("unreachable", f"{type(exc).__name__}: {exc}"[:300])
    if response.status_code != 200:
        return Failure("http_error", f"HTTP {response.status_code}: {response.text[:240]}")
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return _garbage(f"not JSON: {response.text[:120]!r}")
    return parse_answer(payload, n_rows)

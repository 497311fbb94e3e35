"""A/B routing of ``POST /v1/features/{service}`` (docs/serving.md, "Versions and A/B tests").

A service with ``ab_split={"other": share, ...}`` answers each entity row with one of the
services, chosen from a hash of the row's join-key values: the same entity always lands
on the same service, whatever the request, the process or the machine. Rows of one
request may go to different services; each group is evaluated as its own request at the
same time, and the rows come back in request order, with ``metadata.answered_by`` naming
the service (so the view versions) that answered each row.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson

from serving.registry import CompiledService, Registry
from serving.request import FeatureRequest


def key_bucket(values: tuple[object, ...]) -> float:
    """A stable number in [0, 1) for one entity's join-key values (blake2b, not Python's hash)."""
    digest = hashlib.blake2b(orjson.dumps(list(values)), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def route_rows(service: CompiledService, request: FeatureRequest) -> list[str]:
    """The service answering each row: the split's services by cumulative share, else ``service``."""
    keys = [request.entities[k] for k in service.join_keys]
    answered: list[str] = []
    for row in range(request.n_rows):
        bucket, chosen, edge = key_bucket(tuple(column[row] for column in keys)), service.name, 0.0
        for name, share in service.ab_split:
            edge += share
            if bucket < edge:
                chosen = name
                break
        answered.append(chosen)
    return answered


def split_request(registry: Registry, request: FeatureRequest) -> list[tuple[FeatureRequest, list[int]]]:
    """One sub-request per answering service with its rows' indexes (request order kept)."""
    answered = route_rows(request.service, request)
    groups: list[tuple[FeatureRequest, list[int]]] = []
    for name in dict.fromkeys(answered):
        rows = [i for i, chosen in enumerate(answered) if chosen == name]
        row_times = tuple(request.row_times[i] for i in rows) if request.row_times is not None else None
        groups.append(
            (
                replace(
                    request,
                    service=registry.service(name),
                    n_rows=len(rows),
                    t_ms=max(row_times) if row_times is not None else request.t_ms,
                    entities={k: [v[i] for i in rows] for k, v in request.entities.items()},
                    request_data={k: [v[i] for i in rows] for k, v in request.request_data.items()},
                    row_times=row_times,
                ),
                rows,
            )
        )
    return groups


# Any: v1 response bodies, indexed back here; JSONValue would need isinstance checks at each lookup
def merge_answers(request: FeatureRequest, parts: list[tuple[dict[str, Any], list[int]]]) -> dict[str, Any]:
    """The answer of the split service: each group's rows back at their request positions."""
    features: list[object] = [None] * request.n_rows
    statuses: list[object] = [None] * request.n_rows
    answered: list[str] = [""] * request.n_rows
    views: dict[str, object] = {}
    sources: list[object] = []
    for body, rows in parts:
        for position, row in zip(rows, body["features"], strict=True):
            features[position] = row
            answered[position] = body["service"]
        if "metadata" in body:
            for position, status in zip(rows, body["metadata"]["statuses"], strict=True):
                statuses[position] = status
            views.update(body["metadata"]["views"])
            sources.extend(s for s in body["metadata"]["sources"] if s not in sources)
    # Any: as the return type above (a response body its caller indexes back)
    answer: dict[str, Any] = {"service": request.service.name, "as_of": request.as_of_echo(), "features": features}
    if request.include_metadata:
        answer["metadata"] = {"statuses": statuses, "views": views, "sources": sources, "answered_by": answered}
    return answer

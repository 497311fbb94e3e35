"""Feast-compatible ``POST /get-online-features``: column-major values, statuses and
event timestamps, join-key columns first (the shape of Feast's Python feature server).

Status mapping: NOT_FOUND stays; STALE becomes OUTSIDE_MAX_AGE; FUTURE_EVENTS becomes
INVALID; a null value is NULL_VALUE; PRESENT and DEFAULTED are PRESENT (Feast has no
DEFAULTED).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from serving import openapi_docs as docs
from serving.deps import Labels, ServingState, get_state, json_response, observed, read_body
from serving.exceptions import InvalidRequest
from serving.online import FUTURE_EVENTS, NOT_FOUND, STALE
from serving.pipeline import FeatureResult, compute_async
from serving.registry import Registry
from serving.request import build_request, check_keys, parse_json

FEAST_ROUTE = "/get-online-features"
FEAST_FIELDS = ("feature_service", "entities", "request_context", "full_feature_names", "as_of")
_EPOCH_ISO = "1970-01-01T00:00:00Z"


def _iso(ms: int | None) -> str:
    if ms is None:
        return _EPOCH_ISO
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _feast_status(status: str, value: Any) -> str:
    if status == NOT_FOUND:
        return NOT_FOUND
    if status == FUTURE_EVENTS:
        return "INVALID"  # Feast's "value is wrong": counts events after the evaluation time
    if status == STALE:
        return "OUTSIDE_MAX_AGE"
    return "NULL_VALUE" if value is None else "PRESENT"


def feast_body(result: FeatureResult, full_feature_names: bool) -> dict[str, Any]:
    service = result.request.service
    n = result.request.n_rows
    statuses = result.statuses()
    names: list[str] = list(service.join_keys)
    results: list[dict[str, Any]] = [
        {"values": result.columns[k], "statuses": ["PRESENT"] * n, "event_timestamps": [_EPOCH_ISO] * n}
        for k in service.join_keys
    ]
    for feature in service.features:
        owner = service.feature_owner[feature]
        names.append(f"{owner}__{feature}" if full_feature_names else feature)
        values = result.columns[feature]
        view = result.views.get(owner)
        stamps = [_iso(ts) for ts in view.max_event_ts] if view is not None else [_EPOCH_ISO] * n
        results.append({
            "values": values,
            "statuses": [_feast_status(s, v) for s, v in zip(statuses[feature], values, strict=True)],
            "event_timestamps": stamps,
        })
    return {"metadata": {"feature_names": names}, "results": results}


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter()

    @router.post(FEAST_ROUTE, summary="Feast-compatible online feature retrieval (by feature service)",
                 openapi_extra=docs.feast_request_body(sorted(registry.services)), responses=docs.feast_responses(),
                 response_class=Response)
    async def get_online_features(request: Request) -> Response:
        async def handle(state: ServingState, labels: Labels) -> Response:
            body = parse_json(await read_body(request, state.max_request_bytes))
            if "features" in body:
                raise InvalidRequest(
                    "field 'features': feature references are not supported, name a feature_service",
                    hint='send {"feature_service": "fraud_scoring", "entities": {...}}', field="features")
            check_keys(body, FEAST_FIELDS)
            name = body.get("feature_service")
            if not isinstance(name, str):
                raise InvalidRequest("field 'feature_service': expected a service name (string), "
                                     f"got {type(name).__name__ if name is not None else 'nothing'}",
                                     field="feature_service")
            service = state.registry.service(name)
            labels.service = service.name
            entities = body.get("entities")
            if not isinstance(entities, dict):
                raise InvalidRequest("field 'entities': expected an object of column -> list of values",
                                     field="entities")
            context = body.get("request_context") or {}
            if not isinstance(context, dict):
                raise InvalidRequest("field 'request_context': expected an object", field="request_context")
            # Feast sends request fields inside "entities"; split them off by name.
            keys = {k: v for k, v in entities.items() if k not in service.request_fields}
            request_data = {**{k: v for k, v in entities.items() if k in service.request_fields}, **context}
            full = body.get("full_feature_names", False)
            if not isinstance(full, bool):
                raise InvalidRequest("field 'full_feature_names': expected a boolean", field="full_feature_names")
            feature_request = build_request(
                service, keys, request_data, body.get("as_of"), False,
                max_entities=state.max_entities_per_request)
            return json_response(feast_body(await compute_async(state.online, feature_request, state.history), full))

        return await observed(get_state(request), FEAST_ROUTE, handle)

    return router

"""Feast-compatible ``POST /get-online-features``: what Feast's remote online store
(``online_store: type: remote``) sends, answered in the shape its client parses.

Request: ``entities`` (join keys and, as Feast passes them, request fields -> one value
per row; other columns are skipped, see :func:`split_entities`), and either
``feature_service`` or ``features`` (``"view:feature"`` references);
``full_feature_names``; ``request_context`` and ``as_of`` (streamfeat extensions;
``as_of`` may be one time per row). Other fields Feast's clients send
(``include_feature_view_version_metadata``, and any a newer Feast adds) are ignored on
this route only: ignoring them never changes a value.

Answer: column-major values, statuses and event timestamps, join keys first (Feast's
feature server shape). Status mapping: NOT_FOUND stays; STALE becomes
OUTSIDE_MAX_AGE; FUTURE_EVENTS and INCOMPLETE become INVALID; a null value (OVER_BOUND included) and INVALID are NULL_VALUE;
PRESENT and DEFAULTED are PRESENT (Feast has no DEFAULTED). An empty list (``last_n``
and the other list functions over an empty window) is sent as null with NULL_VALUE:
Feast's client types a value from the value itself and cannot type ``[]``.

Errors: the body is a JSON string holding ``{"module", "class", "message"}``, which
Feast's client turns back into that ``feast.errors`` exception (``FeastError`` when no
closer class exists); ``code``, ``hint`` and ``field`` ride along for other readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from engine.json_types import JSONObject, json_kind
from serving import openapi_docs as docs
from serving.deps import Labels, ServingState, get_state, json_response, observed, read_body
from serving.exceptions import InvalidRequest, ServingError, short_repr
from serving.feature_refs import FeatureRefResolver
from serving.online import FUTURE_EVENTS, INCOMPLETE, INVALID, NOT_FOUND, STALE
from serving.pipeline import FeatureResult, compute_async
from serving.registry import CompiledService, Registry
from serving.request import build_request, parse_json

FEAST_ROUTE = "/get-online-features"
_EPOCH_ISO = "1970-01-01T00:00:00Z"

# streamfeat error code -> the feast.errors class Feast's client re-raises.
FEAST_ERROR_CLASSES = {
    "service_not_found": "FeatureServiceNotFoundException",
    "feature_view_not_found": "FeatureViewNotFoundException",
}


def feast_error_response(exc: ServingError) -> Response:
    """The one place the Feast route's error shape is written (what Feast's client reads)."""
    message = str(exc) + (f" (hint: {exc.hint})" if exc.hint else "")
    detail: JSONObject = {
        "module": "feast.errors",
        "class": FEAST_ERROR_CLASSES.get(exc.code, "FeastError"),
        "message": message,
        "code": exc.code,
    }
    if exc.field is not None:
        detail["field"] = exc.field
    # Feast's server answers its error detail as a JSON *string*; its client json-decodes twice.
    return json_response(orjson.dumps(detail).decode(), exc.status_code)


def error_response(exc: ServingError, path: str) -> Response:
    """An error answered before routing (auth, load shedding): in the Feast shape on the
    Feast route, whose client reads only that, else in the documented shape."""
    return feast_error_response(exc) if path == FEAST_ROUTE else json_response(exc.to_dict(), exc.status_code)


def _iso(ms: int | None) -> str:
    if ms is None:
        return _EPOCH_ISO
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def feast_status(status: str, value: object) -> str:
    if status == NOT_FOUND:
        return NOT_FOUND
    if status in (FUTURE_EVENTS, INCOMPLETE):
        # Feast's "value is wrong": counts events after the evaluation time, or lacks those
        # before its view joined the stream
        return "INVALID"
    if status == STALE:
        return "OUTSIDE_MAX_AGE"
    return "NULL_VALUE" if value is None or status == INVALID else "PRESENT"


def feast_body(result: FeatureResult, full_feature_names: bool, ignored: Sequence[str] = ()) -> JSONObject:
    service = result.request.service
    n = result.request.n_rows
    statuses = result.statuses()
    names: list[str] = list(service.join_keys)
    results: list[JSONObject] = [
        {"values": result.columns[k], "statuses": ["PRESENT"] * n, "event_timestamps": [_EPOCH_ISO] * n}
        for k in service.join_keys
    ]
    for feature in service.features:
        owner = service.feature_owner[feature]
        names.append(f"{owner}__{feature}" if full_feature_names else feature)
        values = [None if v == [] else v for v in result.columns[feature]]
        view = result.views.get(owner)
        stamps = [_iso(ts) for ts in view.max_event_ts] if view is not None else [_EPOCH_ISO] * n
        results.append(
            {
                "values": values,
                "statuses": [feast_status(s, v) for s, v in zip(statuses[feature], values, strict=True)],
                "event_timestamps": stamps,
            }
        )
    # ``as_of`` (a streamfeat addition Feast's client ignores): the time every value was
    # evaluated at, so a caller comparing servers (a shadow run) knows when this one answered.
    metadata: JSONObject = {"feature_names": names, "as_of": result.request.as_of_echo()}
    if ignored:
        metadata["ignored_entity_columns"] = list(ignored)
    return {"metadata": metadata, "results": results}


def split_entities(
    service: CompiledService, entities: dict[str, object]
) -> tuple[dict[str, object], dict[str, object], list[str]]:
    """Feast's ``entities``: join keys, request fields (Feast sends them there too) and
    columns the service does not take. Feast's own server skips the last; so does this
    route once every join key is there (a misspelt join key is then refused, its hint
    naming the spelling sent), and it names them in ``metadata.ignored_entity_columns``."""
    keys = {k: v for k, v in entities.items() if k not in service.request_fields}
    request_data = {k: v for k, v in entities.items() if k in service.request_fields}
    ignored = [k for k in keys if k not in service.join_key_types]
    if not ignored or any(k not in keys for k in service.join_keys):
        return keys, request_data, []
    return {k: v for k, v in keys.items() if k in service.join_key_types}, request_data, ignored


def _flag(body: dict[str, object], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(
            f"field '{name}': expected a boolean, got {json_kind(value)} {short_repr(value)}",
            hint=f'send "{name}": true or false, or leave it out',
            field=name,
        )
    return value


def _service(state: ServingState, refs: FeatureRefResolver, body: dict[str, object]) -> CompiledService:
    name, features = body.get("feature_service"), body.get("features")
    if name is not None and features:
        raise InvalidRequest(
            "fields 'feature_service' and 'features': expected one of them, got both",
            hint='name a feature service or list "view:feature" references',
            field="features",
        )
    if name is not None:
        if not isinstance(name, str):
            raise InvalidRequest(
                f"field 'feature_service': expected a service name (string), got {json_kind(name)} {short_repr(name)}",
                hint="GET /v1/services lists the feature services",
                field="feature_service",
            )
        return state.registry.service(name)
    if features is None:
        raise InvalidRequest(
            "fields 'feature_service' / 'features': expected one of them, got neither",
            hint='send {"feature_service": "fraud_scoring", ...} or {"features": ["user_spend:amount_sum_15m"], ...}',
            field="features",
        )
    return refs.service(features)


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter()
    refs = FeatureRefResolver(registry)

    @router.post(
        FEAST_ROUTE,
        summary="Feast-compatible online feature retrieval (service or view:feature list)",
        openapi_extra=docs.feast_request_body(sorted(registry.services)),
        responses=docs.feast_responses(),
        response_class=Response,
    )
    async def get_online_features(request: Request) -> Response:
        async def handle(state: ServingState, labels: Labels) -> Response:
            body = parse_json(await read_body(request, state.max_request_bytes))
            service = _service(state, refs, body)
            labels.service = service.name
            entities = body.get("entities")
            if not isinstance(entities, dict):
                raise InvalidRequest(
                    f"field 'entities': expected an object of column -> list of values, got {json_kind(entities)}",
                    hint='e.g. {"entities": {"user_id": ["u1", "u2"]}}: one list per join key, one value per row',
                    field="entities",
                )
            context = body.get("request_context")
            if context is None:
                context = {}
            elif not isinstance(context, dict):
                raise InvalidRequest(
                    f"field 'request_context': expected an object of request field -> list of values, "
                    f"got {json_kind(context)}",
                    hint='e.g. {"request_context": {"amount": [42.0]}}, or leave it out',
                    field="request_context",
                )
            full = _flag(body, "full_feature_names")
            _flag(body, "include_feature_view_version_metadata")  # accepted; streamfeat views have no versions
            keys, request_data, ignored = split_entities(service, entities)
            request_data.update(context)
            feature_request = build_request(
                service,
                keys,
                request_data,
                body.get("as_of"),
                False,
                max_entities=state.max_entities_per_request,
                sections=("entities", "entities"),
            )
            result = await compute_async(state.online, feature_request, state.history)
            return json_response(feast_body(result, full, ignored))

        try:
            return await observed(get_state(request), FEAST_ROUTE, handle)
        except ServingError as exc:
            return feast_error_response(exc)

    return router

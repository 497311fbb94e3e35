"""The streamfeat API: /v1/features/{service}, /v1/services, health, readiness, metrics."""

from __future__ import annotations

from dataclasses import replace
from itertools import repeat

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from engine.json_types import JSONObject
from serving import openapi_docs as docs
from serving.ab_routing import merge_answers, split_request
from serving.auth import readable_services
from serving.deps import Labels, ServingState, get_state, json_response, observed, read_asgi_body
from serving.exceptions import OnlineTableUnavailableError, ServingError
from serving.one_row import answer_one_row
from serving.pipeline import FeatureResult, compute_async
from serving.registry import Registry
from serving.request import build_request, check_keys, parse_json

FEATURES_ROUTE = "/v1/features/{service}"
V1_FIELDS = ("entities", "request_data", "as_of", "include_metadata")
# A field this route does not take but another does: the fix, not the closest name.
V1_FIELD_HINTS = {
    "features": "this route serves the features of the service in its path; to name features one by one "
    '("view:feature"), POST /get-online-features with "features": [...]',
    "feature_service": "this route takes the service in its path: POST /v1/features/{service}",
}


def v1_body(result: FeatureResult) -> JSONObject:
    """Row-major answer: one object per entity row, join keys first, declared order."""
    request = result.request
    names = request.service.columns
    columns = [result.columns[name] for name in names]
    # dict(zip(names, row)) per row, mapped in C (a third cheaper than a comprehension
    # at 100 rows); every row has one value per name, as the columns were taken by name.
    rows = list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))
    body: JSONObject = {"service": request.service.name, "as_of": request.as_of_echo(), "features": rows}
    if request.include_metadata:
        statuses = result.statuses()
        features = request.service.features
        body["metadata"] = {
            "statuses": [
                dict(zip(features, row, strict=True)) for row in zip(*(statuses[f] for f in features), strict=True)
            ],
            "views": result.view_metadata(),
            "sources": result.sources(),
        }
    return body


async def serve_features(request: Request, service: str) -> Response:
    """The documented route's handler (the hot path calls :func:`answer_features` directly)."""
    return await answer_features(get_state(request), service, request.scope, request.receive)


async def answer_features(state: ServingState, service: str, scope: Scope, receive: Receive) -> Response:
    """Parse, read the online table, evaluate windows, run transforms, answer (errors as JSON)."""

    async def handle(state: ServingState, labels: Labels) -> Response:
        compiled = state.registry.service(service)
        labels.service = compiled.name
        body = parse_json(await read_asgi_body(scope, receive, state.max_request_bytes))
        check_keys(body, V1_FIELDS, V1_FIELD_HINTS)
        feature_request = build_request(
            compiled,
            body.get("entities"),
            body.get("request_data"),
            body.get("as_of"),
            body.get("include_metadata"),
            max_entities=state.max_entities_per_request,
        )
        asked = feature_request.include_metadata
        if state.request_log is not None and not asked:
            # The request log keeps every row's statuses (consistency-check explains
            # mismatches by them): computed here, left out of the answer.
            feature_request = replace(feature_request, include_metadata=True)
        if compiled.ab_split:
            parts = [
                (v1_body(await compute_async(state.online, part, state.history)), rows)
                for part, rows in split_request(state.registry, feature_request)
            ]
            answer = merge_answers(feature_request, parts)
        else:
            one_row = answer_one_row(state.online, state.history, feature_request)
            answer = (
                one_row
                if one_row is not None
                else v1_body(await compute_async(state.online, feature_request, state.history))
            )
        if state.request_log is not None:
            state.request_log.record(
                compiled.name,
                feature_request.times(),
                body.get("entities") or {},
                body.get("request_data") or {},
                answer["features"],
                answer["metadata"]["statuses"],
            )
            if not asked:
                del answer["metadata"]
        return json_response(answer)

    try:
        return await observed(state, FEATURES_ROUTE, handle)
    except ServingError as exc:  # what the app's ServingError handler answers
        return json_response(exc.to_dict(), exc.status_code)


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter()
    names = sorted(registry.services)

    @router.post(
        FEATURES_ROUTE,
        summary="Feature vectors of a service for one or more entities",
        openapi_extra=docs.v1_request_body(),
        responses=docs.v1_responses(),
        response_class=Response,
    )
    async def get_features(
        request: Request,
        service: str = Path(description="feature service name", json_schema_extra={"enum": names}),
    ) -> Response:
        return await serve_features(request, service)

    @router.get(
        "/v1/services",
        summary="Every feature service with its inputs and outputs",
        responses=docs.services_responses(),
        response_class=Response,
    )
    async def list_services(request: Request) -> Response:
        reg = get_state(request).registry
        names = readable_services(request.scope, sorted(reg.services))
        return json_response({"services": [reg.services[n].describe() for n in names]})

    @router.get(
        "/v1/services/{name}",
        summary="One feature service: inputs (with types) and outputs",
        responses=docs.service_responses(),
        response_class=Response,
    )
    async def describe_service(
        request: Request,
        name: str = Path(description="feature service name", json_schema_extra={"enum": names}),
    ) -> Response:
        return json_response(get_state(request).registry.service(name).describe())

    @router.get(
        "/healthz", summary="The process is alive", response_class=Response, responses=docs.simple_responses("ok")
    )
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get(
        "/readyz",
        summary="The online table can answer reads (503 with the reason otherwise)",
        response_class=Response,
        responses=docs.readyz_responses(),
    )
    async def readyz(request: Request) -> Response:
        online = get_state(request).online
        if online.plan is not None:
            online.plan.check_all()  # 503 plan_changed: a server to restart is not ready
        ready, detail = online.ready()
        if not ready:
            raise OnlineTableUnavailableError(detail, hint="see the reason; readiness returns once it is gone")
        return json_response({"status": "ready", "detail": detail})

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        state = get_state(request)
        state.online.update_freshness_gauges(state.registry.views)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router

"""The feature route dispatched before FastAPI's stack answers exactly like the router would."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware.exceptions import ExceptionMiddleware

from serving.hot_path import FeatureRoute, feature_service, route_path
from tests.serving.asgi_support import ASGIClient

GOOD = {
    "entities": {"user_id": ["u1"], "merchant_id": ["m1"]},
    "request_data": {"amount": [3.0]},
    "as_of": 1_767_225_600_000,
    "include_metadata": True,
}


def _scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize(
    ("method", "path", "root_path", "service"),
    [
        ("POST", "/v1/features/fraud_scoring", "", "fraud_scoring"),
        ("POST", "/api/v1/features/fraud_scoring", "/api", "fraud_scoring"),
        ("GET", "/v1/features/fraud_scoring", "", None),  # the router answers 405
        ("POST", "/v1/features/", "", None),
        ("POST", "/v1/features/a/b", "", None),
        ("POST", "/v1/services/fraud_scoring", "", None),
        # root_path is a prefix of whole segments only (the ASGI spec, what the router matches)
        ("POST", "/apiv1/features/fraud_scoring", "/api", None),
        ("POST", "/v1/features/fraud_scoring", "/other", "fraud_scoring"),
        ("POST", "/api", "/api", None),
    ],
)
def test_dispatch_takes_exactly_the_route_template(method: str, path: str, root_path: str, service: str | None) -> None:
    assert feature_service(_scope(method, path, root_path)) == service


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/a/b", "", "/a/b"),
        ("/api/a", "/api", "/a"),
        ("/api", "/api", ""),
        ("/apix/a", "/api", "/apix/a"),
        ("/a", "/api", "/a"),
    ],
)
def test_route_path_cuts_the_mount_point_only(path: str, root_path: str, expected: str) -> None:
    assert route_path(_scope("POST", path, root_path)) == expected


def test_hot_path_answers_like_the_documented_route(client: ASGIClient) -> None:
    """The same body through the dispatcher and through FastAPI's own stack: same bytes."""
    app = client.app
    for body in (GOOD, {**GOOD, "entities": {"user_id": ["u1"]}}):
        via_dispatch = client.post("/v1/features/fraud_scoring", json=body)
        framework: Any = _feature_route(app).app  # what the route middleware passes other requests to
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)  # noqa: B023 - consumed before the next iteration

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/features/fraud_scoring",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "query_string": b"",
            "app": app,
            "http_version": "1.1",
            "scheme": "http",
            "server": ("t", 80),
            "client": ("c", 1),
        }
        client._loop.run_until_complete(framework(scope, _receive(via_dispatch.request.content), send))
        assert sent[0]["status"] == via_dispatch.status_code
        assert sent[1]["body"] == via_dispatch.content
    assert via_dispatch.status_code == 422  # the second body misses merchant_id


def test_other_methods_and_paths_still_reach_the_router(client: ASGIClient) -> None:
    assert client.get("/v1/features/fraud_scoring").status_code == 405
    assert client.post("/v1/features/fraud_scoring/extra", json=GOOD).status_code == 404
    assert client.post("/v1/features/nope", json=GOOD).status_code == 404  # ServingError via the hot path
    assert client.get("/healthz").json() == {"status": "ok"}


def _feature_route(app: Any) -> FeatureRoute:
    """The app's FeatureRoute middleware, found by following each layer's ``app``."""
    layer = app.middleware_stack
    assert layer is not None, "the app has served a request, so its middleware stack is built"
    while not isinstance(layer, FeatureRoute):
        layer = layer.app
    return layer


def test_feature_route_is_inside_every_user_middleware(client: ASGIClient) -> None:
    """Shedding and API keys see feature requests first: the route is the innermost user middleware."""
    client.get("/healthz")
    innermost: object = client.app.user_middleware[-1].cls
    assert innermost is FeatureRoute
    assert isinstance(_feature_route(client.app).app, ExceptionMiddleware)  # then the router


def _receive(body: bytes) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive

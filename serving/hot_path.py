"""``POST /v1/features/{service}`` served beside the framework stack, not through it.

FastAPI's stack costs tens of microseconds per request before a handler runs: error
and telemetry middleware, a body-limit wrapper, the exception middleware, an exit
stack, and matching the path against every route. :class:`FeatureApp` builds its
middleware stack as usual and puts one dispatcher in front of it: a feature request
goes through the app's own user middleware (shedding, API keys: new instances built
from the same ``Middleware`` entries, sharing their state objects) straight to the
handler; everything else (other routes, other methods, ``/docs``) goes through
FastAPI unchanged. The documented route stays in the router for the OpenAPI schema
and answers exactly the same way.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.deps import ServingState
from serving.routes_v1 import answer_features

FEATURES_PREFIX = "/v1/features/"


def feature_service(scope: Scope) -> str | None:
    """The service of a ``POST /v1/features/{service}`` request (the router's match), else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = get_route_path(scope)
    if not path.startswith(FEATURES_PREFIX):
        return None
    service = path[len(FEATURES_PREFIX):]
    return service if service and "/" not in service else None


async def _features(scope: Scope, receive: Receive, send: Send) -> None:
    state: ServingState = scope["app"].state.serving
    response = await answer_features(state, scope["path_params"]["service"], scope, receive)
    await response(scope, receive, send)


class _Dispatch:
    def __init__(self, features: ASGIApp, framework: ASGIApp) -> None:
        self.features = features
        self.framework = framework

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = feature_service(scope)
        if service is None:
            await self.framework(scope, receive, send)
            return
        scope["path_params"] = {"service": service}
        await self.features(scope, receive, send)


class FeatureApp(FastAPI):
    """FastAPI with the feature route dispatched before the framework stack."""

    def build_middleware_stack(self) -> ASGIApp:
        framework = super().build_middleware_stack()
        features: ASGIApp = _features
        for cls, args, kwargs in reversed(self.user_middleware):
            features = cls(features, *args, **kwargs)
        return _Dispatch(features, framework)

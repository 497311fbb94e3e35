"""``POST /v1/features/{service}`` served beside the framework stack, not through it.

FastAPI's stack costs tens of microseconds per request before a handler runs: error
and telemetry middleware, a body-limit wrapper, the exception middleware, an exit
stack, and matching the path against every route. :class:`FeatureApp` builds its
middleware stack as usual and puts one dispatcher in front of it: a feature request
goes through the app's own user middleware (shedding, API keys: new instances built
from the same ``Middleware`` entries, sharing their state objects) straight to the
handler; everything else (other routes, other methods, ``/docs``) goes through
FastAPI unchanged. The documented route stays in the router for the OpenAPI schema
and answers exactly the same way. :meth:`FeatureApp.__call__` sends feature requests
to that stack without entering ``FastAPI.__call__`` (whose OpenTelemetry check costs
~3 us a request) unless FastAPI's telemetry is configured.
"""

from __future__ import annotations

import math
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.deps import ServingState
from serving.routes_v1 import answer_features

FEATURES_PREFIX = "/v1/features/"


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point, per the ASGI spec: ``path`` includes
    ``root_path`` when the server or a proxy mounts the app under a prefix, so a prefix
    followed by ``/`` (or nothing) is cut off; any other path is matched as it is (what
    Starlette's router matches against, without importing its private helper)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    return rest if not rest or rest[0] == "/" else path


def feature_service(scope: Scope) -> str | None:
    """The service of a ``POST /v1/features/{service}`` request (the router's match), else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = route_path(scope)
    if not path.startswith(FEATURES_PREFIX):
        return None
    service = path[len(FEATURES_PREFIX) :]
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

    _features_stack: ASGIApp | None = None
    _telemetry_read_at = -math.inf
    _telemetry_on = True

    def build_middleware_stack(self) -> ASGIApp:
        framework = super().build_middleware_stack()
        features: ASGIApp = _features
        for cls, args, kwargs in reversed(self.user_middleware):
            features = cls(features, *args, **kwargs)
        self._features_stack = features
        return _Dispatch(features, framework)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A feature request skips FastAPI.__call__ too, unless FastAPI's OpenTelemetry
        # support is on (then it wraps every request, as before).
        features = self._features_stack
        if features is not None and not self.root_path and not self._telemetry_enabled():
            service = feature_service(scope)
            if service is not None:
                scope["app"] = self
                scope["path_params"] = {"service": service}
                await features(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _telemetry_enabled(self) -> bool:
        """FastAPI's own check costs ~3 us (a tenth of the hot path's own work); tracer
        and meter providers are configured at start-up, so it is read once a second."""
        now = time.monotonic()
        if now - self._telemetry_read_at >= 1.0:
            native = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.160
            self._telemetry_on = bool(native is not None and native.enabled())
            self._telemetry_read_at = now
        return self._telemetry_on

"""``POST /v1/features/{service}`` answered by a pure ASGI middleware, before the router.

FastAPI's inner stack costs tens of microseconds per request before a handler runs:
the exception middleware, an exit stack, request and dependency solving, and matching
the path against every route. :class:`FeatureRoute` is added with the public
``app.add_middleware`` as the innermost user middleware, so a feature request passes
FastAPI's and Starlette's outer layers (telemetry when configured, the server-error
middleware) and the app's own middleware (shedding, API keys) exactly like any other
request, and is then answered by :func:`serving.routes_v1.answer_features` without
entering the router. Everything else (other routes, other methods, ``/docs``) goes on
to the router unchanged. The documented route stays in the router for the OpenAPI
schema and answers exactly the same way (a test compares both).
"""

from __future__ import annotations

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


class FeatureRoute:
    """ASGI middleware: answers feature requests itself, passes the rest to ``app``.

    Add it before any other middleware (``add_middleware`` puts later ones outside it);
    the app's ``state.serving`` must hold the :class:`ServingState`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = feature_service(scope)
        if service is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"service": service}
        state: ServingState = scope["app"].state.serving
        response = await answer_features(state, service, scope, receive)
        await response(scope, receive, send)

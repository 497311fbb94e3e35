"""Per-app serving state (registry, online access, metrics, limits) and body reading."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from serving.exceptions import MalformedRequest, PayloadTooLarge, ServerError, ServingError
from serving.history import HistoricalReads
from serving.metrics import ServingMetrics
from serving.online import OnlineAccess
from serving.registry import Registry
from serving.request_log import RequestLogger

log = logging.getLogger("streamfeat.serving")

JSON = "application/json"


@dataclass(frozen=True)
class ServingState:
    registry: Registry
    online: OnlineAccess
    metrics: ServingMetrics
    history: HistoricalReads
    max_entities_per_request: int = 1000
    max_request_bytes: int = 1_048_576
    request_log: RequestLogger | None = None


@dataclass
class Labels:
    service: str = "-"


def get_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


def json_response(body: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes by header and by what was actually read."""
    return await read_asgi_body(request.scope, request.receive, limit)


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """:func:`read_body` straight from the ASGI messages (no Request object on the hot path)."""
    declared: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value.decode("latin-1")
            break
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise MalformedRequest(f"header 'Content-Length': expected an integer, got {declared!r}") from None
        if size > limit:
            raise PayloadTooLarge(f"request body: {size} bytes declared, at most {limit} accepted",
                                  hint="send fewer entities per request")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body: more than {limit} bytes, at most {limit} accepted",
                                  hint="send fewer entities per request")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def observed(
    state: ServingState, route: str, handle: Callable[[ServingState, Labels], Awaitable[Response]],
) -> Response:
    """Run a feature route: time it, count its status, turn surprises into a ServerError.

    Done in the route rather than in middleware: Starlette's BaseHTTPMiddleware costs
    a task and a stream copy per request. The service label is "-" until the service
    is known, so made-up names cannot grow the label set.
    """
    start = time.perf_counter()
    labels = Labels()
    status = 200
    try:
        response = await handle(state, labels)
        status = response.status_code
        return response
    except ServingError as exc:
        status = exc.status_code
        raise
    except Exception as exc:
        status = 500
        log.exception("unexpected error on %s", route)
        raise ServerError(f"unexpected error: {type(exc).__name__}: {exc}",
                          hint="this is a bug in streamfeat serving; see the server log") from exc
    finally:
        state.metrics.observe(route, labels.service, status, time.perf_counter() - start)

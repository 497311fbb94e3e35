"""Per-app serving state (registry, online access, metrics, limits) and body reading."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from engine.io.request_log import RequestLogger
from serving.exceptions import (
    MalformedRequest,
    PayloadTooLarge,
    ServerError,
    ServingError,
    UnsupportedMediaType,
)
from serving.history import HistoricalReads
from serving.metrics import ServingMetrics
from serving.online import OnlineAccess
from serving.registry import Registry

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
    """The JSON body of a feature route: see :func:`read_asgi_body`."""
    return await read_asgi_body(request.scope, request.receive, limit)


def _is_json(content_type: bytes) -> bool:
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


def declared_length(scope: Scope) -> bytes | None:
    """The request's Content-Length header, as sent (None: none)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value  # type: ignore[no-any-return]  # ASGI header values are bytes
    return None


def check_declared_length(declared: bytes | None, limit: int) -> None:
    """Refuse a Content-Length that is not a number or is over ``limit`` before reading anything."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise MalformedRequest(
            f"header 'Content-Length': expected an integer, got {declared.decode('latin-1')!r}",
            hint="send the body's length in bytes",
        ) from None
    if size > limit:
        raise PayloadTooLarge(
            f"request body: {size} bytes declared, at most {limit} accepted", hint="send fewer entities per request"
        )


def check_content_encoding(encodings: list[bytes]) -> None:
    """Refuse a body the server would not read as sent: it decodes no Content-Encoding
    (gzip, br, ...), so only none or ``identity`` is accepted (415 otherwise, not a JSON
    error about bytes that were never JSON)."""
    for value in encodings:
        for coding in value.split(b","):
            if coding.strip().lower() not in (b"", b"identity"):
                raise UnsupportedMediaType(
                    f"header 'Content-Encoding': got {value.decode('latin-1').strip()!r}, and this server decodes "
                    "no content encoding: only an uncompressed body (no Content-Encoding, or identity) is accepted",
                    hint="send the body uncompressed, without the Content-Encoding header",
                )


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body of a feature route: Content-Type must be ``application/json`` (415 otherwise:
    a browser's cross-site simple POST can only send text/plain or form types), it must not
    be compressed (:func:`check_content_encoding`), and more than ``limit`` bytes are refused
    by header and by what was actually read."""
    declared: bytes | None = None
    content_type: bytes | None = None
    encodings: list[bytes] | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-encoding":
            encodings = [value] if encodings is None else [*encodings, value]
    if content_type is None or not _is_json(content_type):
        got = "no Content-Type" if content_type is None else repr(content_type.decode("latin-1"))
        raise UnsupportedMediaType(
            f"header 'Content-Type': expected application/json, got {got}",
            hint="send the header 'Content-Type: application/json'",
        )
    if encodings is not None:
        check_content_encoding(encodings)
    check_declared_length(declared, limit)
    return await receive_body(receive, limit)


async def receive_body(receive: Receive, limit: int) -> bytes:
    """Every ``http.request`` message's body up to the last; ClientDisconnect if the client goes away."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):  # the usual: one message
        body: bytes = message.get("body", b"")
        if len(body) <= limit:
            return body
    return await _receive_chunks(message, receive, limit)


async def _receive_chunks(message: Message, receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(
                    f"request body: more than {limit} bytes, at most {limit} accepted",
                    hint="send fewer entities per request",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        message = await receive()


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` (already read) once, then defers to the real one
    (so a later disconnect is still seen)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def observed(
    state: ServingState,
    route: str,
    handle: Callable[[ServingState, Labels], Awaitable[Response]],
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
        raise ServerError(
            f"unexpected error: {type(exc).__name__}: {exc}",
            hint="this is a bug in streamfeat serving; see the server log",
        ) from exc
    finally:
        state.metrics.observe(route, labels.service, status, time.perf_counter() - start)

"""The one place where errors become HTTP answers, all in the documented shape
``{"error": {"code", "message", "hint"?, "field"?, ...}}`` (docs/serving.md).

Serving errors carry their status and code; the framework's own errors (the router's
404 and 405, request validation, anything unexpected) are translated to serving errors
first, so a client never has to parse a second shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from serving.deps import json_response
from serving.exceptions import (
    InvalidRequest,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    ServerError,
    ServingError,
)

log = logging.getLogger("streamfeat.serving")


def answer(error: ServingError, headers: Mapping[str, str] | None = None, status: int | None = None) -> Response:
    response = json_response(error.to_dict(), status or error.status_code)
    if headers:
        response.headers.update(headers)
    return response


def from_http_exception(request: Request, exc: HTTPException) -> ServingError:
    path = request.url.path
    if exc.status_code == 404:
        return NotFound(f"no route {path}", hint="GET /v1/services lists the feature services; /docs lists every route")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed(
            f"method {request.method} is not allowed on {path}; allowed: {allowed or 'none'}",
            hint=f"use {allowed}" if allowed else None,
        )
    if 400 <= exc.status_code < 500:
        return MalformedRequest(f"{exc.detail}")
    return ServerError(f"{exc.detail}")


async def _serving_error(request: Request, exc: Exception) -> Response:
    error = exc if isinstance(exc, ServingError) else ServerError(f"unexpected error: {exc}")
    return answer(error)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await _unexpected(request, exc)
    # The framework's status is kept (the code says the family: malformed_request or internal_error).
    return answer(from_http_exception(request, exc), exc.headers, exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {}
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query")) or None
    return answer(
        InvalidRequest(
            f"field '{field}': {first.get('msg', 'invalid')}", field=field, hint="see /docs for the route's parameters"
        )
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return answer(
        ServerError(
            f"unexpected error: {type(exc).__name__}", hint="this is a bug in streamfeat serving; see the server log"
        )
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

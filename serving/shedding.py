"""Overload shedding: a bound on requests in flight per serving process.

Past ``max_in_flight`` concurrent requests, a new one is answered at once with 503
``{"error": {"code": "overloaded", "reason": "overloaded", ...}}`` and ``Retry-After: 1``
instead of joining a queue: the requests already admitted keep a bounded latency and
the client (or its load balancer) retries elsewhere or later. Probes and scrapes
(``/healthz``, ``/readyz``, ``/metrics``) are never shed, so an overloaded process is not
mistaken for a dead one. On Feast's route (``/get-online-features``) the 503 is written in
the error shape Feast's client reads (serving/routes_feast.py), with the same Retry-After.

Only requests whose body has fully arrived are counted: the middleware reads the body
(bounded by ``max_request_bytes``) before admission and hands it on as read. A client
that sends headers and then stalls or trickles its body waits outside the count, until
the body read timeout of serving/http_guard.py closes its connection, so no number of
slow clients can fill the budget that complete requests need.

One event loop per process, so a plain counter is exact: the increment and the decrement
happen on the loop thread. Feature handlers are CPU-bound and rarely suspend, so without
help a burst would run one request at a time and the counter would never pass 1 while the
backlog waits unseen in the loop's ready queue. One ``sleep(0)`` after admission lets every
request the loop has already read register before any is served, so the count sees the burst.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from serving.auth import ASGIApp, Receive, Scope, Send, empty_receive
from serving.deps import check_declared_length, declared_length, receive_body, replay_body
from serving.exceptions import Overloaded, ServingError
from serving.routes_feast import error_response

UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_S = 1


@dataclass
class SheddingStats:
    """Counters read by tests and operators (``app.state.shedding``)."""

    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: int = 0
    shed: int = 0


class SheddingMiddleware:
    """Pure ASGI middleware counting in-flight HTTP requests."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int = 64,
        stats: SheddingStats | None = None,
        max_request_bytes: int = 1_048_576,
    ) -> None:
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(
                f"SheddingMiddleware: field 'max_in_flight': expected an int >= 1, got {max_in_flight!r}. "
                "Hint: 64 suits one uvicorn process."
            )
        self.app = app
        self.max_in_flight = max_in_flight
        self.stats = stats if stats is not None else SheddingStats()
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            # A declared Content-Length over the limit is refused before any byte is read
            # (the client need not send it); the bytes read are bounded as well.
            check_declared_length(declared_length(scope), self.max_request_bytes)
            body = await receive_body(receive, self.max_request_bytes)
        except ClientDisconnect:
            return  # gone (or closed by the body read timeout) before the request was complete
        except ServingError as exc:
            await error_response(exc, scope["path"])({"type": "http"}, empty_receive, send)
            return
        receive = replay_body(body, receive)
        stats = self.stats
        if stats.in_flight >= self.max_in_flight:
            stats.shed += 1
            error = Overloaded(
                f"server overloaded: {stats.in_flight} requests in flight, at most {self.max_in_flight}",
                hint=f"retry after {RETRY_AFTER_S} s, or add serving processes",
            )
            response = error_response(error, scope["path"])
            response.headers["retry-after"] = str(RETRY_AFTER_S)
            await response({"type": "http"}, empty_receive, send)
            return
        stats.in_flight += 1
        stats.admitted += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await asyncio.sleep(0)
            await self.app(scope, receive, send)
        finally:
            stats.in_flight -= 1

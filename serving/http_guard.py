"""Connection-level limits against slow and stalled clients (docs/security.md).

Uvicorn starts the app as soon as a request's headers are parsed and then waits for the
body as long as the client likes; it has no header read timeout at all, and a fresh
connection that sends nothing stays open forever. :class:`GuardedHttpToolsProtocol` is
uvicorn's httptools protocol with, per connection:

- a header timeout: the request line and headers must arrive within
  ``header_timeout_ms`` of the connection opening (first request) or of the request's
  first byte (later ones); a connection that sends nothing is closed after it;
- a body timeout: the whole body must arrive within ``body_timeout_ms`` of the headers;
- a header size cap: more than ``max_header_bytes`` of request line and headers is 431;
- a cap on open connections per client address (``max_connections_per_client``; 0 means
  no cap): the connection over the cap gets 503 ``too_many_connections`` and is closed.

Timeouts answer 408 ``request_timeout`` and close. Every answer here uses the error shape
of serving/exceptions.py, and so does a malformed request (uvicorn's plain-text 400).
A request that arrives whole in one read, the usual case, arms no timer: the checks
after each read are a few attribute tests.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from engine.config import Settings

from serving.exceptions import (
    HeadersTooLarge,
    MalformedRequest,
    RequestTimeout,
    ServingError,
    TooManyConnections,
)


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    max_header_bytes: int = 65_536
    max_connections_per_client: int = 128

    def __post_init__(self) -> None:
        for name in ("header_timeout_ms", "body_timeout_ms", "max_header_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"HttpLimits: field '{name}': expected an int >= 1, got {value!r}")
        cap = self.max_connections_per_client
        if type(cap) is not int or cap < 0:
            raise ValueError(
                f"HttpLimits: field 'max_connections_per_client': expected an int >= 0 (0: no cap), got {cap!r}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout_ms=settings.header_timeout_ms,
            body_timeout_ms=settings.body_timeout_ms,
            max_header_bytes=settings.max_header_bytes,
            max_connections_per_client=settings.max_connections_per_client,
        )


def raw_error(error: ServingError) -> bytes:
    """A complete HTTP/1.1 answer carrying ``error`` that closes the connection."""
    body = orjson.dumps(error.to_dict())
    head = (
        f"HTTP/1.1 {error.status_code} {http.HTTPStatus(error.status_code).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol plus the limits above (pass it as uvicorn's ``http``)."""

    limits: ClassVar[HttpLimits | None] = None
    # Open connections per client address. One event loop per process, so a dict is exact.
    open_per_client: ClassVar[dict[str, int]] = {}

    @classmethod
    def configure(cls, limits: HttpLimits) -> None:
        cls.limits = limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # uvicorn's own arguments, passed through
        super().__init__(*args, **kwargs)
        limits = type(self).limits
        if limits is None:  # a worker process: same settings as the parent (environment, files)
            from engine.config import load_settings

            limits = HttpLimits.from_settings(load_settings())
            type(self).configure(limits)
        self._limits = limits
        self._message_open = False
        self._headers_done = False
        self._header_bytes = 0
        self._read_timer: asyncio.TimerHandle | None = None
        self._counted_host: str | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self._limits.max_connections_per_client
        host = self.client[0] if self.client else None
        if cap and host is not None:
            count = self.open_per_client.get(host, 0) + 1
            self.open_per_client[host] = count
            self._counted_host = host
            if count > cap:
                self._refuse(
                    TooManyConnections(
                        f"client {host} has {count} connections open, at most {cap} per client address",
                        hint="reuse keep-alive connections; behind a proxy raise max_connections_per_client",
                    )
                )
                return
        self._arm(self._limits.header_timeout_ms)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        host = self._counted_host
        if host is not None:
            self._counted_host = None
            left = self.open_per_client.get(host, 1) - 1
            if left > 0:
                self.open_per_client[host] = left
            else:
                self.open_per_client.pop(host, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._message_open:
            if self._read_timer is not None:
                self._disarm()
            return
        if not self._headers_done:
            self._header_bytes += len(data)
            if self._header_bytes > self._limits.max_header_bytes:
                self._refuse(
                    HeadersTooLarge(
                        f"request headers: more than {self._limits.max_header_bytes} bytes",
                        hint="send fewer or shorter headers",
                    )
                )
                return
        if self._read_timer is None:
            self._arm(self._limits.body_timeout_ms if self._headers_done else self._limits.header_timeout_ms)

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self._refuse(MalformedRequest(f"malformed HTTP request: {msg}", hint="send HTTP/1.1"))

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_open = True
        self._headers_done = False
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_done = True
        if self._read_timer is not None:  # the header timer ran: the body gets its own
            self._disarm()
            self._arm(self._limits.body_timeout_ms)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_open = False

    # Timers

    def _arm(self, after_ms: int) -> None:
        self._read_timer = self.loop.call_later(after_ms / 1000, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if not self._message_open:  # idle: no request started
            self.transport.close()
            return
        if self._headers_done:
            error = RequestTimeout(
                f"request body: not complete within {self._limits.body_timeout_ms} ms of the headers",
                hint="send the whole body at once",
            )
        else:
            error = RequestTimeout(
                f"request headers: not complete within {self._limits.header_timeout_ms} ms",
                hint="send the request line and headers at once",
            )
        self._refuse(error)

    def _refuse(self, error: ServingError) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(raw_error(error))
            self.transport.close()

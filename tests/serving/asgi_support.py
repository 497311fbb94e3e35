"""A synchronous client over an ASGI app (httpx.AsyncClient + ASGITransport on a private loop).

Starlette's TestClient warns that its httpx backend is deprecated (an error under
filterwarnings=error), so the tests drive the app through httpx's own ASGI transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI


class ASGIClient:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serving.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

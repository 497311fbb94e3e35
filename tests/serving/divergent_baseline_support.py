"""A baseline feature server for shadow-run tests: streamfeat's own Feast route, materialized
"as of" a fixed time, with seeded divergences whose cause is known (each recorded in
``seeded`` so a test can check the report explains exactly them).

Seeds (by streamfeat feature reference -> how the baseline's value is made):
- ``user_spend:amount_sum_1h``: streamfeat's value one tile (1 min) earlier (window boundary);
- ``user_spend:amount_mean_15m``: 0.0 where streamfeat has null (null vs default);
- ``user_spend:ms_since_last_purchase``: in seconds, not ms (unit);
- ``user_merchant_spend:pair_first_seen_1d``: two hours ahead (time zone);
- ``merchant_activity:merchant_txn_count_1h``: streamfeat's value an hour earlier (staleness);
- every feature of user ``MISSING_USER``: NOT_FOUND (missing entity).
``renamed`` maps streamfeat references to the baseline's own names.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MINUTE, HOUR = 60_000, 3_600_000
MISSING_USER = "u4"
SHIFTED = {
    "user_spend:amount_sum_1h": (-MINUTE, "window_boundary"),
    "merchant_activity:merchant_txn_count_1h": (-HOUR, "staleness"),
}
NULL_TO_ZERO = "user_spend:amount_mean_15m"
IN_SECONDS = "user_spend:ms_since_last_purchase"
HOURS_AHEAD = "user_merchant_spend:pair_first_seen_1d"


def _ref(name: str) -> str:
    view, _, feature = name.partition("__")
    return f"{view}:{feature}"


class DivergentBaseline:
    """``mode``: "ok", "slow" (waits for ``release``), "garbage" or "error" (HTTP 500)."""

    def __init__(self, streamfeat_url: str, as_of_ms: int, renamed: Mapping[str, str] | None = None) -> None:
        self.streamfeat_url = streamfeat_url
        self.as_of_ms = as_of_ms
        self.renamed = dict(renamed or {})
        self.mode = "ok"
        self.release = threading.Event()
        self.seeded: set[tuple[tuple[tuple[str, Any], ...], str, str]] = set()  # (entity, feature, cause)
        self.app = Starlette(routes=[Route("/get-online-features", self.answer, methods=["POST"])])

    async def _ask(self, client: httpx.AsyncClient, body: dict[str, Any], as_of: int) -> dict[str, Any]:
        response = await client.post(f"{self.streamfeat_url}/get-online-features", json={**body, "as_of": as_of})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    async def answer(self, request: Request) -> Response:
        if self.mode == "slow":
            await asyncio.to_thread(self.release.wait, 60)
        if self.mode == "garbage":
            return Response(b"<html>gateway says hi</html>", media_type="text/html")
        if self.mode == "error":
            return Response(b'{"detail": "boom"}', status_code=500, media_type="application/json")
        body = orjson.loads(await request.body())
        back = {theirs: ours for ours, theirs in self.renamed.items()}
        if "features" in body:
            body["features"] = [back.get(f, f) for f in body["features"]]
        async with httpx.AsyncClient(timeout=30) as client:
            now = await self._ask(client, body, self.as_of_ms)
            earlier = {shift: await self._ask(client, body, self.as_of_ms + shift) for shift in (-MINUTE, -HOUR)}
        names = now["metadata"]["feature_names"]
        users = body["entities"]["user_id"]
        entities = [tuple((k, v[i]) for k, v in body["entities"].items()) for i in range(len(users))]
        for j, name in enumerate(names):
            ref = _ref(name)
            if "__" not in name:
                continue
            column = now["results"][j]
            for i, value in enumerate(column["values"]):
                new, cause = self._seed(ref, value, earlier, j, i)
                if users[i] == MISSING_USER:
                    new, cause = None, "missing_entity"
                    column["statuses"][i] = "NOT_FOUND"
                if new != value:
                    column["values"][i] = new
                    self.seeded.add((entities[i], ref, cause))
            if ref in self.renamed:
                view, _, feature = self.renamed[ref].partition(":")
                names[j] = f"{view}__{feature}"
        return Response(orjson.dumps(now), media_type="application/json")

    @staticmethod
    def _seed(ref: str, value: Any, earlier: dict[int, dict[str, Any]], j: int, i: int) -> tuple[Any, str]:
        if ref in SHIFTED:
            shift, cause = SHIFTED[ref]
            return earlier[shift]["results"][j]["values"][i], cause
        if ref == NULL_TO_ZERO and value is None:
            return 0.0, "null_vs_default"
        if ref == IN_SECONDS and value is not None:
            return value // 1000, "unit_or_time_zone"
        if ref == HOURS_AHEAD and value is not None:
            return value + 2 * HOUR, "unit_or_time_zone"
        return value, ""


class NowBaseline:
    """streamfeat's Feast route as Feast's own server behaves: it ignores ``as_of`` (answers
    as of now) and its answer carries no ``metadata.as_of``."""

    def __init__(self, streamfeat_url: str) -> None:
        self.streamfeat_url = streamfeat_url
        self.app = Starlette(routes=[Route("/get-online-features", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        body.pop("as_of", None)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{self.streamfeat_url}/get-online-features", json=body)
        answer = response.json()
        if isinstance(answer, dict):
            answer["metadata"].pop("as_of", None)
        return Response(orjson.dumps(answer), status_code=response.status_code, media_type="application/json")

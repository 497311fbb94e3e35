"""Child program: a bare FastAPI app that reads the POST body and answers a constant JSON
document; one uvicorn process on loopback. The ceiling for "FastAPI doing nothing".

    python -m benchmarks.peers.bare_fastapi PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()
_ANSWER = b'{"features":[{"user_id":"u0","amount_sum_15m":1.0}]}'


@app.post("/v1/features/{service}")
async def features(service: str, request: Request) -> Response:
    await request.body()
    return Response(_ANSWER, media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )

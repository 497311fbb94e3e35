"""Fallback load generator when `wrk` is missing: asyncio keep-alive HTTP/1.1 connections
POSTing pre-rendered bodies for a fixed time; prints the same JSON shape as wrk_report.lua.

    python -m benchmarks.peers.loadgen HOST PORT PATH BODIES_FILE CONNECTIONS SECONDS
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import numpy as np

PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9)


async def _worker(host: str, port: int, requests: list[bytes], until: float, lat: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for req in itertools.cycle(requests):
        now = time.perf_counter()
        if now >= until:
            break
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - now)
        if not head.startswith(b"HTTP/1.1 2"):
            bad[0] += 1
    writer.close()


async def main(host: str, port: int, path: str, bodies_file: str, connections: int, seconds: float) -> None:
    with open(bodies_file, "rb") as fh:
        bodies = [ln.rstrip(b"\n") for ln in fh if ln.strip()]
    requests = [
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), len(b), b)
        for b in bodies
    ]
    lat: list[float] = []
    bad = [0]
    started = time.perf_counter()
    until = started + seconds
    offsets = [requests[i::connections] or requests for i in range(connections)]
    await asyncio.gather(*(_worker(host, port, offsets[i], until, lat, bad) for i in range(connections)))
    duration = time.perf_counter() - started
    arr = np.array(lat) * 1e6
    print(
        json.dumps(
            {
                "requests": len(lat),
                "duration_us": int(duration * 1e6),
                "errors": 0,
                "non_2xx": bad[0],
                "percentiles_us": {str(p): int(np.percentile(arr, p)) for p in PERCENTILES},
            }
        )
    )


if __name__ == "__main__":
    h, p, path, bf, c, s = sys.argv[1:7]
    asyncio.run(main(h, int(p), path, bf, int(c), float(s)))

"""Hostile HTTP clients, run as their own process by tests/faults/test_slow_clients.py.

    python -m tests.faults.slow_clients_support HOST PORT SOURCE[,SOURCE...] PER_SOURCE SECONDS

From each source address (127.0.0.x: all of 127/8 is loopback on Linux, so the server
sees distinct clients) it keeps PER_SOURCE connections open, in five kinds: idle (connect,
send nothing), stalled headers, trickled headers (a byte every 50 ms), stalled body
(headers and a few body bytes, then nothing) and trickled body. A connection the server
closes is reopened 0.2 s later, for SECONDS. Prints ``ready`` once every connection was
opened, and at the end one JSON line: the status codes the server answered them with.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

BODY = b'{"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}}'
KINDS = ("idle", "stalled_headers", "trickled_headers", "stalled_body", "trickled_body")
TRICKLE_S = 0.05
RECONNECT_S = 0.2


def _request(host: str) -> bytes:
    return (
        f"POST /v1/features/fraud_scoring HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def _one(
    kind: str, host: str, port: int, source: str, deadline: float, answers: Counter[str], opened: asyncio.Event | None
) -> None:
    request = _request(host)
    head_end = request.index(b"\r\n\r\n") + 4
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            answers["connect_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        if opened is not None:
            opened.set()
            opened = None
        try:
            if kind == "stalled_headers":
                writer.write(request[:20])
            elif kind == "stalled_body":
                writer.write(request[: head_end + 5])
            elif kind in ("trickled_headers", "trickled_body"):
                start = 0 if kind == "trickled_headers" else head_end
                writer.write(request[:start])
                for i in range(start, len(request) - 1):  # never the last byte
                    if reader.at_eof() or time.monotonic() > deadline:
                        break
                    writer.write(request[i : i + 1])
                    await asyncio.sleep(TRICKLE_S)
            await writer.drain()
            remaining = deadline - time.monotonic()
            line = await asyncio.wait_for(reader.readline(), timeout=max(remaining, 0.01))
            answers[line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"] += 1
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_S)  # slow clients, not a connection flood


async def main(host: str, port: int, sources: list[str], per_source: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    answers: Counter[str] = Counter()
    events = []
    tasks = []
    for source in sources:
        for i in range(per_source):
            opened = asyncio.Event()
            events.append(opened)
            tasks.append(
                asyncio.create_task(_one(KINDS[i % len(KINDS)], host, port, source, deadline, answers, opened))
            )
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=seconds)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps(dict(answers)), flush=True)


if __name__ == "__main__":
    host_arg, port_arg, sources_arg, per_source_arg, seconds_arg = sys.argv[1:6]
    asyncio.run(main(host_arg, int(port_arg), sources_arg.split(","), int(per_source_arg), float(seconds_arg)))

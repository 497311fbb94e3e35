"""Child program run with the Quix Streams virtualenv's Python (benchmarks/.peers/quix):
a hopping window (1 h, 15 min step) sum and count of purchase amounts per user, RocksDB
state, over a pre-filled topic until it has seen every event; prints timing as JSON.

    .peers/quix/bin/python benchmarks/peers/quix_ingest.py BOOTSTRAP TOPIC EVENTS STATE_DIR

Standalone on purpose: it must not import streamfeat (a different environment).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

from quixstreams import Application  # type: ignore[import-not-found]
from quixstreams.dataframe.windows import Count, Sum  # type: ignore[import-not-found]


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main(bootstrap: str, topic: str, events: int, state_dir: str) -> None:
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,  # streamfeat keeps no changelog either
    )
    source = app.topic(
        topic, value_deserializer="json", timestamp_extractor=lambda value, headers, ts, ttype: int(value["ts"])
    )
    sdf = app.dataframe(source)
    seen = [0, 0.0, 0.0]  # events, first-seen time, last-seen time

    def tally(_value: Any) -> None:
        if seen[0] == 0:
            seen[1] = time.perf_counter()
        seen[0] += 1
        if seen[0] >= events:
            seen[2] = time.perf_counter()
            app.stop()

    sdf = sdf.update(tally)
    sdf = sdf[sdf["event_type"] == "PURCHASE"]
    sdf = (
        sdf.hopping_window(duration_ms=3_600_000, step_ms=900_000, grace_ms=300_000)
        .agg(amount_sum=Sum("amount"), amount_count=Count())
        .final()
    )
    started = time.perf_counter()
    app.run()
    wall = time.perf_counter() - started
    if seen[0] < events:
        raise SystemExit(f"quix_ingest: expected {events} events, saw {seen[0]}")
    print(
        json.dumps(
            {
                "system": "quix",
                "events": seen[0],
                "seconds": wall,
                "first_to_last_seconds": seen[2] - seen[1],
                "peak_rss_kb": _peak_rss_kb(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

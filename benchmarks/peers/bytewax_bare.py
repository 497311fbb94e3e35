"""Child program: a bare Bytewax flow (KafkaSource -> orjson -> key by user -> count per key
with stateful_map) over a pre-filled topic; prints its timing as JSON.

    python -m benchmarks.peers.bytewax_bare BOOTSTRAP TOPIC EVENTS

The floor for "Bytewax with no feature engine": no windows, no state store, no log.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from benchmarks.common import emit, own_peak_rss_kb


class _Counted(StatelessSinkPartition[Any]):
    def __init__(self, seen: list[int]) -> None:
        self._seen = seen

    def write_batch(self, items: list[Any]) -> None:
        self._seen[0] += len(items)


class CountingSink(DynamicSink[Any]):
    """Counts emitted items so the run proves it saw every event."""

    def __init__(self) -> None:
        self.seen = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Counted:
        return _Counted(self.seen)


def _key(message: Any) -> tuple[str, bytes]:
    return str(orjson.loads(message.value)["user_id"]), bytes(message.value)


def _count(state: int | None, _value: bytes) -> tuple[int, int]:
    n = (state or 0) + 1
    return n, n


def main(bootstrap: str, topic: str, events: int) -> None:
    flow = Dataflow("bare")
    msgs = op.input("kafka", flow, KafkaSource([bootstrap], [topic], tail=False, batch_size=5000))
    keyed = op.map("key", msgs, _key)
    counts = op.stateful_map("count", keyed, _count)
    sink = CountingSink()
    op.output("out", counts, sink)
    started = time.perf_counter()
    cpu_started = time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    cpu_seconds = time.process_time() - cpu_started
    seconds = time.perf_counter() - started
    if sink.seen[0] != events:
        raise SystemExit(f"bytewax_bare: expected {events} events, counted {sink.seen[0]}")
    emit(
        {
            "system": "bytewax_bare",
            "events": sink.seen[0],
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,  # all threads: compare CPU per event on a shared machine
            "peak_rss_kb": own_peak_rss_kb(),
        }
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

"""Backfill from a Kafka topic: the streaming dataflow itself, run until caught up.

It reads from the offsets recorded in the state (the earliest for a new state
directory) with ``tail=False`` and stops at the end of the topic; those offsets let
streaming continue exactly where it stopped. Backfill from Parquet history is
``engine.offline.backfill``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from dataflows.stream import StreamJob, build_flow


def backfill_kafka(job: StreamJob, *, run: Callable[[Dataflow], None] | None = None) -> None:
    """Run the streaming dataflow of ``job`` from the recorded offsets (or the earliest)
    until it has caught up with the end of the topic, then stop."""
    caught_up = dataclasses.replace(job, tail=False)
    (run or run_main)(build_flow(caught_up, flow_id="streamfeat-backfill"))

"""Throughput of the demo generator alone and of generate + produce to a local broker.

    python -m benchmarks.bench_produce [smoke|small|full]

``run(size)`` returns a flat dict of measurements. It uses ``$KAFKA_BOOTSTRAP`` or a
broker at 127.0.0.1:9092, starting one (and stopping it afterwards) if none answers.
The topic (3 partitions) is created for the run and deleted after it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine import kafka_local
from engine.generate import EventGenerator, GeneratorConfig, produce_events

SIZES: dict[str, int] = {"smoke": 20_000, "small": 200_000, "full": 2_000_000}
PARTITIONS = 3


def _config(events: int) -> GeneratorConfig:
    return GeneratorConfig(events=events, users=100_000, merchants=5_000, seed=42, jitter_ms=500)


def _generate_only(config: GeneratorConfig) -> float:
    started = time.perf_counter()
    produced = sum(len(batch) for batch in EventGenerator(config))
    seconds = time.perf_counter() - started
    return produced / seconds


def run(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"bench_produce: size expected one of {sorted(SIZES)}, got {size!r}")
    config = _config(SIZES[size])
    generate_eps = _generate_only(config)

    configured = os.environ.get("KAFKA_BOOTSTRAP")
    handle = None
    if configured:
        bootstrap = configured
    else:
        handle = kafka_local.ensure_broker(kafka_local.DEFAULT_PORT)
        bootstrap = handle.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
        # Warm-up: the first idempotent producer waits for the coordinator to load.
        produce_events(_config(1_000), topic, bootstrap)
        report = produce_events(config, topic, bootstrap)
    finally:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
        if handle is not None and handle.started_by_us:
            kafka_local.stop_broker(kafka_local.DEFAULT_PORT)
    return {
        "benchmark": "produce",
        "size": size,
        "events": config.events,
        "partitions": PARTITIONS,
        "generate_events_per_s": round(generate_eps),
        "generate_and_produce_seconds": round(report.seconds, 3),
        "generate_and_produce_events_per_s": round(report.events_per_second),
        "bootstrap": bootstrap,
    }


if __name__ == "__main__":
    result = run(sys.argv[1] if len(sys.argv) > 1 else "small")
    for key, value in result.items():
        print(f"{key}: {value}")

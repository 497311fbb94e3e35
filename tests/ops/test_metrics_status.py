"""Layer 1 and `streamfeat status` against a real broker and a real running dataflow."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from engine.generate import generate
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from engine.ports import free_port
from tests.engine.streaming_support import applied_events, read_topic, reference_events, streamfeat
from tests.ops.ops_support import (
    make_pipeline,
    produce,
    running_dataflow,
    scrape,
    total,
    wait_until,
)

pytestmark = [pytest.mark.kafka]

EVENTS = 6_000
LATENESS_MS = 300_000


def test_metrics_endpoint_and_status_of_a_running_dataflow(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    p = make_pipeline(tmp_path, kafka_bootstrap, topic)
    config = produce(p, EVENTS, seed=21)
    port = free_port()
    with running_dataflow(p, port) as child:
        wait_until(
            lambda: total(scrape(port), "streamfeat_events_in_total") >= EVENTS,
            120,
            "the dataflow to read every record",
        )
        assert child.poll() is None
        wait_until(
            lambda: (
                total(scrape(port), "streamfeat_consumer_lag_records", topic=topic) == 0
                and len([k for k in scrape(port) if k[0] == "streamfeat_consumer_lag_records"]) == 3
            ),
            30,
            "consumer lag 0 on three partitions",
        )
        samples = scrape(port)

        # What the dataflow must have seen, computed independently of it.
        records = read_topic(kafka_bootstrap, topic, 3)
        events = reference_events(records, generate(config))
        applied = applied_events(events, LATENESS_MS)
        purchases = sum(1 for e in applied if e["event_type"] == "PURCHASE")
        letters = read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))
        by_reason = Counter(letter.reason for letter in letters)
        assert letters and by_reason["late_event"] > 0, "the test data should have late and bad records"

        assert total(samples, "streamfeat_events_in_total", topic=topic) == EVENTS
        assert total(samples, "streamfeat_events_valid_total") == EVENTS - by_reason.total()
        for reason, n in by_reason.items():
            assert total(samples, "streamfeat_dead_letters_total", reason=reason) == n, reason
        assert total(samples, "streamfeat_late_events_total") == by_reason["late_event"]
        for view in ("user_spend", "merchant_activity"):
            assert total(samples, "streamfeat_rows_applied_total", view=view) == purchases, view
        assert total(samples, "streamfeat_apply_batch_seconds_count") > 0
        assert total(samples, "streamfeat_state_bytes") > 0
        ends = Counter(r.partition for r in records)
        for partition, count in ends.items():
            assert total(samples, "streamfeat_consumer_position", partition=str(partition)) == count

        # `streamfeat status` (JSON) against the same topic and state, dataflow still running.
        done = streamfeat("status", *p.common, "--json", "--sample", "0.5")
        status = orjson.loads(done.stdout)
        (source,) = status["sources"]
        assert source["topic"] == topic and source["dlq_records"] == len(letters)
        assert {row["partition"]: row["end_offset"] for row in source["partitions"]} == dict(ends)
        for row in source["partitions"]:
            assert row["lag"] == 0 and row["applied_next"] == row["end_offset"], row
        newest = max(e["e"] for e in applied if e["event_type"] == "PURCHASE")
        views = {v["name"]: v for v in status["views"]}
        assert views["user_spend"]["newest_event_ms"] == newest
        assert views["user_spend"]["freshness_lag_s"] > 0
        assert len(status["shard_bytes"]) == 4 and sum(status["shard_bytes"]) > 0

        # events/s from two offset samples while new records arrive. Records keep arriving
        # until status has answered: one burst produced at a fixed moment could be applied
        # entirely before the first sample on a loaded machine, and the rate would read 0.
        stop = threading.Event()

        def keep_producing() -> None:
            burst = 0
            while not stop.is_set():
                start = config.start_ms + 200_000_000 + burst * 40_000
                produce(p, 2_000, seed=22 + burst, start_ms=start)
                burst += 1

        producer = threading.Thread(target=keep_producing, name="status-producer")
        producer.start()
        try:
            moving = orjson.loads(streamfeat("status", *p.common, "--json", "--sample", "6").stdout)
        finally:
            stop.set()
            producer.join()
        assert moving["sources"][0]["events_per_s"] > 0

        # The human-readable form names every view, partition table and the DLQ count.
        text = streamfeat("status", *p.common, "--sample", "0").stdout
        for needle in ("user_spend", "merchant_activity", f"topic {topic}", dlq_topic_for(topic), "state on disk"):
            assert needle in text, needle

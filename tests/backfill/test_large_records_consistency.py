"""Multi-megabyte records end to end: a source that allows large records applies them
like any other (online state, the training set from the log, a backfill of the same
events, each against tests/reference.py); a record over the source's
``max_payload_bytes`` is one dead letter ``payload_too_large`` with its payload capped,
and the records after it are applied as usual (docs/semantics.md section 5).

Large here means larger than librdkafka's default message size (1 MB) and than the
stream consumer's per-partition fetch size (2 MB): the topic and the producer raise
their limits, as a team with large events would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from engine.io.decoder import DEFAULT_DLQ_PAYLOAD_CAP
from tests.backfill.backfill_support import (
    SHARDS,
    START_MS,
    check_history_backfill,
    compare_state,
    compare_training_set,
)
from tests.engine.streaming_support import (
    applied_events,
    example_transaction,
    make_job,
    reference_event,
    refused_reference_event,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MB = 1024 * 1024
MAX_PAYLOAD = 4 * MB
TOPIC_LIMIT = 8 * MB


def _doc(i: int) -> dict[str, Any]:
    return example_transaction(
        i, START_MS + i * 11_000, user=f"u{i % 7}", merchant=f"m{i % 5}", card=f"c{i % 4}", amount=float(i % 13) + 0.25
    )


def _large(i: int) -> tuple[bytes, dict[str, Any]]:
    """A good record of 2.5 to 3.5 MB: an undeclared field (ignored) and, every other time, a
    1 MB merchant id (kept whole: distinct counts and last-N lists hold it)."""
    doc = _doc(i)
    if i % 2:
        doc["merchant_id"] = f"big-{i % 3}-" + "m" * MB
    return orjson.dumps({**doc, "note": "x" * (5 * MB // 2)}), doc


def _too_large(i: int) -> bytes:
    return orjson.dumps({**_doc(i), "note": "y" * (5 * MB)})


def _produce(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True, "message.max.bytes": TOPIC_LIMIT}
    )
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(60) == 0


def test_large_records_apply_and_oversized_ones_are_dead_letters(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1, config={"max.message.bytes": str(TOPIC_LIMIT)})
    values: list[bytes] = []
    docs: list[dict[str, Any]] = []
    oversized: list[int] = []
    for i in range(120):
        if i % 15 == 4:
            raw, doc = _large(i)
            values.append(raw)
            docs.append(doc)
        elif i % 40 == 9:
            oversized.append(len(values))
            values.append(_too_large(i))
        else:
            values.append(orjson.dumps(_doc(i)))
            docs.append(_doc(i))
    _produce(kafka_bootstrap, topic, values)

    job = make_job(tmp_path / "stream", topic, kafka_bootstrap, shards=SHARDS)
    source = dataclasses.replace(job.source, max_payload_bytes=MAX_PAYLOAD)
    job = dataclasses.replace(job, source=source, views=tuple(dataclasses.replace(v, source=source) for v in job.views))
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    letters = read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))
    assert sorted(letter.offset for letter in letters) == oversized, [
        (x.offset, x.reason, x.detail[:300]) for x in letters
    ]
    for letter in letters:
        assert letter.reason == "payload_too_large", letter
        assert str(MAX_PAYLOAD) in letter.detail, letter.detail
        assert letter.value is not None and 0 < len(letter.value) <= DEFAULT_DLQ_PAYLOAD_CAP, letter.value

    good_docs = iter(docs)
    events = [
        refused_reference_event(0, offset) if offset in oversized else reference_event(next(good_docs), 0, offset)
        for offset in range(len(values))
    ]
    applied = applied_events(events, job.source.allowed_lateness_ms)
    assert len(applied) == len(docs)
    assert any(len(str(e["merchant"])) > MB for e in applied), "the 1 MB merchant ids were applied"
    t_end = max(int(e["e"]) for e in applied)

    assert compare_state(job.state_dir, SHARDS, tmp_path / "sec", applied, [t_end, t_end + 3_600_000], topic=topic)
    spine = [(str(e["entity"]), str(e["merchant"]), int(e["e"]) + d) for e in applied[::5] for d in (0, 60_000)]
    compare_training_set(tmp_path / "stream" / "log", applied, spine, topic=topic)

    check_history_backfill(tmp_path, docs, t_end, spine, topic)

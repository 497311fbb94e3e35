"""Hostile keys, values and records end to end: stream -> online state, the training set
from its log, and a backfill of the same events, each against tests/reference.py.

Good records carry the ids and amounts producers really send by mistake (NUL, empty and
whitespace-only ids, ids that look like numbers, bidi and astral characters, 5,000-character
ids; -0.0, subnormals, integers beyond 2**53), and Kafka headers. Bad records
(tombstones, non-UTF-8 bytes, deep nesting, the compound-key separator in an id, bools and
strings for numbers, times at the epoch, before it and past 2**53) each get one dead
letter with the reason of docs/semantics.md section 5. A repeated JSON key keeps its last
value (section 5). Nothing crashes, nothing is dropped, no value differs.
"""

from __future__ import annotations

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
from tests.backfill.backfill_support import (
    SHARDS,
    START_MS,
    check_history_backfill,
    compare_state,
    compare_training_set,
)
from tests.engine.streaming_support import (
    applied_events,
    make_job,
    reference_event,
    refused_reference_event,
    with_raw_field,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

USERS = ["\x00", "u\x00", "\x00u", "", " ", "u1 ", "1", "1.0", "true", "null", "\u202eu", "💳", "k" * 5000]
MERCHANTS = ["m\x00", "", "0", " m"]
# Per user, amounts span less than gamma**2048 (about 6e17 at alpha 0.01), within which the
# percentile sketch keeps its accuracy bound (docs/semantics.md "Sketch functions"): large
# ones (integers beyond 2**53 included) for some users, subnormal ones for the others.
LARGE_AMOUNTS: list[float | int] = [-0.0, 0.0, 2**53 + 1, 123456789012345678, 1e15, 1.5, -7.25, 3.0]
TINY_AMOUNTS: list[float | int] = [5e-324, -5e-324, 1e-323, 2.5e-308, 1e-310, 0.0, -0.0]


def _good(i: int) -> dict[str, Any]:
    return {
        "transaction_id": f"t{i}",
        "user_id": USERS[i % len(USERS)],
        "merchant_id": MERCHANTS[i % len(MERCHANTS)],
        "card_id": f"c{i % 3}",
        "amount": TINY_AMOUNTS[i % 7] if i % len(USERS) % 2 else LARGE_AMOUNTS[i % 8],
        "currency": "EUR",
        "event_type": "PURCHASE" if i % 5 else "REFUND",
        "ts": START_MS + i * 7_000,
    }


def _bad_records(i: int) -> list[tuple[bytes | None, str, str]]:
    """(value, reason, words of the detail) of every hostile record, built around good doc i."""
    doc = _good(i)
    return [
        (None, "invalid_json", "tombstone"),
        (orjson.dumps(doc)[:-1] + b', "note": "\xff\xfe"}', "invalid_json", "not a JSON document"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json", "not a JSON document"),
        (with_raw_field(doc, "user_id", b'"a\\u001fb"'), "invalid_string", "compound entity key"),
        (with_raw_field(doc, "merchant_id", b'"\\u001f"'), "invalid_string", "compound entity key"),
        (with_raw_field(doc, "amount", b"true"), "wrong_type", "field 'amount': expected float"),
        (with_raw_field(doc, "amount", b'"NaN"'), "wrong_type", "field 'amount': expected float"),
        (with_raw_field(doc, "amount", b"1e400"), "wrong_type", "field 'amount': expected float"),
        (with_raw_field(doc, "ts", b"0"), "timestamp_out_of_range", "outside"),
        (with_raw_field(doc, "ts", b"-1"), "timestamp_out_of_range", "outside"),
        (with_raw_field(doc, "ts", str(2**53 + 1).encode()), "timestamp_out_of_range", "outside"),
        (with_raw_field(doc, "ts", str(START_MS + 0.5).encode()), "invalid_timestamp", "expected an integer"),
        (with_raw_field(doc, "user_id", b"1"), "wrong_type", "field 'user_id': expected string"),
    ]


def _duplicate_keys(i: int) -> tuple[bytes, dict[str, Any]]:
    """A record naming user_id and amount twice, and the document it stands for (last wins)."""
    doc = {**_good(i), "user_id": "dup-last", "amount": 2.5}
    text = orjson.dumps(doc)
    return b'{"user_id": "dup-first", "amount": "not a number", ' + text[1:], doc


def _produce(bootstrap: str, topic: str, values: Sequence[bytes | None]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True})
    for n, value in enumerate(values):
        headers: list[tuple[str, str | bytes | None]] | None = None
        if n % 2:
            headers = [("trace", b"\x00\xff"), ("user_id", b"not-the-user"), ("empty", None)]
        producer.produce(topic, value=value, key=b"\x00" if n % 3 else None, headers=headers)
    assert producer.flush(30) == 0


def test_hostile_records_online_training_and_backfill_agree_with_the_reference(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    values: list[bytes | None] = []
    docs: list[dict[str, Any]] = []  # the document each applied record stands for
    expected_letters: dict[int, tuple[str, str]] = {}
    for i in range(260):
        values.append(orjson.dumps(_good(i)))
        docs.append(_good(i))
        if i % 20 == 7:
            for value, reason, detail in _bad_records(i):
                expected_letters[len(values)] = (reason, detail)
                values.append(value)
        if i % 50 == 11:
            raw, doc = _duplicate_keys(i)
            values.append(raw)
            docs.append(doc)
    _produce(kafka_bootstrap, topic, values)

    job = make_job(tmp_path / "stream", topic, kafka_bootstrap, shards=SHARDS)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    letters = {letter.offset: letter for letter in read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))}
    assert sorted(letters) == sorted(expected_letters), "exactly the bad records are dead letters, once each"
    for offset, (reason, detail) in expected_letters.items():
        assert letters[offset].reason == reason, (offset, values[offset], letters[offset])
        assert detail in letters[offset].detail, (offset, letters[offset].detail)

    # One partition, one idempotent producer: record i is at offset i (tombstones included,
    # which read_topic does not return).
    good_docs = iter(docs)
    events = [
        refused_reference_event(0, offset)
        if offset in expected_letters
        else reference_event(next(good_docs), 0, offset)
        for offset in range(len(values))
    ]
    applied = applied_events(events, job.source.allowed_lateness_ms)
    assert len(applied) == len(docs)
    t_end = max(int(e["e"]) for e in applied)

    # Online: every user, merchant and pair of every example view, now and later.
    assert compare_state(job.state_dir, SHARDS, tmp_path / "sec", applied, [t_end, t_end + 3_600_000], topic=topic)

    # The training set from the log the stream wrote, at times on and around events.
    spine = [(str(e["entity"]), str(e["merchant"]), int(e["e"]) + d) for e in applied[::7] for d in (0, -1, 60_000)]
    compare_training_set(tmp_path / "stream" / "log", applied, spine, topic=topic)

    # A backfill of the same documents from Parquet history (numbers as the float column holds them).
    history_docs = [{**d, "amount": float(d["amount"])} for d in docs]
    check_history_backfill(tmp_path, history_docs, t_end, spine, topic)

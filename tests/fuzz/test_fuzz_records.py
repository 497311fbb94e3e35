"""Hostile Kafka records through the real dataflow (`streamfeat run` as a process).

Random bytes, deep and huge JSON, NaN/Infinity, negative, far-future and non-numeric
timestamps, unicode and enormous strings, interleaved with good records. The run must
exit cleanly, every bad record must be in the DLQ once with a reason from the table of
docs/semantics.md section 5, and the good records' values must equal the reference.
30k records normally, 1M with STREAMFEAT_FAULTS=long.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from engine.clock import wall_clock_ms
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from engine.io.decoder import DEFAULT_DLQ_PAYLOAD_CAP
from tests.engine.streaming_support import copy_repo, read_topic, reference_event, refused_reference_event, streamfeat
from tests.faults.faults_support import long_mode
from tests.faults.pipeline_support import check_against_reference

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_780_000_000_000
REASONS = {
    "payload_too_large",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_timestamp",
    "timestamp_out_of_range",
    "timestamp_in_future",
    "late_event",
}
# What each hostile kind may be refused as (late_event only for good-looking records).
EXPECTED: dict[str, set[str]] = {
    "random_bytes": {"invalid_json", "not_an_object"},
    "deep_array": {"invalid_json", "not_an_object"},
    "deep_object": {"invalid_json", "missing_field"},
    "huge_json": {"payload_too_large"},
    "nan_literal": {"invalid_json", "wrong_type"},
    "inf_number": {"invalid_json", "wrong_type"},
    "negative_ts": {"timestamp_out_of_range", "invalid_timestamp"},
    "future_ts": {"timestamp_in_future"},
    "beyond_2_53_ts": {"timestamp_out_of_range", "invalid_timestamp"},
    "text_ts": {"invalid_timestamp", "wrong_type"},
    "float_ts": {"invalid_timestamp", "wrong_type"},
    "null_field": {"missing_field"},
    "missing_field": {"missing_field"},
    "wrong_type_amount": {"wrong_type"},
    "bad_utf8": {"invalid_json"},
    "enormous_string": {"payload_too_large"},
}


def _good(rng: random.Random, i: int) -> dict[str, Any]:
    user = f"u{rng.randrange(300)}"
    if rng.random() < 0.05:
        user = f"üser-😀-{rng.randrange(20)}-\u202e"  # unicode (and bidi) entity keys are fine
    if rng.random() < 0.002:
        user = "k" * 20_000 + str(rng.randrange(3))  # big but under max_payload_bytes
    return {
        "transaction_id": f"t{i}",
        "user_id": user,
        "merchant_id": f"m{rng.randrange(40)}",
        "card_id": f"c{rng.randrange(1000)}",
        "amount": round(rng.uniform(-50, 500), 2),
        "currency": "EUR",
        "event_type": "PURCHASE" if rng.random() < 0.8 else "REFUND",
        "ts": START_MS + i * 50 + rng.randrange(-2_000, 2_000),
    }


def _hostile(kind: str, rng: random.Random, i: int) -> bytes:
    base = _good(rng, i)
    if kind == "random_bytes":
        return rng.randbytes(rng.randrange(0, 300))
    if kind == "deep_array":
        depth = rng.choice([600, 2_000, 20_000])
        return b"[" * depth + b"]" * depth
    if kind == "deep_object":
        depth = rng.choice([100, 2_000])
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "huge_json":
        return orjson.dumps({**base, "pad": ["x" * 100] * 700})
    if kind == "nan_literal":
        return orjson.dumps(base).replace(b'"amount":', b'"amount":NaN,"_":', 1)
    if kind == "inf_number":
        return orjson.dumps(base).replace(b'"amount":', b'"amount":1e400,"_":', 1)
    if kind == "negative_ts":
        return orjson.dumps({**base, "ts": -rng.randrange(1, 10**15)})
    if kind == "future_ts":
        return orjson.dumps({**base, "ts": wall_clock_ms() + rng.randrange(2, 3_000) * 86_400_000})
    if kind == "beyond_2_53_ts":
        return orjson.dumps({**base, "ts": 2**53 + rng.randrange(1, 10**6)})
    if kind == "text_ts":
        return orjson.dumps({**base, "ts": rng.choice(["yesterday", "", "1780000000000", "NaN"])})
    if kind == "float_ts":
        return orjson.dumps({**base, "ts": base["ts"] + 0.5})
    if kind == "null_field":
        return orjson.dumps({**base, rng.choice(["user_id", "amount", "ts", "event_type"]): None})
    if kind == "missing_field":
        doc = dict(base)
        del doc[rng.choice(["user_id", "merchant_id", "amount", "ts"])]
        return orjson.dumps({**doc, "ключ": 1, "🔑": "x"})
    if kind == "wrong_type_amount":
        return orjson.dumps({**base, "amount": rng.choice(["12", [1], {"v": 1}, True])})
    if kind == "bad_utf8":
        return orjson.dumps(base).replace(b'"EUR"', b'"E\xff\xfeR"')
    if kind == "enormous_string":
        return orjson.dumps({**base, "user_id": "z" * rng.choice([70_000, 500_000])})
    raise AssertionError(kind)


def _produce(bootstrap: str, topic: str, n: int, seed: int) -> tuple[dict[bytes, str], dict[bytes, dict[str, Any]]]:
    rng = random.Random(seed)
    kinds = sorted(EXPECTED)
    kind_of: dict[bytes, str] = {}
    good_of: dict[bytes, dict[str, Any]] = {}
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "message.max.bytes": 2_000_000,
            "enable.idempotence": True,
            "compression.type": "lz4",
        }
    )
    for i in range(n):
        if rng.random() < 0.5:
            doc = _good(rng, i)
            value = orjson.dumps(doc)
            good_of[value] = doc
        else:
            kind = rng.choice(kinds)
            if kind in ("huge_json", "enormous_string") and rng.random() < 0.9:
                kind = "random_bytes"  # keep the topic's size reasonable
            value = _hostile(kind, rng, i)
            kind_of.setdefault(value, kind)
        key = rng.choice([None, b"", rng.randbytes(8), "ключ".encode()])
        while True:
            try:
                producer.produce(topic, value, key, partition=i % 3)
                break
            except BufferError:
                producer.poll(0.5)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return kind_of, good_of


def test_hostile_records_go_to_the_dlq_and_good_ones_are_exact(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    n = 1_000_000 if long_mode() else 30_000
    topic = kafka_topic(partitions=3)
    kind_of, good_of = _produce(kafka_bootstrap, topic, n, seed=97)
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    streamfeat(
        "run",
        "--repo",
        str(repo),
        "--data-dir",
        str(data),
        "--bootstrap",
        kafka_bootstrap,
        "--until-caught-up",
        timeout=3_000,
    )
    records = read_topic(kafka_bootstrap, topic, 3)
    assert len(records) == n
    events: list[dict[str, Any]] = []
    for r in records:
        doc = good_of.get(r.value)
        if doc is None:
            assert r.value in kind_of
            events.append(refused_reference_event(r.partition, r.offset))
        else:
            events.append(reference_event(doc, r.partition, r.offset))
    counts = check_against_reference(repo, data, kafka_bootstrap, topic, events, tmp_path / "secondary")
    by_position = {(r.partition, r.offset): r.value for r in records}
    seen: Counter[tuple[str, str]] = Counter()
    for letter in read_dead_letters(kafka_bootstrap, dlq_topic_for(topic), timeout_s=120):
        value = by_position[(letter.partition, letter.offset)]
        assert letter.reason in REASONS, letter.reason
        kind = kind_of.get(value, "good")
        if kind == "good":
            assert letter.reason == "late_event", (letter.reason, letter.detail)
        else:
            assert letter.reason in EXPECTED[kind], (kind, letter.reason, letter.detail)
            # Dead letters keep the original bytes, cut at the DLQ payload cap (and say so).
            if len(value) > DEFAULT_DLQ_PAYLOAD_CAP:
                assert letter.value == value[:DEFAULT_DLQ_PAYLOAD_CAP] and "truncated" in letter.detail
            else:
                assert letter.value == value
        seen[(kind, letter.reason)] += 1
    print(
        f"fuzz: {n} records, {sum(1 for v in kind_of)} distinct hostile payloads; {counts}; "
        f"by kind/reason {dict(sorted(seen.items()))}"
    )

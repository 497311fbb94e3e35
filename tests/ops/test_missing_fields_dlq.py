"""A record missing several fields goes to the dead-letter topic with a reason naming every
one of them, as a user meets it: `streamfeat run` over a real broker, read back from
`<topic>.dlq`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from engine.clock import wall_clock_ms
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from tests.ops.test_first_hour_cli import project_on_topic, streamfeat_in


@pytest.mark.kafka
def test_a_record_missing_several_fields_is_dead_lettered_naming_each(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    project = project_on_topic(tmp_path, topic, kafka_bootstrap)
    now = wall_clock_ms()
    good = {
        "transaction_id": "t1",
        "user_id": "u1",
        "merchant_id": "m1",
        "card_id": "c1",
        "amount": 12.5,
        "currency": "EUR",
        "event_type": "PURCHASE",
        "ts": now,
    }
    lacking = {k: v for k, v in good.items() if k not in ("user_id", "card_id", "ts")} | {"amount": None}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for record in (good, lacking):
        producer.produce(topic, key=b"u1", value=orjson.dumps(record))
    assert producer.flush(30) == 0

    done = streamfeat_in(project, "run", "--until-caught-up")
    assert done.returncode == 0, done.stderr
    assert "missing_field 1" in done.stdout, done.stdout

    (letter,) = read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))
    assert (letter.offset, letter.reason) == (1, "missing_field")
    assert letter.detail == "fields 'user_id', 'card_id' and 'ts' are absent; field 'amount' is null"

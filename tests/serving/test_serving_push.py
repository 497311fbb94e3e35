"""POST /v1/push/{source} and FeatureClient.push against a real broker: each record checked
by the stream decoder, good ones written to the source's topic, bad ones named."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from benchmarks.common import copy_repo
from engine.clock import wall_clock_ms
from engine.definitions import load_repo
from engine.plan import apply_plan
from engine.state import RocksDBOnlineTable
from serving.client import FeatureClient
from serving.exceptions import InvalidRecords
from tests.engine.streaming_support import read_topic
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import (
    N_SHARDS,
    make_app,
    make_events,
    uvicorn_server,
    write_rocksdb,
)

pytestmark = pytest.mark.kafka


def _event(i: int, **changes: Any) -> dict[str, Any]:
    event = {
        "transaction_id": f"p{i}",
        "user_id": f"u{i}",
        "merchant_id": "m1",
        "card_id": "c1",
        "amount": 10.0 + i,
        "currency": "EUR",
        "event_type": "PURCHASE",
        "ts": wall_clock_ms() - 60_000,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


@pytest.fixture
def pushing(tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> Iterator[tuple[ASGIClient, str]]:
    yield from _pushing(tmp_path, kafka_bootstrap, kafka_topic(partitions=1))


@pytest.fixture
def pushing_to_4(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> Iterator[tuple[ASGIClient, str]]:
    yield from _pushing(tmp_path, kafka_bootstrap, kafka_topic(partitions=4))


def _pushing(tmp_path: Path, kafka_bootstrap: str, topic: str) -> Iterator[tuple[ASGIClient, str]]:
    repo = load_repo(copy_repo(tmp_path, topic))
    _, plan = apply_plan(repo, tmp_path / "plan.json", shards=N_SHARDS, check_transforms=False)
    write_rocksdb(tmp_path / "state", repo.views, make_events(), meta_for=())
    table = RocksDBOnlineTable(tmp_path / "state", N_SHARDS, tmp_path / "secondary", background=False)
    client = ASGIClient(
        make_app(
            repo, plan, table, kafka_bootstrap=kafka_bootstrap, push_sources="transactions", max_entities_per_request=50
        )
    )
    try:
        yield client, topic
    finally:
        client.close()
        table.close()


def test_push_writes_good_records_and_names_each_bad_one(pushing: tuple[ASGIClient, str], kafka_bootstrap: str) -> None:
    client, topic = pushing
    records = [
        _event(0),
        _event(1, amount="ten"),
        _event(2),
        _event(3, ts=None),
        _event(4, ts=wall_clock_ms() + 10 * 86_400_000),
    ]
    answer = client.post("/v1/push/transactions", json={"records": records})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_records" and error["accepted"] == 2 and error["field"] == "records[1]"
    assert [(r["index"], r["reason"]) for r in error["rejected"]] == [
        (1, "wrong_type"),
        (3, "missing_field"),
        (4, "timestamp_in_future"),
    ]
    assert "field 'amount': expected float" in error["rejected"][0]["detail"]
    # The good records of the same request are on the topic, exactly once, as sent.
    written = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topic, 1)]
    assert written == [records[0], records[2]]

    ok = client.post("/v1/push/transactions", json={"records": [_event(5)]})
    assert ok.status_code == 200 and ok.json() == {"source": "transactions", "accepted": 1, "rejected": []}
    assert len(read_topic(kafka_bootstrap, topic, 1)) == 3


def test_pushed_records_are_keyed_by_entity(pushing_to_4: tuple[ASGIClient, str], kafka_bootstrap: str) -> None:
    """A push is keyed like a producer keys its events: by the entity key of the first
    view reading the source (user_spend: user_id), so one user's pushes share a partition
    and keep their order there."""
    client, topic = pushing_to_4
    records = [_event(i, user_id=f"u{i % 5}", transaction_id=f"k{i}") for i in range(40)]
    for start in range(0, len(records), 10):  # several requests: the partition must not depend on the request
        answer = client.post("/v1/push/transactions", json={"records": records[start : start + 10]})
        assert answer.status_code == 200, answer.text
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "push-keys", "log_level": 0})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
        seen: list[tuple[bytes | None, int, str]] = []
        deadline = time.monotonic() + 30
        while len(seen) < len(records) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1.0):
                if msg.error() is None:
                    key, partition, value = msg.key(), msg.partition(), msg.value()
                    assert partition is not None and value is not None
                    seen.append((key, partition, json.loads(value)["transaction_id"]))
    finally:
        consumer.close()
    assert len(seen) == len(records)
    by_id = {r["transaction_id"]: r["user_id"] for r in records}
    assert all(key == by_id[tid].encode() for key, _, tid in seen), seen
    partitions: dict[bytes | None, set[int]] = {}
    for key, partition, _ in seen:
        partitions.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions.values()), partitions
    for user in {r["user_id"] for r in records}:  # in push order within the partition
        assert [tid for key, _, tid in seen if key == user.encode()] == [
            r["transaction_id"] for r in records if r["user_id"] == user
        ]


def test_lateness_is_not_judged_within_a_push(pushing: tuple[ASGIClient, str], kafka_bootstrap: str) -> None:
    """The records of one request are no partition's stream: an event older than another of
    the same request is written (the dataflow judges lateness per partition, docs/serving.md)."""
    client, topic = pushing
    now = wall_clock_ms()
    records = [_event(0, ts=now), _event(1, ts=now + 1_000), _event(2, ts=now - 30 * 60_000)]  # lateness: 5 min
    answer = client.post("/v1/push/transactions", json={"records": records})
    assert answer.status_code == 200, answer.text
    assert [json.loads(r.value) for r in read_topic(kafka_bootstrap, topic, 1)] == records


def test_push_refuses_the_entity_key_separator_in_join_keys(pushing: tuple[ASGIClient, str]) -> None:
    # The stream would dead-letter them (invalid_string): a push must not report them accepted.
    client, _topic = pushing
    records = [_event(0, user_id="u\x1f1"), _event(1, merchant_id="\x1f"), _event(2, currency="E\x1fR")]
    answer = client.post("/v1/push/transactions", json={"records": records})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert [(r["index"], r["reason"]) for r in error["rejected"]] == [(0, "invalid_string"), (1, "invalid_string")]
    assert error["accepted"] == 1 and "compound entity key" in error["rejected"][0]["detail"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/push/transactionz", {"records": [{}]}, 404, "source_not_found"),
        ("/v1/push/transactions", {"records": []}, 422, "invalid_request"),
        ("/v1/push/transactions", {"records": {"a": 1}}, 422, "invalid_request"),
        ("/v1/push/transactions", {"records": [_event(0)] * 60}, 413, "payload_too_large"),
    ],
)
def test_push_refuses_bad_requests(
    pushing: tuple[ASGIClient, str], path: str, body: dict[str, Any], status: int, code: str
) -> None:
    client, _ = pushing
    answer = client.post(path, json=body)
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text


def test_feature_client_push(pushing: tuple[ASGIClient, str], kafka_bootstrap: str) -> None:
    client, topic = pushing
    with uvicorn_server(client.app) as url, FeatureClient(url, timeout=30.0) as fc:
        assert fc.push("transactions", [_event(0), _event(1)])["accepted"] == 2
        with pytest.raises(InvalidRecords) as refused:
            fc.push("transactions", [_event(2, user_id=7), _event(3)])
    assert refused.value.accepted == 1 and refused.value.rejected[0]["index"] == 0
    assert refused.value.field == "records[0]" and "user_id" in str(refused.value)
    assert [json.loads(r.value)["transaction_id"] for r in read_topic(kafka_bootstrap, topic, 1)] == ["p0", "p1", "p3"]


def test_push_is_off_unless_configured(client: ASGIClient) -> None:
    assert client.post("/v1/push/transactions", json={"records": [_event(0)]}).status_code == 404


def test_push_without_a_broker_names_its_address(tmp_path: Path) -> None:
    from engine.ports import free_port
    from serving.exceptions import PushUnavailable
    from serving.push import Pusher

    nowhere = f"127.0.0.1:{free_port()}"
    repo = load_repo(copy_repo(tmp_path, "push-nowhere"))
    pusher = Pusher(repo.sources, nowhere, delivery_timeout_s=1.0)
    with pytest.raises(PushUnavailable) as caught:
        pusher.push("transactions", [_event(1)], max_records=10)
    assert f"no Kafka broker answers at {nowhere}" in str(caught.value)
    assert caught.value.hint is not None and "streamfeat kafka start" in caught.value.hint
    assert caught.value.status_code == 503

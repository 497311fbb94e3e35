"""Soak (issue 14, item 6): a steady stream of mixed good, malformed, future-dated and huge
records for 10 minutes while the dataflow is killed with -9 and restarted, the broker
(a private one) and Redis (the online copy serving reads) are restarted, and stalled HTTP
clients hold connections open. At the end every online value equals the brute-force
reference and the dead-letter topic holds exactly the bad records, once each.

Runs with ``STREAMFEAT_FAULTS=long`` (``make test-faults``); ``STREAMFEAT_FAULTS_SOAK_S`` sets
another duration (for a quick local check). Not part of the normal suite.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine import kafka_local
from engine.clock import wall_clock_ms
from engine.processes import stop_process_group
from tests.engine.streaming_support import copy_repo, read_topic, reference_event, refused_reference_event, streamfeat
from tests.faults.faults_support import long_mode, serve, streamfeat_cmd
from tests.faults.pipeline_support import check_against_reference
from tests.fixtures.redis import RedisServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = 200  # records per second
KINDS: tuple[tuple[str, float], ...] = (
    ("good", 0.86),
    ("near_future", 0.01),
    ("malformed", 0.05),
    ("far_future", 0.04),
    ("huge", 0.04),
)
BAD_KINDS = {"malformed", "far_future", "huge"}


def _record(kind: str, rng: random.Random, i: int, now_ms: int) -> bytes:
    doc: dict[str, Any] = {
        "transaction_id": f"t{i}",
        "user_id": f"u{rng.randrange(200)}",
        "merchant_id": f"m{rng.randrange(20)}",
        "card_id": f"c{rng.randrange(500)}",
        "amount": round(rng.uniform(1, 500), 2),
        "currency": "EUR",
        "event_type": "PURCHASE" if rng.random() < 0.8 else "REFUND",
        "ts": now_ms - rng.randrange(0, 2_000),
    }
    if kind == "near_future":  # inside max_future_skew: applied, cannot move the watermark alone
        doc["ts"] = now_ms + 120_000
    elif kind == "far_future":
        doc["ts"] = now_ms + 20 * 3_600_000
    elif kind == "huge":  # over max_payload_bytes
        doc["pad"] = "x" * 70_000
    elif kind == "malformed":
        return rng.choice([b"{not json", orjson.dumps({**doc, "amount": "12"}), orjson.dumps([doc])])
    return orjson.dumps(doc)


class _SteadyProducer(threading.Thread):
    """Produces RATE records a second until stopped; remembers the kind of every value."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.kind_of: dict[bytes, str] = {}
        self.stop_event = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(2026)
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.max.bytes": 2_000_000,
                "message.timeout.ms": 300_000,
                "log_level": 0,
            }
        )
        kinds = [kind for kind, _ in KINDS]
        weights = [weight for _, weight in KINDS]
        i = 0
        start = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - start) * RATE)
            while i < due:
                kind = rng.choices(kinds, weights)[0]
                value = _record(kind, rng, i, wall_clock_ms())
                self.kind_of[value] = kind
                try:
                    producer.produce(self.topic, value=value, key=str(i % 97).encode(), on_delivery=self._delivered)
                except BufferError:
                    producer.poll(0.5)
                    continue
                i += 1
            producer.poll(0.05)
        if producer.flush(300) != 0:
            self.errors.append("records still queued after 300 s")

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))


def _stall(url: str, n: int) -> list[socket.socket]:
    """Connections that send part of a request and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b'POST /v1/features/fraud_scoring HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{"ent')
        conns.append(s)
    return conns


def _run_dataflow(common: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    with stderr.open("ab") as err:
        return subprocess.Popen(
            streamfeat_cmd("run", *common), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )


def test_soak_mixed_records_with_kills_and_restarts(tmp_path: Path, private_broker: kafka_local.BrokerConfig) -> None:
    seconds = float(os.environ.get("STREAMFEAT_FAULTS_SOAK_S", "600" if long_mode() else "0"))
    if seconds <= 0:
        pytest.skip("the soak runs with STREAMFEAT_FAULTS=long (make test-faults) or STREAMFEAT_FAULTS_SOAK_S")
    bootstrap = private_broker.bootstrap
    topic = "soak"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)
    del admin  # an idle client would log every connection refused while the broker restarts
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "4")
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis", persistent=True)
    redis.start()
    common = [
        "--repo",
        str(repo),
        "--data-dir",
        str(data),
        "--bootstrap",
        bootstrap,
        "--online",
        "redis",
        "--redis-url",
        redis.url,
        "--batch-size",
        "500",
    ]
    stderr = tmp_path / "run.stderr"
    producer = _SteadyProducer(bootstrap, topic)
    producer.start()
    run = _run_dataflow(common, stderr)
    events: Counter[str] = Counter()
    answers: Counter[int] = Counter()
    env = {"STREAMFEAT_ONLINE": "redis", "STREAMFEAT_REDIS_URL": redis.url}
    with serve(data, "--repo", str(repo), env=env) as served:
        stalled = _stall(served.url, 50)
        schedule: list[tuple[float, str, Callable[[], None]]] = []

        def kill() -> None:
            nonlocal run
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
            run = _run_dataflow(common, stderr)

        def broker_restart() -> None:
            kafka_local.stop_broker(config=private_broker)
            time.sleep(3)
            kafka_local.start_broker(config=private_broker)

        def redis_restart() -> None:
            redis.stop()
            time.sleep(3)
            redis.start()

        for share in (0.15, 0.45, 0.75):
            schedule.append((share, "kill -9", kill))
        schedule.append((0.3, "broker restart", broker_restart))
        schedule.append((0.6, "redis restart", redis_restart))
        schedule.sort(key=lambda item: item[0])
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds or schedule:  # every fault happens
                if schedule and time.monotonic() - start >= schedule[0][0] * seconds:
                    _share, name, action = schedule.pop(0)
                    action()
                    events[name] += 1
                if run.poll() is not None:  # a crash (for example Redis gone too long): restart
                    events["dataflow restarted after exit"] += 1
                    run = _run_dataflow(common, stderr)
                try:
                    response = httpx.post(
                        served.url + "/v1/features/fraud_scoring",
                        timeout=10.0,
                        json={
                            "entities": {"user_id": ["u1"], "merchant_id": ["m1"]},
                            "request_data": {"amount": [3.0]},
                        },
                    )
                    answers[response.status_code] += 1
                except httpx.TransportError:
                    answers[0] += 1
                time.sleep(1.0)
        finally:
            producer.stop_event.set()
            producer.join(timeout=400)
            for s in stalled:
                s.close()
    stop_process_group(run, signal.SIGTERM, timeout_s=30, kill_timeout_s=10)
    assert not producer.errors, producer.errors[:3]
    streamfeat("run", *common, "--until-caught-up", timeout=900)
    redis.stop()

    records = read_topic(bootstrap, topic, 3)
    reference: list[dict[str, Any]] = []
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        kind = producer.kind_of[r.value]
        reference.append(
            refused_reference_event(r.partition, r.offset)
            if kind in BAD_KINDS
            else reference_event(orjson.loads(r.value), r.partition, r.offset)
        )
    counts = check_against_reference(repo, data, bootstrap, topic, reference, tmp_path / "secondary")
    kinds = Counter(producer.kind_of[r.value] for r in records)
    assert answers[200] > 0 and set(answers) <= {0, 200, 503}, answers
    assert events["kill -9"] == 3 and events["broker restart"] == 1 and events["redis restart"] == 1, events
    print(f"soak {seconds:.0f} s at {RATE}/s: {dict(kinds)}; faults {dict(events)}; requests {dict(answers)}; {counts}")

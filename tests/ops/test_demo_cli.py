"""`streamfeat demo` never replaces a topic on a broker it did not start, unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from cli import main
from cli.demo_cmd import DEMO_TOPIC
from engine.ports import free_port

pytestmark = pytest.mark.kafka


def test_demo_refuses_to_replace_an_existing_topic_on_a_given_broker(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 0})
    created = DEMO_TOPIC not in admin.list_topics(timeout=10).topics
    if created:
        admin.create_topics([NewTopic(DEMO_TOPIC, 1, 1)], operation_timeout=30)[DEMO_TOPIC].result(timeout=30)
    try:
        code = main(["demo", "--bootstrap", kafka_bootstrap, "--data-dir", str(tmp_path / "demo")])
        err = capsys.readouterr().err
        assert code == 2
        assert f"already has a topic '{DEMO_TOPIC}'" in err and "--reset-topic" in err
        assert DEMO_TOPIC in admin.list_topics(timeout=10).topics  # still there, untouched
    finally:
        if created:
            admin.delete_topics([DEMO_TOPIC], operation_timeout=30)[DEMO_TOPIC].result(timeout=30)


def test_demo_with_a_broker_that_does_not_answer_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    code = main(["demo", "--bootstrap", bootstrap, "--data-dir", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert code != 0
    assert f"no Kafka broker answers at {bootstrap}" in err and "the demo did not start" in err
    assert "%" not in err  # no librdkafka log line

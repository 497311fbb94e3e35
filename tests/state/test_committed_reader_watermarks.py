"""``watermarks``: a partition a host has just created may lack metadata or a leader for a
moment (a clean-clone test run once failed a cluster rescale on NOT_LEADER_FOR_PARTITION);
such answers are asked again until the deadline, any other error is refused at once."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from engine.state import committed_reader
from engine.state.exceptions import ChangelogUnavailable


class _Answers:
    """A consumer's ``get_watermark_offsets`` answering with ``errors`` first, then (3, 9)."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 9


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.state.committed_reader.time.sleep", lambda _s: None)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    ],
)
def test_a_partition_without_metadata_or_leader_yet_is_asked_again(code: int) -> None:
    consumer = _Answers(code, code)
    assert committed_reader.watermarks(consumer, "t.changelog-progress", 0) == (3, 9)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_other_errors_are_refused_at_once_naming_the_partition() -> None:
    consumer = _Answers(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(ChangelogUnavailable, match="topic 't' partition 2: could not read its end offsets"):
        committed_reader.watermarks(consumer, "t", 2)  # type: ignore[arg-type]
    assert consumer.calls == 1


def test_a_transient_error_past_the_deadline_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committed_reader, "TIMEOUT_S", -1.0)
    with pytest.raises(ChangelogUnavailable, match="NOT_LEADER_FOR_PARTITION"):
        committed_reader.watermarks(_Answers(KafkaError.NOT_LEADER_FOR_PARTITION), "t", 0)  # type: ignore[arg-type]

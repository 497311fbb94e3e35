"""Errors raised by the input/output layer (Kafka source, decoder, dead letters)."""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class IoError(StreamfeatError):
    """Base class of every error the input/output layer raises on purpose."""


class IoValueError(IoError, ValueError):
    """An argument has the right type but a value the io layer cannot accept."""


class IoTypeError(IoError, TypeError):
    """An argument has the wrong type."""


class KafkaSourceError(IoError):
    """The Kafka source cannot read its topic (missing topic, fatal broker error)."""


class TopicNotFoundError(KafkaSourceError):
    """The source topic does not exist on the broker."""

    exit_code = 2


class DeadLetterDeliveryError(IoError):
    """Some dead letters were not acknowledged by the broker; the batch must not be applied."""

    def __init__(self, message: str, *, failed: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failed = failed

"""Is a Kafka broker there? A metadata request (after a plain TCP check), and the one
error every command raises when none answers."""

from __future__ import annotations

import socket

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from engine.bootstrap import broker_entries
from engine.exceptions import KafkaUnreachableError
from engine.kafka_clients import quiet_client_settings
from engine.kafka_local.config import HOST


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def metadata_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request."""
    # A plain TCP check first: librdkafka would log every refused connection to stderr.
    entries = broker_entries(bootstrap)
    local_ports = [port for e in entries if (port := e.local_port) is not None]
    if len(local_ports) == len(entries) and not any(map(port_open, local_ports)):
        return False
    admin = AdminClient(quiet_client_settings(bootstrap, {"socket.timeout.ms": 2000}))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


UNREACHABLE_HINT = (
    "start one with `streamfeat kafka start`, or check kafka_bootstrap in streamfeat.yaml "
    "(or --bootstrap / STREAMFEAT_KAFKA_BOOTSTRAP)"
)


def require_broker(bootstrap: str, *, consequence: str = "", timeout_s: float = 5.0) -> None:
    """Raise :class:`KafkaUnreachableError` (one line naming ``bootstrap``, with a hint) when
    no broker answers there; ``consequence`` says what was therefore not done."""
    if not metadata_answers(bootstrap, timeout_s=timeout_s):
        raise KafkaUnreachableError(
            f"no Kafka broker answers at {bootstrap}" + (f"; {consequence}" if consequence else ""),
            hint=UNREACHABLE_HINT,
        )

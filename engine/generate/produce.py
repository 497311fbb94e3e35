"""Producing demo events to Kafka: all of a config's events at full speed, or a live
stream at ``rate`` events per wall-clock second; every record's delivery is checked."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from engine.clock import wall_clock_ms
from engine.exceptions import GenerateError
from engine.generate.events import EventBatch, EventGenerator, GeneratorConfig
from engine.kafka_clients import quiet_client_settings
from engine.kafka_local import require_broker
from engine.wording import counted


@dataclass(frozen=True)
class ProduceReport:
    topic: str
    events: int
    malformed: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


DEFAULT_PRODUCER_CONFIG: Mapping[str, object] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "acks": "all",
    # Retries must not duplicate records: the round-trip tests count every one.
    "enable.idempotence": True,
    # Same key -> partition mapping as the Java client.
    "partitioner": "murmur2_random",
    # Only failures reach Python (one callback per success would cost a third of
    # the throughput); flush() returning 0 proves every report was served.
    "delivery.report.only.error": True,
    # A broker that dies mid-run turns into delivery errors after this, not a hang.
    "message.timeout.ms": 30_000,
}


class _DeliveryFailures:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.count += 1
            if self.first is None:
                self.first = f"{error} (partition {message.partition()})"


def produce_events(
    config: GeneratorConfig,
    topic: str,
    bootstrap: str,
    *,
    producer_config: Mapping[str, object] | None = None,
    flush_timeout_s: float = 60.0,
) -> ProduceReport:
    """Generate ``config``'s events and produce them to ``topic`` keyed by user_id.

    Raises :class:`GenerateError` naming the count if any record was not delivered.
    """
    producer, failures = _producer(topic, bootstrap, producer_config)
    started = time.perf_counter()
    malformed = sum(_produce_batch(producer, topic, batch) for batch in EventGenerator(config))
    _flush(producer, failures, topic, bootstrap, config.events, flush_timeout_s)
    seconds = time.perf_counter() - started
    return ProduceReport(topic=topic, events=config.events, malformed=malformed, seconds=seconds)


def produce_live(
    config: GeneratorConfig,
    topic: str,
    bootstrap: str,
    *,
    duration_s: float | None = None,
    progress: Callable[[ProduceReport], None] | None = None,
) -> ProduceReport:
    """Produce ``config.rate`` events per wall-clock second, stamped with the current time.

    Runs for ``duration_s`` seconds (``None``: until interrupted, Ctrl-C ends it cleanly
    after delivering what was produced). Second ``k`` draws its events from seed
    ``config.seed + k``; ``config.events`` is ignored. ``progress`` gets the running
    totals about every ten seconds.
    """
    if config.rate < 1:
        raise GenerateError(f"--rate: live mode needs at least 1 event/s, got {config.rate}")
    producer, failures = _producer(topic, bootstrap, None)
    per_second = round(config.rate)
    started = time.perf_counter()
    produced = malformed = 0
    second = 0
    try:
        while duration_s is None or second < duration_s:
            tick_ms = wall_clock_ms()
            live = dataclasses.replace(
                config,
                events=per_second,
                seed=config.seed + second,
                start_ms=tick_ms,
                rate=float(per_second),
            )
            malformed += sum(_produce_batch(producer, topic, batch) for batch in EventGenerator(live))
            produced += per_second
            second += 1
            if progress is not None and second % 10 == 0:
                progress(ProduceReport(topic, produced, malformed, time.perf_counter() - started))
            time.sleep(max(0.0, 1.0 - (wall_clock_ms() - tick_ms) / 1000))
    except KeyboardInterrupt:
        pass  # a normal way to stop live mode: deliver what was produced, then report
    _flush(producer, failures, topic, bootstrap, produced, 60.0)
    return ProduceReport(topic, produced, malformed, time.perf_counter() - started)


def _producer(
    topic: str, bootstrap: str, producer_config: Mapping[str, object] | None
) -> tuple[Producer, _DeliveryFailures]:
    require_broker(bootstrap, consequence=f"nothing was produced to {topic!r}")
    failures = _DeliveryFailures()
    # Failures are reported through the delivery callback and the error below.
    settings = quiet_client_settings(
        bootstrap, {**DEFAULT_PRODUCER_CONFIG, **(producer_config or {}), "on_delivery": failures}
    )
    return Producer(settings), failures


def _produce_batch(producer: Producer, topic: str, batch: EventBatch) -> int:
    """Queue one batch; returns how many of its records are malformed."""
    produce = producer.produce
    for key, value in zip(batch.keys, batch.values, strict=True):
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let librdkafka drain it
    producer.poll(0)
    return int(np.count_nonzero(batch.malformed >= 0))


def _flush(
    producer: Producer,
    failures: _DeliveryFailures,
    topic: str,
    bootstrap: str,
    events: int,
    flush_timeout_s: float,
) -> None:
    remaining = producer.flush(flush_timeout_s)
    if remaining or failures.count:
        raise GenerateError(
            f"{failures.count + remaining} of {counted(events, 'record')} to topic {topic!r} at "
            f"{bootstrap} were not delivered ({failures.count} failed, {remaining} still queued "
            f"after {flush_timeout_s:.0f} s); first error: {failures.first}",
            hint="check that the broker is running (`streamfeat kafka status`) and the topic exists",
        )

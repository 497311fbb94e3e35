"""Dead-letter topic: produce refused records before their batch is applied, and read them back.

``DeadLetterProducer.send`` returns only once the broker acknowledged every letter, so a batch
is applied only after its dead letters are safe. After a restart, records that are read again
would be refused again: :func:`sent_dead_letters` tells which of them already have their letter
in the topic (every offset up to the highest one a shard applied, plus those found in the
topic's tail), and the dataflow sends only the others, so each bad record has one letter.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from engine.io.batches import DeadLetter, dlq_topic_for
from engine.io.exceptions import DeadLetterDeliveryError, KafkaSourceError, TopicNotFoundError
from engine.io.kafka_source import list_topic_partitions
from engine.kafka_clients import logged_client_settings, quiet_client_settings

#: A Kafka message's headers as confluent-kafka gives them (pairs, or a dict when producing).
HeaderValues = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]

HEADER_REASON = "reason"
HEADER_DETAIL = "detail"
HEADER_SOURCE_TOPIC = "source_topic"
HEADER_SOURCE_PARTITION = "source_partition"
HEADER_SOURCE_OFFSET = "source_offset"


log = logging.getLogger(__name__)

#: How many dead letters a restart reads back at most to find those already sent.
DEFAULT_LEDGER_SCAN_LIMIT = 500_000


@dataclass(frozen=True)
class SentDeadLetters:
    """Source records whose dead letter is already in the topic.

    ``through[p]``: every refused record of partition ``p`` at or below this offset has its
    letter (a shard applied the batch, and batches are applied only after their letters are
    acknowledged); ``above``: ``(partition, offset)`` of letters found beyond ``through``.
    """

    through: Mapping[int, int]
    above: frozenset[tuple[int, int]] = frozenset()

    def contains(self, partition: int, offset: int) -> bool:
        return offset <= self.through.get(partition, -1) or (partition, offset) in self.above


def sent_dead_letters(
    bootstrap: str,
    dlq_topic: str,
    through: Mapping[int, int],
    *,
    limit: int = DEFAULT_LEDGER_SCAN_LIMIT,
    timeout_s: float = 30.0,
) -> SentDeadLetters:
    """What a restart must not send again: ``through`` (highest applied offset per source
    partition) plus every letter above it, read back from the end of ``dlq_topic``.

    Letters of one source partition reach each dead-letter partition in offset order, so
    reading backwards stops for a source partition at its first letter at or below
    ``through``. At most ``limit`` letters are read; beyond that a warning says that some
    letters may be sent twice.
    """
    try:
        partitions = list_topic_partitions(bootstrap, dlq_topic, timeout_s)
    except TopicNotFoundError:
        return SentDeadLetters(dict(through))  # no topic yet: no letter was ever sent
    consumer = Consumer(
        quiet_client_settings(
            bootstrap,
            {
                "group.id": f"streamfeat-dlq-ledger-{dlq_topic}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    above: set[tuple[int, int]] = set()
    budget = limit
    try:
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(dlq_topic, partition), timeout=timeout_s, cached=False
            )
            done: set[int] = set()
            end = high
            while end > low and budget > 0:
                start = max(low, end - min(5_000, budget))
                chunk = _read_range(consumer, dlq_topic, partition, start, end, timeout_s)
                budget -= end - start
                for source_partition, offset in chunk:
                    if offset > through.get(source_partition, -1):
                        above.add((source_partition, offset))
                    else:
                        done.add(source_partition)
                if through and done >= set(through):
                    break
                end = start
            if end > low and budget <= 0:
                log.warning(
                    "dead-letter topic '%s': read back %d letters without reaching every source "
                    "partition's applied offset; letters of records replayed now may repeat",
                    dlq_topic,
                    limit,
                )
    finally:
        consumer.close()
    return SentDeadLetters(dict(through), frozenset(above))


def _read_range(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout_s: float
) -> list[tuple[int, int]]:
    """``(source partition, source offset)`` of the letters at ``[start, end)`` of one partition."""
    consumer.assign([TopicPartition(topic, partition, start)])
    out: list[tuple[int, int]] = []
    position = start
    idle = 0.0
    while position < end:
        messages = consumer.consume(num_messages=5_000, timeout=0.5)
        if not messages:
            idle += 0.5
            if idle > timeout_s:
                raise KafkaSourceError(
                    f"dead-letter topic '{topic}' partition {partition}: read stalled at {position} before {end}",
                    hint="is the broker running?",
                )
            continue
        for m in messages:
            if m.error() is not None:
                continue
            position = (m.offset() or 0) + 1
            if position > end:
                break
            h = _header_map(m.headers())
            out.append((int(h.get(HEADER_SOURCE_PARTITION, "-1")), int(h.get(HEADER_SOURCE_OFFSET, "-1"))))
    return out


class DeadLetterProducer:
    """Produces the dead letters of one source topic to ``<topic>.dlq`` with delivery reports."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        flush_timeout_s: float = 30.0,
        producer_config: Mapping[str, object] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.dlq_topic = dlq_topic_for(topic)
        self.flush_timeout_s = flush_timeout_s
        #: Dead letters acknowledged by the broker, per reason, since this producer started.
        self.counts: Counter[str] = Counter()
        config = logged_client_settings(
            bootstrap,
            {
                "client.id": f"streamfeat-dlq-{topic}",
                # Idempotence keeps broker-side retries from duplicating or reordering letters.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                **(producer_config or {}),
            },
        )
        self._producer = Producer(config)

    def send(self, letters: Iterable[DeadLetter]) -> int:
        """Produce every letter and wait for the broker; returns how many were sent.

        Raises ``DeadLetterDeliveryError`` (naming how many failed) when the broker reports
        any letter as failed (librdkafka gives up after its ``message.timeout.ms``): the
        caller must then not apply the batch. A slow or restarting broker is waited for.
        """
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        sent: Counter[str] = Counter()
        for letter in letters:
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_REASON, str(letter.reason).encode()),
                (HEADER_DETAIL, letter.detail.encode("utf-8", "backslashreplace")),
                (HEADER_SOURCE_TOPIC, letter.topic.encode()),
                (HEADER_SOURCE_PARTITION, str(letter.partition).encode()),
                (HEADER_SOURCE_OFFSET, str(letter.offset).encode()),
            ]
            while True:
                try:
                    self._producer.produce(
                        self.dlq_topic,
                        key=letter.key,
                        value=letter.value,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, then retry.
                    self._producer.poll(0.1)
            sent[str(letter.reason)] += 1
        total = sum(sent.values())
        if total == 0:
            return 0
        remaining = self._producer.flush(self.flush_timeout_s)
        # A broker that is restarting is waited for, not given up on: librdkafka keeps
        # retrying each letter until its message.timeout.ms (5 min by default) and then
        # reports a delivery failure, which ends the wait.
        while remaining and not failures:
            log.warning(
                "dead-letter topic '%s': %d letters not acknowledged yet after %.0fs; waiting for the broker",
                self.dlq_topic,
                remaining,
                self.flush_timeout_s,
            )
            remaining = self._producer.flush(self.flush_timeout_s)
        failed = len(failures) + remaining
        if failed:
            first = f"; first error: {failures[0].name()} ({failures[0].str()})" if failures else ""
            raise DeadLetterDeliveryError(
                f"dead-letter topic '{self.dlq_topic}' on {self.bootstrap}: {failed} of {total} "
                f"dead letters were not acknowledged ({remaining} still queued after "
                f"{self.flush_timeout_s}s){first}",
                failed=failed,
                hint="the batch was not applied and is read again on restart; check that the "
                "broker is up and the topic exists.",
            )
        self.counts.update(sent)
        return total

    def close(self) -> None:
        """Deliver anything still queued (best effort) and release the producer."""
        self._producer.flush(self.flush_timeout_s)


def _header_map(headers: HeaderValues | None) -> dict[str, str]:
    out: dict[str, str] = {}
    # A consumed message's headers are a list of pairs; a dict is what a producer may be given.
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    for k, v in pairs:
        out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")
    return out


def read_dead_letters(bootstrap: str, dlq_topic: str, *, timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every dead letter now in ``dlq_topic``, deduplicated by source (partition, offset).

    Reads each partition from the beginning up to its end when called; sorted by source
    partition and offset. For tests and the CLI, not for the hot path.
    """
    partitions = list_topic_partitions(bootstrap, dlq_topic, timeout_s)
    consumer = Consumer(
        quiet_client_settings(
            bootstrap,
            {
                "group.id": f"streamfeat-dlq-reader-{dlq_topic}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), timeout=timeout_s, cached=False)
            if high > 0:
                ends[p] = high
        consumer.assign([TopicPartition(dlq_topic, p, OFFSET_BEGINNING) for p in ends])
        letters: dict[tuple[int, int], DeadLetter] = {}
        position = dict.fromkeys(ends, 0)
        deadline_budget = timeout_s
        while any(position[p] < ends[p] for p in ends):
            messages = consumer.consume(num_messages=10_000, timeout=0.5)
            if not messages:
                deadline_budget -= 0.5
                if deadline_budget <= 0:
                    raise KafkaSourceError(
                        f"dead-letter topic '{dlq_topic}': read stalled before the end "
                        f"(positions {position}, ends {ends})",
                        hint="is the broker running?",
                    )
                continue
            for m in messages:
                err = m.error()
                p, offset = m.partition() or 0, m.offset() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position[p] = max(position[p], offset)
                    continue
                position[p] = offset + 1
                h = _header_map(m.headers())
                letter = DeadLetter(
                    topic=h.get(HEADER_SOURCE_TOPIC, ""),
                    partition=int(h.get(HEADER_SOURCE_PARTITION, "0")),
                    offset=int(h.get(HEADER_SOURCE_OFFSET, "0")),
                    key=m.key(),
                    value=m.value(),
                    reason=h.get(HEADER_REASON, ""),
                    detail=h.get(HEADER_DETAIL, ""),
                )
                letters.setdefault((letter.partition, letter.offset), letter)
        return [letters[k] for k in sorted(letters)]
    finally:
        consumer.close()


def dlq_record_count(bootstrap: str, dlq_topic: str) -> int | None:
    """Records in a dead-letter topic (end minus start offsets): one per distinct bad
    record (docs/semantics.md section 6); 0 when the topic was never created."""
    try:
        partitions = list_topic_partitions(bootstrap, dlq_topic, 5.0)
    except TopicNotFoundError:
        return 0  # no dead letter was ever produced
    consumer = Consumer(quiet_client_settings(bootstrap, {"group.id": "streamfeat-status"}))
    try:
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), 5.0, cached=False)
            total += int(high) - int(low)
        return total
    finally:
        consumer.close()

"""``POST /v1/push/{source}``: events from services that are not on Kafka, onto the source's topic.

Every record is checked by the stream decoder itself (``engine.io.decoder.Decoder``:
payload size, JSON object, schema types, timestamp parse, range and future bound),
so a pushed event is accepted exactly when the dataflow would accept it, except for
lateness: that depends on the partition's watermark, which only the dataflow knows, so
a late pushed event reaches the source's dead-letter topic like any other. Good records
are produced to the topic (and flow through the same kernel); refused ones are named
one by one, and good records of the same request are never dropped because of them.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer
from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.array_types import AnyArray
from engine.definitions import EventSource, FeatureRepo, StreamFeatureView
from engine.definitions.base import did_you_mean
from engine.entity_codes import keyed_decoder
from engine.generate import DEFAULT_PRODUCER_CONFIG
from engine.io.batches import RawBatch
from engine.json_types import json_kind
from engine.kafka_clients import logged_client_settings
from engine.kafka_local import UNREACHABLE_HINT, metadata_answers
from engine.state.keys import entity_key
from engine.wording import counted
from serving.deps import Labels, ServingState, get_state, json_response, observed, read_body
from serving.exceptions import (
    InvalidRecords,
    InvalidRequest,
    PayloadTooLarge,
    PushUnavailable,
    ServingSetupError,
    SourceNotFound,
    short_repr,
)
from serving.request import check_keys, parse_json

PUSH_ROUTE = "/v1/push/{source}"
PUSH_FIELDS = ("records",)
PUSH_EXAMPLE = '{"records": [{...}, ...]}'
log = logging.getLogger("streamfeat.serving.push")


def pushable_sources(repo: FeatureRepo, setting: str) -> list[EventSource]:
    """The sources named by the ``push_sources`` setting ("a,b" or "*"); none: push is off.

    Opt-in because a push writes to a topic: a server that only reads never offers it.
    """
    names = [n.strip() for n in setting.split(",") if n.strip()]
    if names == ["*"]:
        return list(repo.sources)
    known = {s.name: s for s in repo.sources}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ServingSetupError(
            f"setting 'push_sources': {unknown} are not event sources of the repo",
            hint=did_you_mean(unknown[0], known, "sources") + ", or '*' for all",
        )
    return [known[n] for n in names]


@dataclass(frozen=True)
class PushResult:
    source: str
    accepted: int
    rejected: tuple[dict[str, Any], ...]  # {"index", "reason", "detail"} per refused record


def push_key_fields(source: EventSource, views: Sequence[StreamFeatureView]) -> tuple[str, ...]:
    """The fields a pushed record of ``source`` is keyed by: the join keys most of its
    views read (ties: those of the view first by name); none when no view reads it."""
    readers = sorted((v for v in views if v.source.name == source.name), key=lambda v: v.name)
    counts: Counter[tuple[str, ...]] = Counter()
    for view in readers:  # insertion order: by view name, so max() breaks ties by it
        counts[tuple(view.join_keys)] += 1
    return max(counts, key=counts.__getitem__) if counts else ()


class Pusher:
    """Validates pushed records with the source's decoder and produces the good ones.

    The Kafka producer is created at the first push (a server nobody pushes to never
    connects to Kafka); its librdkafka logs go to Python logging, not to the terminal.
    """

    def __init__(
        self,
        sources: Sequence[EventSource],
        bootstrap: str,
        *,
        delivery_timeout_s: float = 10.0,
        views: Sequence[StreamFeatureView] = (),
    ) -> None:
        self.sources = {s.name: s for s in sources}
        # The stream's own decoder (join keys included), so a push is refused exactly when
        # the record would be a dead letter on the topic.
        self._decoders = {s.name: keyed_decoder(s, (v for v in views if v.source.name == s.name)) for s in sources}
        # Records are keyed like a producer keys them, by entity, so one entity's pushes
        # share a partition: their order and the partition's watermark are one stream's.
        self._key_fields = {s.name: push_key_fields(s, views) for s in sources}
        self._bootstrap = bootstrap
        self._timeout_s = delivery_timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    logged_client_settings(
                        self._bootstrap,
                        {**DEFAULT_PRODUCER_CONFIG, "linger.ms": 1, "message.timeout.ms": int(self._timeout_s * 1000)},
                    )
                )
            return self._producer

    def push(self, source_name: str, records: object, max_records: int) -> PushResult:
        source = self.sources.get(source_name)
        if source is None:
            raise SourceNotFound(
                f"event source {short_repr(source_name)} is not defined",
                hint=did_you_mean(source_name, self.sources, "sources"),
                field="source",
            )
        if not isinstance(records, list) or not records:
            got = "an empty list" if records == [] else json_kind(records)
            raise InvalidRequest(
                f"field 'records': expected a non-empty list of event objects, got {got}",
                hint='send {"records": [{...}, ...]}',
                field="records",
            )
        if len(records) > max_records:
            raise PayloadTooLarge(
                f"field 'records': {counted(len(records), 'record')}, at most {max_records} per request",
                hint="split the request",
                field="records",
            )
        values: list[bytes | None] = [orjson.dumps(r) for r in records]
        raw = RawBatch(
            topic=source.topic,
            partition=0,
            offsets=np.arange(len(values), dtype=np.int64),
            keys=[None] * len(values),
            values=values,
        )
        # No watermark: lateness is judged by the dataflow, per partition (module docstring).
        decoded = self._decoders[source.name].decode(raw, None)
        rejected = [{"index": d.offset, "reason": str(d.reason), "detail": d.detail} for d in decoded.dead_letters]
        good = [values[i] for i in decoded.offsets.tolist()]
        if good:
            self._produce(source, good, self._keys(source, decoded.columns, len(good)))
        return PushResult(source.name, len(good), tuple(sorted(rejected, key=lambda r: r["index"])))

    def _keys(self, source: EventSource, columns: Mapping[str, AnyArray], n: int) -> list[bytes | None]:
        """Each good record's Kafka key: its entity key (``engine.state.keys``), or none
        when no view reads the source."""
        fields = self._key_fields[source.name]
        if not fields:
            return [None] * n
        parts = [columns[f].tolist() for f in fields]
        return [entity_key([part[i] for part in parts]) for i in range(n)]

    def _produce(self, source: EventSource, values: list[bytes | None], keys: list[bytes | None]) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(str(error))

        producer = self._get_producer()
        for value, key in zip(values, keys, strict=True):
            producer.produce(source.topic, value, key, on_delivery=delivered)
        remaining = producer.flush(self._timeout_s)
        if (remaining or failures) and not metadata_answers(self._bootstrap):
            raise PushUnavailable(
                f"source {source.name!r}: no Kafka broker answers at {self._bootstrap}; "
                f"{len(failures) + remaining} of {len(values)} valid records were not written to "
                f"topic {source.topic!r}",
                hint=f"{UNREACHABLE_HINT}; then retry the request",
            )
        if remaining or failures:
            raise PushUnavailable(
                f"source {source.name!r}: {len(failures) + remaining} of {len(values)} valid records were not "
                f"written to topic {source.topic!r} within {self._timeout_s:g} s"
                + (f" (first error: {failures[0]})" if failures else ""),
                hint="check the Kafka broker (`streamfeat kafka status`); retrying the request may write the "
                "records that did arrive a second time",
            )

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self._timeout_s)
                self._producer = None


def build_router(pusher: Pusher) -> APIRouter:
    router = APIRouter()
    names = sorted(pusher.sources)

    @router.post(
        PUSH_ROUTE,
        summary="Validate events against the source schema and write them to its topic",
        response_class=Response,
    )
    async def push(
        request: Request,
        source: str = Path(description="event source name", json_schema_extra={"enum": names}),
    ) -> Response:
        async def handle(state: ServingState, labels: Labels) -> Response:
            body = parse_json(await read_body(request, state.max_request_bytes), PUSH_EXAMPLE)
            check_keys(body, PUSH_FIELDS)
            result = await run_in_threadpool(pusher.push, source, body.get("records"), state.max_entities_per_request)
            if result.rejected:
                raise InvalidRecords(result.source, result.accepted, list(result.rejected))
            return json_response({"source": result.source, "accepted": result.accepted, "rejected": []})

        return await observed(get_state(request), PUSH_ROUTE, handle)

    return router

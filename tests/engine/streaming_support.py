"""Shared set-up for streaming tests: a job over the example repo on a test topic,
and the brute-force expectation of what it must compute."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.common import copy_repo as copy_repo  # one copy for tests and benchmarks
from dataflows.stream import StreamJob
from engine.definitions import StreamFeatureView, load_repo
from engine.generate import EventBatch
from engine.io.batches import DecodedBatch
from engine.kernel import ViewSpec, decode_tiles, evaluate
from engine.kernel.codec import decode_sketches, has_cold, join_parts
from engine.state.keys import entity_key
from engine.state.protocols import OnlineTable
from engine.state.records import tile_key
from tests.reference import (
    apply_watermark,
    exact_rank_value,
    hyperloglog_estimate,
    reference_value,
    window_events,
)

REPO = Path(__file__).resolve().parents[2] / "feature_defs"


def example_views(topic: str) -> tuple[Any, tuple[StreamFeatureView, ...]]:
    """The example repo's transaction views, re-pointed at ``topic``."""
    repo = load_repo(REPO)
    source = dataclasses.replace(repo.source("transactions"), topic=topic)
    views = tuple(dataclasses.replace(v, source=source) for v in repo.views_for_source("transactions"))
    return source, views


def make_job(tmp_path: Path, topic: str, bootstrap: str, *, shards: int = 4, **kw: Any) -> StreamJob:
    source, views = example_views(topic)
    fields = {
        "source": source,
        "views": views,
        "bootstrap": bootstrap,
        "state_dir": tmp_path / "state",
        "shards": shards,
        "log_root": str(tmp_path / "log"),
        "tail": False,
        "batch_size": 2000,
    }
    fields.update(kw)
    return StreamJob(**fields)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    value: bytes


def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Record]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "log_level": 0,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Record] = []
        done: set[int] = set()
        while len(done) < partitions:
            for msg in consumer.consume(10_000, timeout=1.0):
                error, partition, offset, value = msg.error(), msg.partition(), msg.offset(), msg.value()
                assert partition is not None and offset is not None
                if error is not None:
                    if error.code() == -191:  # partition EOF
                        done.add(partition)
                        continue
                    raise RuntimeError(error)
                assert value is not None, f"a record without a value at {partition}:{offset}"
                out.append(Record(partition, offset, value))
        return out
    finally:
        consumer.close()


def reference_events(records: Iterable[Record], generated: EventBatch | None = None) -> list[dict[str, Any]]:
    """Events for tests/reference.py: valid iff the generator did not break the record."""
    malformed: set[bytes] = set()
    if generated is not None:
        malformed = {v for v, m in zip(generated.values, generated.malformed.tolist(), strict=True) if m >= 0}
    return [
        refused_reference_event(r.partition, r.offset)
        if r.value in malformed
        else reference_event(orjson.loads(r.value), r.partition, r.offset)
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    ]


def example_transaction(i: int, ts: int, *, user: str, merchant: str, card: str, amount: float) -> dict[str, Any]:
    """Record ``i`` of the example's transactions source: a purchase in EUR at ``ts``."""
    return {
        "transaction_id": f"t{i}",
        "user_id": user,
        "merchant_id": merchant,
        "card_id": card,
        "amount": amount,
        "currency": "EUR",
        "event_type": "PURCHASE",
        "ts": ts,
    }


def with_raw_field(doc: Mapping[str, Any], field: str, literal: bytes) -> bytes:
    """``doc`` as JSON with ``field``'s value replaced by the raw JSON ``literal``."""
    marker = "__raw_value__"
    return orjson.dumps({**doc, field: marker}).replace(f'"{marker}"'.encode(), literal)


def reference_event(doc: Mapping[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """A valid example transaction as tests/reference.py reads it, with the entity key of each
    example view (EXAMPLE_VIEW_KEYS)."""
    return {
        "entity": doc["user_id"],
        "merchant": doc["merchant_id"],
        "pair": (doc["user_id"], doc["merchant_id"]),
        "e": doc["ts"],
        "partition": partition,
        "offset": offset,
        "value": float(doc["amount"]),
        "merchant_id": doc["merchant_id"],  # the raw columns the distinct counts read
        "card_id": doc["card_id"],
        "event_type": doc["event_type"],
        "valid": True,
    }


def refused_reference_event(partition: int, offset: int) -> dict[str, Any]:
    """A record the decoder must refuse (dead-letter), as tests/reference.py reads it."""
    return {
        "entity": None,
        "e": 0,
        "partition": partition,
        "offset": offset,
        "value": 0.0,
        "valid": False,
    }


def transactions_batch(
    event_ts: npt.NDArray[np.int64],
    users: Sequence[str],
    *,
    first_offset: int = 0,
    merchant: str = "m1",
    amounts: npt.NDArray[np.float64] | None = None,
    cards: Sequence[str] | None = None,
) -> DecodedBatch:
    """A decoded batch of example PURCHASE transactions on partition 0 of ``transactions``:
    one per user, at ``event_ts``, offsets from ``first_offset``, amounts 1, 2, ... and
    card ``c1`` unless given."""
    n = len(users)
    offsets = np.arange(first_offset, first_offset + n, dtype=np.int64)
    return DecodedBatch(
        topic="transactions",
        partition=0,
        first_offset=first_offset,
        last_offset=int(offsets[-1]),
        top_ts_after=(int(event_ts.max()),),
        offsets=offsets,
        event_ts=event_ts,
        columns={
            "user_id": np.array(users, dtype=object),
            "merchant_id": np.array([merchant] * n, dtype=object),
            "card_id": np.array(["c1"] * n if cards is None else cards, dtype=object),
            "amount": np.arange(n, dtype=np.float64) + 1.0 if amounts is None else amounts,
            "event_type": np.array(["PURCHASE"] * n, dtype=object),
        },
        dead_letters=(),
    )


def applied_events(events: Sequence[dict[str, Any]], lateness_ms: int) -> list[dict[str, Any]]:
    return apply_watermark(events, lateness_ms)


def is_purchase(event: Any) -> bool:
    return bool(event["event_type"] == "PURCHASE")


@dataclass(frozen=True)
class Approx:
    """The reference value of an approximate function and the documented bound its
    answer lies within (docs/semantics.md "Sketch functions")."""

    value: float
    tolerance: float


# The reference event field holding each source column an example aggregation reads.
_COLUMN_FIELDS = {"amount": "value", "merchant_id": "merchant_id", "card_id": "card_id"}


def expected_values(
    view: StreamFeatureView,
    applied: Sequence[dict[str, Any]],
    entity: str | int | tuple[str, ...],
    t: int,
    key_field: str = "entity",
    filter: Callable[[Any], bool] | None = is_purchase,
    column_fields: Mapping[str, str] = _COLUMN_FIELDS,
) -> dict[str, Any]:
    """Reference values of every aggregation of ``view`` (the example views' filter is
    ``is_purchase``; pass ``filter=None`` for events already filtered). ``column_fields``
    names the reference event field holding each column (default: the example's)."""
    events = [e if key_field == "entity" else {**e, "entity": e[key_field]} for e in applied if e[key_field] == entity]
    expected: dict[str, Any] = {}
    for agg in view.aggregations:
        function = str(getattr(agg.function, "value", agg.function))
        params = dict(agg.params)
        # Fields named in column_fields; another view's columns are event fields of their own name.
        mine = [{**e, "value": e[column_fields.get(agg.column, agg.column)]} for e in events]
        if function in ("count_distinct_approx", "percentile", "median"):
            window = window_events(mine, entity, t, agg.window_ms, view.interval_ms, filter=filter)
            expected[agg.output_name] = _approximate_reference(function, params, window)
            continue
        expected[agg.output_name] = reference_value(
            mine,
            entity,
            t,
            function,
            agg.window_ms,
            view.interval_ms,
            agg.default,
            filter=filter,
            max_distinct=None if "max_distinct" not in params else int(params["max_distinct"]),
            n=None if "n" not in params else int(params["n"]),
            int_column=view.source.field_types[agg.column] == "int",
        )
    return expected


def _approximate_reference(
    function: str, params: dict[str, int | float], chosen: Sequence[dict[str, Any]]
) -> Approx | int | None:
    """The reference of a sketch over the window's events ``chosen``. HyperLogLog:
    exactly the estimate of the registers of W's values, built from the definition (its
    accuracy against the true count and the datasketches library is tested in
    tests/kernel/test_kernel_sketch_accuracy.py). DDSketch: the exact rank value, which
    the answer lies within the relative accuracy alpha of."""
    if function == "count_distinct_approx":
        return hyperloglog_estimate([e["value"] for e in chosen], int(params["precision"]))
    value = exact_rank_value([float(e["value"]) for e in chosen], 0.5 if function == "median" else float(params["q"]))
    return None if value is None else Approx(value, float(params["alpha"]) * abs(value) * (1 + 1e-12))


# The example views and the reference event field holding each one's entity key
# (a tuple of join-key values for the user x merchant view).
EXAMPLE_VIEW_KEYS = (
    ("user_spend", "entity"),
    ("merchant_activity", "merchant"),
    ("user_merchant_spend", "pair"),
    ("user_lifetime", "entity"),
    ("user_amount_profile", "entity"),
)


def online_values(
    table: OnlineTable, view: StreamFeatureView, entity: str | int | tuple[str, ...], t: int
) -> dict[str, Any] | None:
    key_values = list(entity) if isinstance(entity, tuple) else [entity]
    record = table.read(view.fingerprint, [entity_key(key_values)])[0]
    if record is not None and has_cold(record):  # read again with its cold part, as serving does
        hot, cold = table.read_parts(view.fingerprint, [entity_key(key_values)])[0]
        assert hot is not None and cold is not None
        record = join_parts(cold, hot)
    if record is None:
        return None
    tiles, partials, _ = decode_tiles(record)
    spec = ViewSpec.from_view(view)
    sketches = decode_sketches(record, len(spec.layout.sketch_slots))
    return dict(evaluate(spec, tiles, partials, t, sketches).values)


def check_online_values(
    table: OnlineTable, views: dict[str, StreamFeatureView], applied: Sequence[dict[str, Any]]
) -> int:
    """Assert every entity's values of the example views as of the last applied event
    equal the reference; return how many entities had state."""
    t_end = max(e["e"] for e in applied)
    checked = 0
    for view_name, key_field in EXAMPLE_VIEW_KEYS:
        view = views[view_name]
        by_key: dict[Any, list[dict[str, Any]]] = {}
        for e in applied:
            by_key.setdefault(e[key_field], []).append(e)
        for key, mine in by_key.items():
            got = online_values(table, view, key, t_end)
            if got is None:
                assert not any(e["event_type"] == "PURCHASE" for e in mine), f"{view_name} {key} missing"
                continue
            assert_close(got, expected_values(view, mine, key, t_end, key_field=key_field), f"{view_name} {key}")
            checked += 1
    return checked


def check_job_state(job: StreamJob, records: list[Record], secondary: Path) -> int:
    """Compare the job's RocksDB state with the reference over ``records`` (every record
    of its topic, in the order read); how many entities were checked."""
    from engine.state.online_rocksdb import RocksDBOnlineTable

    applied = applied_events(reference_events(records), job.source.allowed_lateness_ms)
    table = RocksDBOnlineTable(job.state_dir, job.shards, secondary, background=False)
    try:
        return check_online_values(table, {v.name: v for v in job.views}, applied)
    finally:
        table.close()


def assert_close(actual: dict[str, Any], expected: dict[str, Any], context: str) -> None:
    assert actual.keys() == expected.keys(), context
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, Approx):
            assert got is not None and abs(got - want.value) <= want.tolerance, (
                f"{context}: {name}: got {got!r}, want {want.value!r} within {want.tolerance!r}"
            )
        elif want is None or got is None or isinstance(want, list):
            assert got == want, f"{context}: {name}: got {got!r}, want {want!r}"
        elif isinstance(want, int):
            # Ints are exact and stay ints (counts, times; min/max/last of an int column).
            assert type(got) is int and got == want, f"{context}: {name}: got {got!r}, want {want!r} (an int)"
        else:
            assert type(got) is float, f"{context}: {name}: got {got!r}, want {want!r} (a float)"
            tol = 1e-9 * max(abs(want), abs(got)) + 1e-9
            assert abs(got - want) <= tol, f"{context}: {name}: got {got!r}, want {want!r}"


def state_key(view: StreamFeatureView, entity: str) -> bytes:
    return tile_key(view.fingerprint, entity_key([entity]))


def streamfeat(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"streamfeat {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


class ProgressProbe:
    """Records of ``topic`` applied by every shard, read through RocksDB secondary
    instances (a read-only open would not see the writer's unflushed WAL)."""

    def __init__(self, state_dir: Path, shards: int, topic: str, own_dir: Path) -> None:
        self.state_dir, self.shards, self.topic, self.own_dir = state_dir, shards, topic, own_dir
        self._dbs: dict[int, Any] = {}

    def __call__(self) -> int:
        import rocksdict

        from engine.state.layout import reader_options, shard_path
        from engine.state.offsets import scan_offsets

        per_partition: dict[int, int] = {}
        for shard in range(self.shards):
            db = self._dbs.get(shard)
            if db is None:
                if not (shard_path(self.state_dir, shard) / "CURRENT").exists():
                    return 0
                own = self.own_dir / f"probe-{shard}"
                own.mkdir(parents=True, exist_ok=True)
                db = rocksdict.Rdict(
                    str(shard_path(self.state_dir, shard)),
                    reader_options(),
                    access_type=rocksdict.AccessType.secondary(str(own)),
                )
                self._dbs[shard] = db
            db.try_catch_up_with_primary()
            records = scan_offsets(db, self.topic)
            for partition, record in records.items():
                applied = record.applied_offset + 1
                per_partition[partition] = min(per_partition.get(partition, applied), applied)
            if shard == 0 and not records:
                return 0
        return sum(per_partition.values())

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()


def kill_mid_run(
    child: subprocess.Popen[bytes],
    state_dir: Path,
    shards: int,
    topic: str,
    total: int,
    fraction: float,
    timeout_s: float = 120.0,
) -> bool:
    """SIGKILL ``child``'s process group once ``fraction`` of the remaining records are applied.

    Waiting for progress rather than for a fixed time makes the kill land inside
    ingestion however fast or slow the machine is. Returns whether it killed.
    """
    import os
    import signal
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as own:
        probe = ProgressProbe(state_dir, shards, topic, Path(own))
        try:
            start = probe()
            target = start + max(1, int((total - start) * fraction))
            deadline = time.monotonic() + timeout_s
            while child.poll() is None and time.monotonic() < deadline:
                if probe() >= target:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait(timeout=30)
                    return True
                time.sleep(0.02)
            return False
        finally:
            probe.close()


def wait_for_progress(
    child: subprocess.Popen[bytes], state_dir: Path, shards: int, topic: str, target: int, timeout_s: float = 120.0
) -> bool:
    """Wait until ``target`` records are applied; False if ``child`` exits first."""
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as own:
        probe = ProgressProbe(state_dir, shards, topic, Path(own))
        try:
            deadline = time.monotonic() + timeout_s
            while child.poll() is None and time.monotonic() < deadline:
                if probe() >= target:
                    return True
                time.sleep(0.02)
            return False
        finally:
            probe.close()


def truncate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete every record now in ``topic`` (as retention would)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    consumer = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": "truncate"})
    try:
        ends = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1])
            for p in range(partitions)
        ]
    finally:
        consumer.close()
    for future in admin.delete_records(ends, operation_timeout=30).values():
        future.result(30)

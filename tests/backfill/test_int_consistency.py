"""min, max and last of an int column are ints everywhere (docs/semantics.md section 3,
"Types of values"), cell for cell and type for type: the streaming dataflow's state
(online), a training set from the Parquet log it wrote, a backfill of the same events
from Parquet history (its state and its log), and the brute-force reference. sum and
mean of the int column, and min/max/last of a float column, stay floats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.definitions import FeatureRepo, FeatureService, FieldType, StreamFeatureView
from engine.exact_doubles import MAX_EXACT_INTEGER
from engine.offline.backfill import BackfillTarget, backfill_parquet
from engine.offline.history_batches import HISTORY_PARTITION
from engine.offline.training import get_training_set
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.backfill.backfill_support import SHARDS, START_MS
from tests.engine import streaming_support as streaming
from tests.engine.payments_support import INT_FEATURES, doubled, payment_source, payment_view

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOUR = 3_600_000
USERS = ("u0", "u1", "u2", "u3", "u4", "big")
SERVICE = "int_check"


def payments(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Events in arrival order (times jittered by < 60 s). User "big" pays amounts next to
    2**53, the largest ints a field read as a double may hold: exact as ints, never rounded."""
    base = START_MS + np.sort(rng.integers(0, 3 * HOUR, n))
    ts = base - rng.integers(0, 60_000, n)
    docs = []
    for i in range(n):
        user = USERS[int(rng.integers(len(USERS)))]
        cents = MAX_EXACT_INTEGER - int(rng.integers(0, 1000)) if user == "big" else int(rng.integers(-5000, 100_000))
        docs.append(
            {"user_id": user, "cents": cents, "price": float(np.round(rng.gamma(2.0, 30.0), 2)), "ts": int(ts[i])}
        )
    return docs


def reference_events(docs: Sequence[dict[str, Any]], positions: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {
            "entity": d["user_id"],
            "e": d["ts"],
            "partition": p,
            "offset": o,
            "cents": d["cents"],
            "price": d["price"],
            "valid": True,
        }
        for d, (p, o) in zip(docs, positions, strict=True)
    ]


def check_state(
    state_dir: Path, secondary: Path, view: StreamFeatureView, applied: Sequence[dict[str, Any]], times: Sequence[int]
) -> int:
    """Every user's online values as of each t equal the reference, type for type."""
    table = RocksDBOnlineTable(state_dir, SHARDS, secondary, background=False)
    ints = 0
    try:
        for t in times:
            for user in USERS:
                mine = [e for e in applied if e["entity"] == user]
                got = streaming.online_values(table, view, user, t)
                assert got is not None, user
                want = streaming.expected_values(view, mine, user, t, filter=None)
                streaming.assert_close(got, want, f"online {user} at {t}")
                ints += sum(type(got[name]) is int for name in INT_FEATURES)
    finally:
        table.close()
    return ints


def check_training_set(
    log_root: Path, view: StreamFeatureView, applied: Sequence[dict[str, Any]], spine: Sequence[tuple[str, int]]
) -> None:
    """A training set from ``log_root``: int64 columns for the int features, float64 for
    the rest, and every cell equal to the reference (null where the window is empty)."""
    transforms = [doubled(view, "python"), doubled(view, "batch")]
    service = FeatureService(SERVICE, features=[view, *transforms])
    repo = FeatureRepo.from_objects([view.source, *view.entities, view, *transforms, service])
    frame = get_training_set(
        repo,
        SERVICE,
        pl.DataFrame(
            {
                "user_id": [u for u, _ in spine],
                "event_timestamp": pl.Series([t for _, t in spine], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            }
        ),
        str(log_root),
    )
    for name, ftype in view.feature_types.items():
        assert frame.schema[name] == (pl.Int64 if ftype == FieldType.INT else pl.Float64), name
    # The on-demand transforms read the int feature as ints (declared int outputs refuse floats).
    assert frame.schema["cents_max_doubled"] == frame.schema["cents_max_doubled_batch"] == pl.Int64
    assert {n for n, f in view.feature_types.items() if f == FieldType.INT} >= set(INT_FEATURES)
    for row, (user, t) in zip(frame.iter_rows(named=True), spine, strict=True):
        mine = [e for e in applied if e["entity"] == user]
        want = streaming.expected_values(view, mine, user, t, filter=None)
        streaming.assert_close({n: row[n] for n in want}, want, f"training set {log_root.parent.name} {user} at {t}")
        twice = None if want["cents_max_1h"] is None else 2 * want["cents_max_1h"]
        assert row["cents_max_doubled"] == row["cents_max_doubled_batch"] == twice, (user, t)


def produce(bootstrap: str, topic: str, docs: Sequence[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True})
    for doc in docs:
        producer.produce(topic, key=str(doc["user_id"]).encode(), value=orjson.dumps(doc))
    assert producer.flush(30) == 0


def test_int_min_max_last_are_ints_online_in_training_sets_and_after_backfill(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    rng = np.random.default_rng(53)
    topic = kafka_topic(partitions=2)
    source = payment_source(topic)
    view = payment_view(source)
    docs = payments(rng, 700)

    produce(kafka_bootstrap, topic, docs)
    job = streaming.make_job(tmp_path / "stream", topic, kafka_bootstrap, shards=SHARDS, source=source, views=(view,))
    run_main(build_flow(job))  # type: ignore[no-untyped-call]
    records = streaming.read_topic(kafka_bootstrap, topic, 2)
    assert len(records) == len(docs)
    streamed = reference_events([orjson.loads(r.value) for r in records], [(r.partition, r.offset) for r in records])
    applied = streaming.applied_events(streamed, source.allowed_lateness_ms)
    assert len(applied) == len(docs)  # jitter < allowed lateness: nothing late
    t_last = max(int(e["e"]) for e in applied)
    assert check_state(job.state_dir, tmp_path / "sec", view, applied, [t_last]) >= 3 * len(USERS)

    # Spine rows on, just before and after events, on tile edges, and long after (empty windows).
    picks = rng.choice(len(applied), size=150, replace=False).tolist()
    spine = [
        (str(applied[i]["entity"]), int(applied[i]["e"]) + int(rng.choice([0, -1, 1, 59_999, -60_000, 20 * 60_000])))
        for i in picks
    ] + [(user, t_last + 2 * HOUR) for user in USERS]
    check_training_set(tmp_path / "stream" / "log", view, applied, spine)

    # A backfill of the same events from Parquet history: positions in file order by time.
    history = tmp_path / "history" / "part-0.parquet"
    history.parent.mkdir(parents=True)
    pl.DataFrame(
        docs, schema={"user_id": pl.String, "cents": pl.Int64, "price": pl.Float64, "ts": pl.Int64}
    ).write_parquet(history)
    end = max(int(d["ts"]) for d in docs) + 1
    target = BackfillTarget(tmp_path / "bf" / "state", SHARDS, str(tmp_path / "bf" / "log"))
    report = backfill_parquet(target, source, [view], [str(history)], START_MS - HOUR, end)
    assert report.complete and report.rows_total == len(docs)
    order = sorted(range(len(docs)), key=lambda i: docs[i]["ts"])
    replayed = reference_events([docs[i] for i in order], [(HISTORY_PARTITION, k) for k in range(len(docs))])
    times = [end - 1, end - 1 + 17 * 60_000, end - 1 + HOUR + 1]
    assert check_state(target.state_dir, tmp_path / "secbf", view, replayed, times) >= 3 * len(USERS)
    check_training_set(tmp_path / "bf" / "log", view, replayed, spine)

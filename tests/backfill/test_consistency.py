"""Online/offline consistency through a real broker.

For random streams, every (entity, t) checked has one value, whichever way it is
computed: the streaming dataflow's state (online), a training set from the Parquet
log the dataflow wrote, a backfill of the same events from Parquet history (its
state and its log), and the brute-force reference of docs/semantics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.kernel.codec import decode_sketches, decode_tiles
from engine.kernel.value_lists import LIST_KINDS, decode_entries
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import empty_value
from engine.offline.history_batches import HISTORY_PARTITION
from engine.state.keys import entity_key
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.backfill.backfill_support import (
    SHARDS,
    START_MS,
    compare_state,
    compare_training_set,
    history_reference,
    random_events,
    run_backfill,
    training_rows,
    write_history,
)
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    make_job,
    online_values,
    read_topic,
    reference_events,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOUR = 3_600_000


def produce(bootstrap: str, topic: str, docs: Sequence[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "linger.ms": 5, "enable.idempotence": True})
    for doc in docs:
        producer.produce(topic, key=str(doc["user_id"]).encode(), value=orjson.dumps(doc))
    assert producer.flush(30) == 0


def spine_for(applied: Sequence[dict[str, Any]], rng: np.random.Generator, rows: int) -> list[tuple[str, str, int]]:
    """Spine rows near real events (on, just before and after them, and on tile edges)."""
    picks = rng.choice(len(applied), size=min(rows, len(applied)), replace=False)
    spine = []
    for i in picks.tolist():
        e = applied[i]
        t = int(e["e"]) + int(rng.choice([0, -1, 1, 59_999, -60_000, int(rng.integers(-HOUR, HOUR))]))
        spine.append((str(e["entity"]), str(e["merchant"]), t))
    return spine


@pytest.mark.parametrize("seed", [11, 12])
def test_online_training_backfill_and_reference_agree(
    seed: int, tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    rng = np.random.default_rng(seed)
    topic = kafka_topic(partitions=2)
    docs = random_events(rng, 1200, users=25, merchants=6, start_ms=START_MS, span_ms=4 * HOUR)
    job = make_job(tmp_path / "stream", topic, kafka_bootstrap, shards=SHARDS)

    # Online: ingest every event up to t and nothing after, then read the state as of t.
    cuts = sorted(rng.choice(np.arange(200, len(docs) - 100), size=2, replace=False).tolist())
    produced = 0
    for cut in [*cuts, len(docs)]:
        produce(kafka_bootstrap, topic, docs[produced:cut])
        produced = cut
        run_main(build_flow(job))  # type: ignore[no-untyped-call]
        records = read_topic(kafka_bootstrap, topic, 2)
        assert len(records) == produced
        applied = applied_events(reference_events(records), job.source.allowed_lateness_ms)
        assert len(applied) == produced  # jitter < allowed lateness: nothing late
        t = max(int(e["e"]) for e in applied)
        compared = compare_state(job.state_dir, SHARDS, tmp_path / f"sec{cut}", applied, [t], topic=topic)
        assert compared >= 20

    # Training set from the log the dataflow wrote, at arbitrary times.
    spine = spine_for(applied, rng, 120)
    compare_training_set(tmp_path / "stream" / "log", applied, spine, topic=topic)

    # Backfill of the same events from Parquet history into a separate state dir.
    history = write_history(docs, tmp_path / "history" / "part-0.parquet")
    end = max(int(d["ts"]) for d in docs) + 1
    report = run_backfill(tmp_path / "bf", [history], START_MS - HOUR, end, topic=topic, chunk_rows=250)
    assert report.complete and report.rows_total == len(docs)
    replayed = history_reference(docs, START_MS - HOUR, end)
    assert {e["partition"] for e in replayed} == {HISTORY_PARTITION}
    t_final = end - 1
    times = [t_final, t_final + 17 * 60_000, t_final + HOUR + 1]
    assert compare_state(tmp_path / "bf" / "state", SHARDS, tmp_path / "secbf", replayed, times, topic=topic) >= 20
    compare_training_set(tmp_path / "bf" / "log", replayed, spine, topic=topic)

    # And directly: the streamed state equals the backfilled state, entity by entity.
    views = {v.name: v for v in job.views}
    online = RocksDBOnlineTable(job.state_dir, SHARDS, tmp_path / "sec_a", background=False)
    offline = RocksDBOnlineTable(tmp_path / "bf" / "state", SHARDS, tmp_path / "sec_b", background=False)
    try:
        users = sorted({str(d["user_id"]) for d in docs})
        keys_of: dict[tuple[str, ...], list[str]] = {
            ("user_id",): users,
            ("merchant_id",): sorted({str(d["merchant_id"]) for d in docs}),
        }
        sketch_views = [v for v in views.values() if ViewSpec.from_view(v).layout.sketch_slots]
        assert {v.name for v in sketch_views} >= {"user_spend", "user_amount_profile"}
        for view in sketch_views:
            # Sketch state is bit-identical: the same tiles, the same blob bytes per tile and slot.
            n_slots = len(ViewSpec.from_view(view).layout.sketch_slots)
            for user in keys_of[tuple(view.join_keys)]:
                a_raw, b_raw = (t.read(view.fingerprint, [entity_key([user])])[0] for t in (online, offline))
                assert (a_raw is None) == (b_raw is None), (view.name, user)
                if a_raw is not None and b_raw is not None:
                    assert decode_tiles(a_raw)[0].tolist() == decode_tiles(b_raw)[0].tolist(), (view.name, user)
                    a_blobs, b_blobs = decode_sketches(a_raw, n_slots), decode_sketches(b_raw, n_slots)
                    for i, slot in enumerate(ViewSpec.from_view(view).layout.sketch_slots):
                        a_slot, b_slot = a_blobs[:, i].tolist(), b_blobs[:, i].tolist()
                        if slot.kind in LIST_KINDS.values():
                            # A list entry keeps its event's source position for the order's
                            # tie-break: Kafka offsets when streamed, the history partition's
                            # positions when backfilled from Parquet. Times and values agree.
                            a_slot = [[(e, v) for e, _, v in decode_entries(b)] for b in a_slot]
                            b_slot = [[(e, v) for e, _, v in decode_entries(b)] for b in b_slot]
                        assert a_slot == b_slot, f"{view.name} {user}: sketch slot {slot.kind} differs"
        # The training set answers the sketch features exactly as the online state does.
        sketch_features = [
            (view, spec)
            for view in sketch_views
            for spec in ViewSpec.from_view(view).aggregations
            if spec.sketch_slot is not None
        ]
        spine_now = [(user, "m0", t_final) for user in users]
        answered = 0
        for log_root in (tmp_path / "stream" / "log", tmp_path / "bf" / "log"):
            frame = training_rows(log_root, spine_now, topic=topic)
            for row, (user, _, _) in zip(frame.iter_rows(named=True), spine_now, strict=True):
                for view, spec in sketch_features:
                    # The spine row's key for this view: its user, or its merchant "m0".
                    key = user if tuple(view.join_keys) == ("user_id",) else "m0"
                    served = online_values(online, view, key, t_final)
                    want = empty_value(spec) if served is None else served[spec.output_name]
                    assert row[spec.output_name] == want, f"{log_root.parent.name} {spec.output_name} {user}"
                    answered += want not in (None, 0)
        assert answered >= len(users) * len(sketch_features), "most users have sketch values to compare"
        # user_lifetime: the compacted partials folded batch by batch (stream) and
        # chunk by chunk (backfill) agree.
        for name in ("user_spend", "user_lifetime"):
            for user in sorted({str(d["user_id"]) for d in docs}):
                a = online_values(online, views[name], user, t_final)
                b = online_values(offline, views[name], user, t_final)
                assert (a is None) == (b is None), user
                if a is not None and b is not None:
                    assert_close(a, b, f"{name} user {user}: stream vs backfill")
    finally:
        online.close()
        offline.close()


def test_history_handoff_then_stream(tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    """History up to T, then the stream (with events before and after T): no gap, no double count."""
    rng = np.random.default_rng(21)
    topic = kafka_topic(partitions=2)
    docs = random_events(rng, 1500, users=20, merchants=5, start_ms=START_MS, span_ms=6 * HOUR)
    handoff = START_MS + 3 * HOUR
    # History holds everything before T (and some rows after it, which it must leave out);
    # Kafka's retention starts an hour before T, so both hold [T - 1h, T).
    history = write_history(docs, tmp_path / "history" / "part-0.parquet")
    in_kafka = [d for d in docs if int(d["ts"]) >= handoff - HOUR]
    produce(kafka_bootstrap, topic, in_kafka)

    report = run_backfill(tmp_path, [history], START_MS - HOUR, handoff, topic=topic, chunk_rows=400)
    assert report.complete
    job = make_job(tmp_path, topic, kafka_bootstrap, shards=SHARDS)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    records = read_topic(kafka_bootstrap, topic, 2)
    streamed = applied_events(reference_events(records), job.source.allowed_lateness_ms)
    before = [e for e in streamed if e["e"] < handoff]
    assert before, "the stream must also hold events older than T"
    expected = history_reference(docs, START_MS - HOUR, handoff) + [e for e in streamed if e["e"] >= handoff]
    t_last = max(int(e["e"]) for e in expected)
    assert (
        compare_state(tmp_path / "state", SHARDS, tmp_path / "sec", expected, [t_last, t_last + HOUR], topic=topic)
        >= 20
    )
    # The shared log (history rows + stream rows with e >= T) gives the same training set.
    spine = spine_for(expected, rng, 100) + [(str(e["entity"]), str(e["merchant"]), handoff) for e in expected[:20]]
    compare_training_set(tmp_path / "log", expected, spine, topic=topic)

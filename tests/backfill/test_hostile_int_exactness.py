"""Int fields are never served rounded, end to end (docs/semantics.md sections 3 and 5).

A repo with an int ``amount`` that sum/max/min/last/mean read as a double and an int
``card_number`` that is only counted, hashed, listed and used as a join key
(tests/exact_int_repo.py). Records carry the ints at the boundaries (2**53 - 1, 2**53,
2**53 + 1, -2**53, the int64 ends, 0, 1) through a real broker: each record whose amount a
double does not hold exactly is one dead letter ``value_out_of_range`` naming the field,
as tests/reference.py decides from the contract; every other record is applied. Online
state, the training set from the stream's log and a backfill of the same records from a
Parquet history file equal the reference cell for cell: copied values (min, max, last,
counts, distinct counts, lists, card numbers beyond 2**53) exactly, ints as ints; sums and
means within the documented relative tolerance. A history file holding an inexact amount
is refused naming the file, the column and the row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from dataflows.stream import build_flow
from engine.definitions import EventSource, FeatureRepo, StreamFeatureView
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import read_dead_letters
from engine.offline.backfill import BackfillTarget, backfill_parquet
from engine.offline.exceptions import HistoryFileError
from engine.offline.training import get_training_set
from tests.backfill.backfill_support import SHARDS, START_MS, history_reference, read_entity_states
from tests.engine.streaming_support import (
    applied_events,
    make_job,
    refused_reference_event,
)
from tests.exact_int_repo import (
    INT64_MAX,
    SERVICE,
    VIEW_KEYS,
    aggregations_read,
    check_values,
    definitions,
    inexact_payment,
    payment,
    reference_event,
    schema_kinds,
)
from tests.reference import inexact_int_fields

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Arrow types of the source's field kinds in a history file (the timestamp is epoch ms).
ARROW_TYPES = {"string": pa.string(), "int": pa.int64()}


def compare_online(
    state_dir: Path,
    secondary: Path,
    views: Sequence[StreamFeatureView],
    applied: Sequence[dict[str, Any]],
    times: Sequence[int],
) -> int:
    """Every user's and card's online values as of each t equal the reference; returns how
    many ints beyond 2**53 were served."""
    by_name = {v.name: v for v in views}
    view_keys = [(by_name[name], key_field) for name, key_field in VIEW_KEYS]
    big = 0
    for view, key_field, key, t, got in read_entity_states(state_dir, SHARDS, secondary, view_keys, applied, times):
        assert got is not None, f"{view.name} {key!r}: no state"
        big += check_values(view, got, applied, key_field, key, t, f"online {view.name} {key!r} at {t}")
    return big


def compare_training_set(
    repo: FeatureRepo, log_root: Path, applied: Sequence[dict[str, Any]], spine: Sequence[tuple[str, int, int]]
) -> int:
    """get_training_set on the log equals the reference for every ``(user_id, card_number,
    t)`` row; returns how many ints beyond 2**53 it held."""
    frame = get_training_set(
        repo,
        SERVICE,
        pl.DataFrame(
            {
                "user_id": [u for u, _, _ in spine],
                "card_number": pl.Series([c for _, c, _ in spine], dtype=pl.Int64),
                "event_timestamp": pl.Series([t for _, _, t in spine], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            }
        ),
        str(log_root),
    )
    keys = {"user_id": 0, "card_number": 1}
    big = 0
    for row, spine_row in zip(frame.iter_rows(named=True), spine, strict=True):
        t = spine_row[2]
        for view in repo.views:
            key_field = dict(VIEW_KEYS)[view.name]
            got = {n: row[n] for n in view.feature_names}
            big += check_values(view, got, applied, key_field, spine_row[keys[key_field]], t, f"training {spine_row}")
    return big


def _produce(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def _write_history(
    source: EventSource, docs: Sequence[Mapping[str, Any]], path: Path, unsigned: Collection[str] = ()
) -> Path:
    """``docs`` as a Parquet history file of ``source``, in row groups of 64 rows; the
    ``unsigned`` columns as uint64."""
    kinds = {**schema_kinds(source), str(source.timestamp_field): "int"}
    schema = pa.schema([(name, pa.uint64() if name in unsigned else ARROW_TYPES[kind]) for name, kind in kinds.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [d[name] for d in docs] for name in kinds}
    pq.write_table(pa.table(columns, schema=schema), path, row_group_size=64)
    return path


def test_boundary_ints_stream_train_and_backfill_exactly(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    source, views, repo = definitions(topic)
    read = aggregations_read(views)
    values: list[bytes] = []
    docs: list[dict[str, Any]] = []  # the good records, in offset order
    refused: dict[int, list[str]] = {}  # offset -> the fields the reference refuses it for
    inexact_sent = 0
    for i in range(240):
        ts = START_MS + i * 7_000
        doc = inexact_payment(i, ts) if i % 8 == 5 else payment(i, ts)
        inexact_sent += i % 8 == 5
        fields = inexact_int_fields(doc, schema_kinds(source), read)
        if fields:
            refused[len(values)] = fields
        else:
            docs.append(doc)
        values.append(orjson.dumps(doc))
    assert len(refused) == inexact_sent, "the reference refuses exactly the inexact amounts"
    _produce(kafka_bootstrap, topic, values)

    job = make_job(tmp_path / "stream", topic, kafka_bootstrap, shards=SHARDS, source=source, views=views)
    run_main(build_flow(job))  # type: ignore[no-untyped-call]

    letters = {letter.offset: letter for letter in read_dead_letters(kafka_bootstrap, dlq_topic_for(topic))}
    assert sorted(letters) == sorted(refused), "exactly the inexact amounts are dead letters, once each"
    for offset, fields in refused.items():
        letter = letters[offset]
        assert letter.reason == "value_out_of_range", letter
        assert fields == ["amount"] and "field 'amount'" in letter.detail and "2**53" in letter.detail, letter.detail
        assert letter.value == values[offset], "the dead letter keeps the bytes sent"

    # One partition, one idempotent producer: record i is at offset i.
    good = iter(docs)
    events = [
        refused_reference_event(0, offset) if offset in refused else reference_event(next(good), 0, offset)
        for offset in range(len(values))
    ]
    applied = applied_events(events, source.allowed_lateness_ms)
    assert len(applied) == len(docs), "every other record is applied"
    t_end = max(int(e["e"]) for e in applied)
    times = [t_end, t_end + 1_800_000, t_end + 7_200_000]

    assert compare_online(job.state_dir, tmp_path / "sec", views, applied, times) > 0, "big card numbers served"
    spine = [(str(e["user_id"]), int(e["card_number"]), int(e["e"]) + d) for e in applied[::5] for d in (0, -1, 60_000)]
    assert compare_training_set(repo, tmp_path / "stream" / "log", applied, spine) > 0

    # A backfill of the good records from Parquet history: the same values, exactly.
    history = _write_history(source, docs, tmp_path / "history" / "part-0.parquet")
    target = BackfillTarget(tmp_path / "bf" / "state", SHARDS, str(tmp_path / "bf" / "log"))
    report = backfill_parquet(target, source, views, [str(history)], START_MS - 1, t_end + 1)
    assert report.complete and report.rows_total == len(docs), report
    replayed = history_reference(docs, START_MS - 1, t_end + 1, event=reference_event)
    assert compare_online(target.state_dir, tmp_path / "secbf", views, replayed, times) > 0
    assert compare_training_set(repo, tmp_path / "bf" / "log", replayed, spine) > 0


def test_a_history_file_with_an_inexact_summed_int_is_refused_naming_file_column_and_row(tmp_path: Path) -> None:
    source, views, _repo = definitions("payments")
    docs = [payment(i, START_MS + i * 7_000) for i in range(150)]
    row = 137  # in the third row group: rows are counted across the file
    docs[row] = inexact_payment(row, docs[row]["ts"])
    assert inexact_int_fields(docs[row], schema_kinds(source), aggregations_read(views)) == ["amount"]
    history = _write_history(source, docs, tmp_path / "history" / "part-0.parquet")
    target = BackfillTarget(tmp_path / "state", SHARDS, str(tmp_path / "log"))
    with pytest.raises(HistoryFileError) as refusal:
        backfill_parquet(target, source, views, [str(history)], START_MS - 1, START_MS + 86_400_000)
    message = str(refusal.value)
    assert str(history) in message and "column 'amount'" in message and f"row {row}:" in message, message
    assert str(docs[row]["amount"]) in message and "2**53" in message, message
    assert refusal.value.hint is not None and "nothing was written" in refusal.value.hint


def test_an_unsigned_history_column_is_read_exactly_and_refused_beyond_int64(tmp_path: Path) -> None:
    """Regression: a uint64 column (which the int kind accepts) holding a value beyond int64
    failed the backfill with a polars cast error; the stream refuses such a JSON int as
    wrong_type, and history is now refused naming the row. Within int64 it is read exactly."""
    source, views, _repo = definitions("payments")
    docs = [{**payment(i, START_MS + i * 7_000), "amount": i, "card_number": INT64_MAX - i} for i in range(100)]
    history = _write_history(source, docs, tmp_path / "ok" / "part-0.parquet", unsigned=("amount", "card_number"))
    target = BackfillTarget(tmp_path / "ok" / "state", SHARDS, str(tmp_path / "ok" / "log"))
    end = START_MS + 86_400_000
    assert backfill_parquet(target, source, views, [str(history)], START_MS - 1, end).rows_total == len(docs)
    replayed = history_reference(docs, START_MS - 1, end, event=reference_event)
    assert compare_online(target.state_dir, tmp_path / "sec", views, replayed, [docs[-1]["ts"]]) > 0

    for column in ("amount", "card_number"):
        refused = list(docs)
        refused[70] = {**docs[70], column: 2**64 - 1 if column == "card_number" else INT64_MAX + 1}
        path = _write_history(source, refused, tmp_path / column / "part-0.parquet", unsigned=("amount", "card_number"))
        target = BackfillTarget(tmp_path / column / "state", SHARDS, str(tmp_path / column / "log"))
        with pytest.raises(HistoryFileError) as refusal:
            backfill_parquet(target, source, views, [str(path)], START_MS - 1, end)
        message = str(refusal.value)
        assert f"{path}: column '{column}': row 70: {refused[70][column]} is beyond int64" in message, message

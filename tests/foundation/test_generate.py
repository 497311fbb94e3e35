"""The demo event generator: determinism, timing, skew, malformed records, Parquet output."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli import main
from engine.exceptions import ConfigError
from engine.generate import (
    CHUNK_SIZE,
    EXPECTED_DLQ_REASON,
    FIELDS,
    MALFORMED_KINDS,
    PARQUET_SCHEMA,
    GeneratorConfig,
    MalformedKind,
    generate,
    write_parquet,
)
from engine.generate.events import _dumps_each
from engine.timefmt import parse_cli_time

STR_FIELDS = ("transaction_id", "user_id", "merchant_id", "card_id", "currency", "event_type")


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    config = GeneratorConfig(events=CHUNK_SIZE + 5_000, seed=7, jitter_ms=300, malformed_fraction=0.01)
    first, again = generate(config), generate(config)
    assert first.values == again.values
    assert first.keys == again.keys
    assert np.array_equal(first.malformed, again.malformed)
    other = generate(GeneratorConfig(events=config.events, seed=8, jitter_ms=300, malformed_fraction=0.01))
    differing = sum(a != b for a, b in zip(first.values, other.values, strict=True))
    assert differing > 0.99 * config.events


def test_options_do_not_change_the_underlying_events() -> None:
    plain = generate(GeneratorConfig(events=2_000, seed=3))
    jittered = generate(GeneratorConfig(events=2_000, seed=3, jitter_ms=1_000, malformed_fraction=0.2))
    for name in ("user_id", "merchant_id", "card_id", "currency", "event_type"):
        assert plain.columns[name] == jittered.columns[name]
    assert np.array_equal(plain.columns["amount"], jittered.columns["amount"])


def test_records_are_valid_typed_json_keyed_by_user() -> None:
    batch = generate(GeneratorConfig(events=5_000, users=500, merchants=50, seed=1))
    assert (batch.malformed == -1).all()
    for key, value in zip(batch.keys, batch.values, strict=True):
        record = orjson.loads(value)
        assert tuple(record) == FIELDS
        assert all(isinstance(record[f], str) for f in STR_FIELDS)
        assert isinstance(record["amount"], float) and round(record["amount"], 2) == record["amount"]
        assert isinstance(record["ts"], int)
        assert record["event_type"] in ("PURCHASE", "REFUND", "LOGIN")
        assert key == record["user_id"].encode()
        assert record["card_id"].startswith(record["user_id"] + "-c")
    users = Counter(batch.columns["user_id"])
    assert all(0 <= int(u[1:]) < 500 for u in users)
    assert len(set(batch.columns["transaction_id"])) == 5_000


def test_bulk_serialisation_equals_one_dumps_per_record() -> None:
    batch = generate(GeneratorConfig(events=3_000, seed=11))
    records = [orjson.loads(v) for v in batch.values]
    assert _dumps_each(records) == [orjson.dumps(r) for r in records]
    assert _dumps_each([]) == []


def test_users_and_merchants_are_zipf_skewed() -> None:
    users = 10_000
    batch = generate(GeneratorConfig(events=100_000, users=users, merchants=1_000, seed=2, user_skew=1.1))
    counts = Counter(batch.columns["user_id"]).most_common()
    top_share = counts[0][1] / 100_000
    expected = 1.0 / sum(k**-1.1 for k in range(1, users + 1))
    assert top_share == pytest.approx(expected, rel=0.1)
    assert counts[0][0] == "u000000"  # rank 1 is the first user
    merchants = Counter(batch.columns["merchant_id"]).most_common()
    assert merchants[0][1] > 50 * (100_000 / 1_000)


def test_timestamps_follow_rate_and_jitter_bounds() -> None:
    start = parse_cli_time("2026-03-01T12:00:00Z", "--start")
    exact = generate(GeneratorConfig(events=10_000, seed=4, start_ms=start, rate=250.0))
    expected = start + np.floor(np.arange(10_000) * 4.0).astype(np.int64)
    assert np.array_equal(exact.ts, expected)
    jittered = generate(GeneratorConfig(events=10_000, seed=4, start_ms=start, rate=250.0, jitter_ms=500))
    shift = expected - jittered.ts
    assert shift.min() >= 0 and shift.max() <= 500
    assert (np.diff(jittered.ts) < 0).any()  # really out of order
    # Never more than J behind the newest earlier event: allowed_lateness >= J sees no late event.
    assert (np.maximum.accumulate(jittered.ts) - jittered.ts).max() <= 500


def test_malformed_fraction_and_every_kind() -> None:
    events, fraction = 100_000, 0.02
    batch = generate(GeneratorConfig(events=events, seed=5, malformed_fraction=fraction))
    bad = int((batch.malformed >= 0).sum())
    sigma = math.sqrt(events * fraction * (1 - fraction))
    assert abs(bad - events * fraction) < 5 * sigma
    kinds = Counter(k for k in batch.malformed_kinds() if k is not None)
    assert set(kinds) == set(MALFORMED_KINDS)
    assert all(n > bad / len(MALFORMED_KINDS) / 2 for n in kinds.values())
    for value, kind in zip(batch.values, batch.malformed_kinds(), strict=True):
        _assert_broken_as_labelled(value, kind)
    assert set(EXPECTED_DLQ_REASON) == set(MALFORMED_KINDS)


def _assert_broken_as_labelled(value: bytes, kind: MalformedKind | None) -> None:
    if kind is MalformedKind.INVALID_JSON:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(value)
        return
    record = orjson.loads(value)
    if kind is None:
        assert tuple(record) == FIELDS and isinstance(record["ts"], int) and record["ts"] > 0
    elif kind is MalformedKind.MISSING_FIELD:
        assert len(record) == len(FIELDS) - 1 and set(record) < set(FIELDS)
    elif kind is MalformedKind.WRONG_TYPE:
        assert isinstance(record["amount"], str) or isinstance(record["user_id"], int)
    elif kind is MalformedKind.TIMESTAMP_NOT_NUMERIC:
        assert isinstance(record["ts"], str) and not record["ts"].lstrip("-").isdigit()
    else:
        assert kind is MalformedKind.TIMESTAMP_NEGATIVE
        assert isinstance(record["ts"], int) and record["ts"] < 0


def test_parquet_is_partitioned_by_utc_day(tmp_path: Path) -> None:
    start = parse_cli_time("2026-03-01T22:00:00+00:00", "--start")
    config = GeneratorConfig(events=6_000, seed=6, start_ms=start, rate=0.05, jitter_ms=60_000)
    report = write_parquet(config, tmp_path)
    expected = generate(config)
    days = {datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d") for t in expected.ts.tolist()}
    assert len(days) >= 3
    assert sorted(p.parent.name for p in report.files) == sorted(f"date={d}" for d in days)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == sorted(
        f"date={d}/part-0.parquet" for d in days
    )
    rows = 0
    seen: list[str] = []
    for path in report.files:
        table = pq.read_table(path)
        assert table.schema.equals(PARQUET_SCHEMA)
        day = path.parent.name.removeprefix("date=")
        for ts in table.column("ts").to_pylist():
            assert datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d") == day
        rows += table.num_rows
        seen += table.column("transaction_id").to_pylist()
    assert rows == config.events
    assert sorted(seen) == sorted(expected.columns["transaction_id"])
    whole = pa.concat_tables([pq.read_table(p) for p in report.files]).sort_by("transaction_id")
    assert whole.column("amount").to_numpy().tolist() == expected.columns["amount"].tolist()


def test_parquet_refuses_malformed_records(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        write_parquet(GeneratorConfig(events=10, malformed_fraction=0.1), tmp_path)


def test_cli_writes_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--events", "1000", "--seed", "9", "--rate", "0.01", "--parquet", str(tmp_path)])
    assert code == 0
    assert "1,000 events" in capsys.readouterr().out
    assert sum(pq.read_table(p).num_rows for p in tmp_path.rglob("part-0.parquet")) == 1000


def test_cli_rejects_naive_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--events", "5", "--start", "2026-01-01T00:00:00", "--parquet", "x"]) == 2
    assert "time zone" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"events": -1}, ValueError, "events"),
        ({"events": 10, "users": 0}, ValueError, "users"),
        ({"events": 10, "rate": 0.0}, ValueError, "rate"),
        ({"events": 10, "malformed_fraction": 1.5}, ValueError, "malformed_fraction"),
        ({"events": 10, "jitter_ms": -5}, ValueError, "jitter_ms"),
        ({"events": 2.5}, TypeError, "events"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, object], error: type[Exception], field: str) -> None:
    with pytest.raises(error, match=f"GeneratorConfig.{field}"):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rate", "1e300", "--parquet", "x"], "one day of event time at 1e+300 events/s is 8.64e+304 events"),
        (["--rate", "5000", "--parquet", "x"], "is 432,000,000 events, more than the 100,000,000 generated without"),
    ],
)
def test_cli_names_a_bad_rate_as_the_rate_before_generating(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "GeneratorConfig" not in err and "Traceback" not in err, err

"""``streamfeat backfill`` and ``streamfeat training-set`` through the CLI entry point."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli import main
from engine.definitions import load_repo
from engine.offline.training import views_read
from engine.plan import apply_plan
from engine.state.records import decode_handoff, handoff_key
from engine.state.rocksdb_store import RocksDBStore
from tests.backfill.backfill_support import (
    START_MS,
    history_reference,
    random_events,
    write_history,
)
from tests.engine.streaming_support import REPO, assert_close, expected_values

HOUR = 3_600_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory (no config files) with the example repo applied."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("STREAMFEAT_"):
            monkeypatch.delenv(name)
    apply_plan(load_repo(REPO), tmp_path / "data" / "plan.json", shards=2)
    return tmp_path


def run(command: str, *args: str) -> int:
    return main([command, "--repo", str(REPO), "--data-dir", "data", *args])


def test_backfill_then_training_set(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = random_events(np.random.default_rng(3), 600, users=15, merchants=4, start_ms=START_MS, span_ms=3 * HOUR)
    write_history(docs[:300], project / "history" / "date=1" / "part-0.parquet")
    write_history(docs[300:], project / "history" / "date=2" / "part-0.parquet")
    end = START_MS + 2 * HOUR
    code = run(
        "backfill",
        "--source",
        "transactions",
        "--from",
        "history/**/*.parquet",
        "--start",
        iso(START_MS - HOUR),
        "--end",
        iso(end),
        "--commit-rows",
        "97",  # several slices of entities
    )
    out = capsys.readouterr().out
    assert code == 0, out
    kept = sum(1 for d in docs if START_MS - HOUR <= d["ts"] < end)
    # Each event is replayed once per family of views (views sharing their first join key).
    positions = kept * len({v.join_keys[0] for v in load_repo(REPO).views if v.source.name == "transactions"})
    assert (
        f"backfilled {kept:,} history events ({positions:,} of {positions:,} replay positions: "
        "one per event and family of views) from 2 files"
    ) in out
    store = RocksDBStore(project / "data" / "state", 2)
    try:
        for view in load_repo(REPO).views:
            raw = store.partition(1).get_many([handoff_key(view.fingerprint)])[0]
            assert raw is not None and decode_handoff(raw) == end
    finally:
        store.close()
    # The same command again replays nothing and says so, instead of "0 of N ... 0 events/s".
    again = run(
        "backfill", "--source", "transactions", "--from", "history/**/*.parquet",
        "--start", iso(START_MS - HOUR), "--end", iso(end), "--commit-rows", "97",
    )  # fmt: skip
    out = capsys.readouterr().out
    (said,) = [line for line in out.splitlines() if line.startswith("nothing to replay: ")]
    assert again == 0 and said.startswith(
        f"nothing to replay: views {', '.join(sorted(v.name for v in load_repo(REPO).views))} "
    )
    assert (
        f"already hold all {positions:,} replay positions of this backfill ({kept:,} history events from 2 files)"
        in said
    )

    spine = pl.DataFrame(
        {
            "user_id": [str(d["user_id"]) for d in docs[:50]],
            "merchant_id": [str(d["merchant_id"]) for d in docs[:50]],
            "event_timestamp": pl.Series([int(d["ts"]) for d in docs[:50]]).cast(pl.Datetime("ms", "UTC")),
            "amount": [float(d["amount"]) for d in docs[:50]],
        }
    )
    spine.write_parquet(project / "spine.parquet")
    code = run("training-set", "--service", "fraud_scoring", "--spine", "spine.parquet", "--out", "out/train.parquet")
    assert code == 0
    assert "note:" not in capsys.readouterr().err  # every row is within the log
    train = pl.read_parquet(project / "out" / "train.parquet")
    assert train.height == 50 and "amount_sum_15m" in train.columns
    assert "merchant_txn_count_1h" in train.columns and "spend_velocity_ratio" in train.columns
    applied = history_reference(docs, START_MS - HOUR, end)
    user_spend = load_repo(REPO).view("user_spend")
    for row in train.iter_rows(named=True):
        t = int(row["event_timestamp"].timestamp() * 1000)
        mine = [e for e in applied if e["entity"] == row["user_id"]]
        want = expected_values(user_spend, mine, row["user_id"], t)
        assert_close({k: row[k] for k in want}, want, f"training set {row['user_id']} at {t}")

    # Rows stamped before the log begins get empty windows; the command says how many, per view.
    early = START_MS - 2 * HOUR
    spine.head(3).with_columns(
        event_timestamp=pl.Series([early, early, end]).cast(pl.Datetime("ms", "UTC"))
    ).write_parquet(project / "early.parquet")
    code = run("training-set", "--service", "fraud_scoring", "--spine", "early.parquet", "--out", "out/early.parquet")
    assert code == 0
    noted: set[str] = set()
    for line in capsys.readouterr().err.splitlines():
        noting = re.fullmatch(
            r"note: 2 spine rows are before the first event in the Parquet log of ([\w, ]+), \S+ \((\d+) ms\): "
            r"their windows of th(?:at view|ose views) are empty \(their empty-window values: 0, null, \[\] or the declared default\), as if nothing happened before; "
            r"if something did, backfill that history first \(`streamfeat backfill`\)",
            line,
        )
        assert noting is not None, line
        assert early < int(noting.group(2)) <= end
        noted.update(noting.group(1).split(", "))
    assert noted == {v.name for v in views_read(load_repo(REPO), "fraud_scoring")}


def test_training_set_before_any_event_says_the_log_is_empty(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spine = {"user_id": ["u1"], "merchant_id": ["m1"], "amount": [1.0], "event_timestamp": [START_MS]}
    pl.DataFrame(spine).write_parquet(project / "spine.parquet")
    code = run("training-set", "--service", "fraud_scoring", "--spine", "spine.parquet", "--out", "t.parquet")
    assert code == 0
    views = ", ".join(v.name for v in views_read(load_repo(REPO), "fraud_scoring"))
    assert capsys.readouterr().err == (
        f"note: the Parquet log of {views} holds no events yet, so every row's windows of them are empty "
        "(their empty-window values: 0, null, [] or the declared default); apply events first (`streamfeat run` or `streamfeat backfill`)\n"
    )


def test_backfill_of_a_corrupt_file_fails_naming_it(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "history").mkdir()
    (project / "history" / "broken.parquet").write_bytes(b"not parquet")
    code = run("backfill", "--source", "transactions", "--from", "history", "--end", iso(START_MS))
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0].startswith("streamfeat backfill: error: history file ")
    assert "broken.parquet" in err[0] and err[1].startswith("hint: ")
    assert not (project / "data" / "state").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "nothing/*.parquet", "--end", "2026-01-01T00:00:00Z"], "no Parquet file matches"),
        (["--from", "x.parquet"], "--end is required"),
        (["--from", "x.parquet", "--end", "2026-01-01T00:00:00"], "--end: '2026-01-01T00:00:00' has no time zone"),
        (
            ["--from", "x.parquet", "--start", "yesterday", "--end", "2026-01-01T00:00:00Z"],
            "--start: expected an ISO 8601 time like 2026-01-01T00:00:00Z, got 'yesterday'",
        ),
        (["--from", "kafka", "--end", "2026-01-01T00:00:00Z"], "--start/--end do not apply to --from kafka"),
        (["--views", "nope", "--end", "2026-01-01T00:00:00Z"], "--views: ['nope'] are not views"),
        (["--from", "x.parquet", "--chunk-rows", "0", "--end", "2026-01-01T00:00:00Z"], "--chunk-rows: expected"),
        (["--from", "x.parquet", "--commit-rows", "-1", "--end", "2026-01-01T00:00:00Z"], "--commit-rows: expected"),
    ],
)
def test_backfill_usage_errors(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = run("backfill", "--source", "transactions", *args)
    err = capsys.readouterr().err
    assert message in err.splitlines()[0]
    assert code == (1 if "no Parquet file" in message else 2)


def test_backfill_without_an_applied_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = run("backfill", "--source", "transactions", "--end", "2026-01-01T00:00:00Z")
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and "no applied plan" in err[0] and "streamfeat apply" in err[1]


def test_training_set_output_is_parquet_or_csv_without_lists(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spine = {"user_id": ["u1"], "merchant_id": ["m1"], "amount": [1.0], "event_timestamp": [START_MS]}
    pl.DataFrame(spine).write_parquet(project / "spine.parquet")
    common = ["training-set", "--service", "fraud_scoring", "--spine", "spine.parquet"]
    assert run(*common, "--out", "t.txt") == 2
    assert "--out: expected a file name ending in .parquet (or .pq) or .csv, got 't.txt'" in capsys.readouterr().err
    lists = [n for n, t in pl.read_parquet(project / "spine.parquet").schema.items() if isinstance(t, pl.List)]
    assert not lists
    assert run(*common, "--out", "t.csv") == 2
    err = capsys.readouterr().err
    assert "--out: CSV cannot hold the list columns " in err and "hint: write Parquet instead: --out t.parquet" in err
    assert not (project / "t.csv").exists()
    assert run(*common, "--out", "t.parquet") == 0
    assert pl.read_parquet(project / "t.parquet").height == 1


def test_training_set_spine_errors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("training-set", "--service", "fraud_scoring", "--spine", "missing.parquet", "--out", "o.parquet")
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and "--spine: no file at missing.parquet" in err[0] and err[1].startswith("hint: ")

    pl.DataFrame({"user_id": ["u1"], "merchant_id": ["m1"], "amount": [1.0]}).write_parquet(project / "s.parquet")
    code = run("training-set", "--service", "fraud_scoring", "--spine", "s.parquet", "--out", "o.parquet")
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and "event_timestamp" in err[0]
    assert not (project / "o.parquet").exists()

    pl.DataFrame({"user_id": ["u1"], "ts": [1]}).write_parquet(project / "s2.parquet")
    code = run("training-set", "--service", "nope", "--spine", "s2.parquet", "--out", "o.parquet")
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and "nope" in err[0]

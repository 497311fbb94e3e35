"""``streamfeat consistency-check`` prints what it did not compare, in the report itself:
logged rows from before a view's Parquet log (answered offline from empty windows, a note
of get_training_set), a logged service the repo no longer defines, and a service asked
for with --service that the request log does not hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import main
from engine.io.request_log import RequestLogger
from tests.serving.serving_support import REPO_DIR, T_END, example_repo, make_events, write_log

BEFORE_ANY_EVENT = 1_700_000_000_000  # 2023-11-14: the events of make_events() are in 2025-2026


def test_coverage_notes_are_in_the_printed_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_log(str(data / "log"), example_repo().views, make_events())
    requests = tmp_path / "requests"
    log = RequestLogger(requests)
    keys, request_data = {"user_id": ["u1"], "merchant_id": ["m1"]}, {"amount": [1.0]}
    log.record("fraud_scoring", [BEFORE_ANY_EVENT], keys, request_data, [{"amount_count_15m": 0}])
    log.record("fraud_scoring", [T_END], keys, request_data, [{"amount_count_15m": 0}])
    log.record("retired_service", [T_END], keys, request_data, [{"x": 1}])
    log.flush()

    argv = ["consistency-check", "--repo", str(REPO_DIR), "--data-dir", str(data), "--request-log", str(requests)]
    code = main([*argv, "--max-mismatch-rate", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "service fraud_scoring: 2 logged rows recomputed offline" in out, out
    # get_training_set's note for the row before the first logged event, in the report itself
    assert "note: 1 spine row is before the first event in the Parquet log of" in out, out
    assert "windows of" in out and "are empty (their empty-window values" in out, out
    assert "service retired_service: 1 logged row (none compared)" in out, out
    assert (
        "note: service 'retired_service' is not defined in the repo now, so its 1 logged row was not compared" in out
    ), out

    code = main([*argv, "--service", "fraud_scoring", "--service", "batch_review", "--max-mismatch-rate", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "note: the request log holds no rows of service 'batch_review': nothing of it was compared" in out, out
    assert "retired_service" not in out, out


def test_mismatches_served_with_a_status_saying_why_are_counted_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_log(str(data / "log"), example_repo().views, make_events())
    requests = tmp_path / "requests"
    log = RequestLogger(requests)
    keys, request_data = {"user_id": ["u1"], "merchant_id": ["m1"]}, {"amount": [1.0]}
    wrong = [{"amount_count_15m": 123_456}]  # no window of the test data holds that many
    # A wall-clock answer that counted events stamped after it said so; an answer without
    # metadata logged no statuses.
    log.record("fraud_scoring", [T_END], keys, request_data, wrong, [{"amount_count_15m": "FUTURE_EVENTS"}])
    log.record("fraud_scoring", [T_END], keys, request_data, wrong)
    log.close()

    argv = ["consistency-check", "--repo", str(REPO_DIR), "--data-dir", str(data), "--request-log", str(requests)]
    assert main([*argv, "--max-mismatch-rate", "1"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("amount_count_15m "))
    assert "mismatches       2 / 2" in line and "1 of them served with a status saying why (FUTURE_EVENTS 1)" in line, (
        out
    )
    assert "served 123456 (FUTURE_EVENTS), offline " in out, out


def test_a_request_log_directory_that_does_not_exist_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mistyped path in a CI gate must not pass without checking anything.
    missing = tmp_path / "nonexist"
    argv = ["consistency-check", "--repo", str(REPO_DIR), "--data-dir", str(tmp_path), "--request-log", str(missing)]
    assert main(argv) not in (0, None)
    err = capsys.readouterr().err
    assert f"request log directory {missing} does not exist: nothing to check" in err, err

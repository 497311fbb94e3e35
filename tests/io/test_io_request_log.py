"""The request log (engine/io/request_log.py): rows are published once old, also on a
quiet server, and rows a publish could not write are kept for the next one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.io.request_log import RequestLogger, read_request_log

T_END = 1_767_225_600_000


def test_the_request_log_publishes_old_rows_without_a_later_request(tmp_path: Path) -> None:
    log = RequestLogger(tmp_path / "requests", max_age_s=0.2)
    try:
        log.record("fraud_scoring", [T_END], {"user_id": ["u1"]}, {"amount": [1.0]}, [{"amount_count_15m": 3}])
        deadline = time.monotonic() + 10
        while not read_request_log(tmp_path / "requests").num_rows and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_request_log(tmp_path / "requests").num_rows == 1
    finally:
        log.close()


def test_the_request_log_keeps_rows_it_could_not_publish(tmp_path: Path) -> None:
    blocked = tmp_path / "requests"
    blocked.write_text("a file where the directory should be")
    log = RequestLogger(blocked, max_age_s=60)
    log.record("fraud_scoring", [T_END], {"user_id": ["u1"]}, {"amount": [1.0]}, [{"amount_count_15m": 3}])
    with pytest.raises(OSError):
        log.flush()
    blocked.unlink()
    log.close()  # publishes the kept row
    table = read_request_log(blocked)
    assert table.num_rows == 1 and table.column("service").to_pylist() == ["fraud_scoring"]

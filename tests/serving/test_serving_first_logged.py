"""The first logged event time is read from the log files again only when the files of
the earliest log date changed (published files are never rewritten)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import serving.history as history_module
from serving.history import HistoricalReads


class FakeLog:
    """The log's file listing and first-event reads, counted."""

    def __init__(self) -> None:
        self.paths = [
            "/log/view=v/fp=ab/date=2026-01-02/part-a.parquet",
            "/log/view=v/fp=ab/date=2026-01-03/part-b.parquet",
        ]
        self.first = 1_000
        self.reads = 0
        self.publish_during_read: str | None = None

    def list_log_files(self, root: str, name: str, fingerprint_hex: str) -> tuple[None, list[str]]:
        return None, list(self.paths)

    def first_event_time(self, root: str, name: str, fingerprint_hex: str) -> int:
        self.reads += 1
        if self.publish_during_read is not None:
            self.paths.append(self.publish_during_read)
            self.publish_during_read = None
        return self.first


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    fake = FakeLog()
    monkeypatch.setattr(history_module, "list_log_files", fake.list_log_files)
    monkeypatch.setattr(history_module, "first_event_time", fake.first_event_time)
    return fake


def _view() -> Any:
    return SimpleNamespace(name="v", definition=SimpleNamespace(offline=True, name="v", fingerprint_hex="ab"))


def test_files_read_again_only_when_the_first_dates_files_change(log: FakeLog) -> None:
    reads = HistoricalReads(online=None, log_root="/log", first_ttl_s=0.0)  # type: ignore[arg-type]
    view = _view()
    assert reads.first_logged(view) == 1_000 and log.reads == 1
    assert reads.first_logged(view) == 1_000 and log.reads == 1  # same files: not read
    log.paths.append("/log/view=v/fp=ab/date=2026-01-03/part-c.parquet")  # a later date only
    assert reads.first_logged(view) == 1_000 and log.reads == 1
    log.paths.append("/log/view=v/fp=ab/date=2026-01-02/part-d.parquet")  # a late event's file
    log.first = 900
    assert reads.first_logged(view) == 900 and log.reads == 2
    log.paths = [p for p in log.paths if "2026-01-02" not in p]  # the first date removed
    log.first = 2_000
    assert reads.first_logged(view) == 2_000 and log.reads == 3


def test_a_publish_during_the_read_is_not_remembered(log: FakeLog) -> None:
    reads = HistoricalReads(online=None, log_root="/log", first_ttl_s=0.0)  # type: ignore[arg-type]
    view = _view()
    log.publish_during_read = "/log/view=v/fp=ab/date=2026-01-02/part-e.parquet"
    assert reads.first_logged(view) == 1_000 and log.reads == 1
    assert reads.first_logged(view) == 1_000 and log.reads == 2  # read again: the files moved under it
    assert reads.first_logged(view) == 1_000 and log.reads == 2

"""A restore interrupted by the broker is retried with a bounded backoff, reported, and
given up loudly after the last delay; an error a retry cannot fix is raised at once
(engine/state/restore_retry.py). The owner record carries the retries to status."""

from __future__ import annotations

import logging

import pytest

from engine.state.exceptions import ChangelogError, ChangelogUnavailable
from engine.state.progress import ShardOwner, _unpack_owner, owner_record
from engine.state.restore_retry import RESTORE_RETRY_DELAYS_S, with_restore_retries


class _Flaky:
    """Fails ``failures`` times with ``error``, then returns "restored"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[int, str]] = []

    def __call__(self, retries: int, last_error: str) -> str:
        self.calls.append((retries, last_error))
        if len(self.calls) <= self.failures:
            raise self.error
        return "restored"


def test_an_outage_is_retried_after_each_delay_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    flaky = _Flaky(2, ChangelogUnavailable("broker down"))
    with caplog.at_level(logging.WARNING, logger="streamfeat.restore"):
        assert with_restore_retries(3, flaky, (1.0, 2.0, 4.0), slept.append) == "restored"
    assert slept == [1.0, 2.0]
    # each attempt knows how many came before and what stopped the last one
    assert flaky.calls == [(0, ""), (1, "broker down"), (2, "broker down")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("shard 3: restore interrupted" in w and "broker down" in w for w in warnings)
    assert "attempt 1 of 4" in warnings[0] and "retrying in 1 s" in warnings[0]


def test_the_backoff_is_bounded_and_the_last_error_names_shard_and_attempts() -> None:
    slept: list[float] = []
    flaky = _Flaky(100, ChangelogUnavailable("broker down"))
    with pytest.raises(ChangelogUnavailable) as info:
        with_restore_retries(1, flaky, (1.0, 2.0), slept.append)
    assert len(flaky.calls) == 3 and slept == [1.0, 2.0]
    assert "shard 1" in str(info.value) and "3 times" in str(info.value) and "broker down" in str(info.value)
    assert info.value.hint is not None and "resumes" in info.value.hint
    assert max(RESTORE_RETRY_DELAYS_S) <= 30 and sum(RESTORE_RETRY_DELAYS_S) <= 600


def test_an_error_a_retry_cannot_fix_is_raised_at_once() -> None:
    slept: list[float] = []
    flaky = _Flaky(1, ChangelogError("record without a key"))
    with pytest.raises(ChangelogError, match="record without a key"):
        with_restore_retries(0, flaky, (1.0,), slept.append)
    assert slept == [] and len(flaky.calls) == 1


def test_the_owner_record_carries_retries_and_reads_records_without_them() -> None:
    owner = ShardOwner("host-a pid 7", True, 1_780_000_000_000, 2, "broker down")
    _, value = owner_record(5, owner)
    assert _unpack_owner("t.changelog-progress", 0, value) == owner
    _, plain = owner_record(5, ShardOwner("host-a pid 7", False, 1_780_000_000_000))
    assert b"retries" not in plain  # the record of an uninterrupted restore stays as before
    assert _unpack_owner("t.changelog-progress", 0, plain) == ShardOwner("host-a pid 7", False, 1_780_000_000_000)
    with pytest.raises(ValueError, match="retries"):
        ShardOwner("host-a pid 7", True, 0, -1)

"""The freshness rule (engine/state/records.py): the lag counts from the newest applied
event, never later than the wall clock of the write; a view is stale when that lag
exceeds its expected_freshness, and an unknown freshness is never called stale."""

from __future__ import annotations

from engine.state.records import UNKNOWN_FRESHNESS, Freshness

MINUTE = 60_000


def test_stale_only_when_the_lag_exceeds_the_expected_freshness() -> None:
    fresh = Freshness(max_event_ts_ms=10 * MINUTE, written_at_ms=10 * MINUTE)
    assert fresh.lag_ms(15 * MINUTE) == 5 * MINUTE
    assert not fresh.is_stale(15 * MINUTE, 5 * MINUTE)  # exactly at the limit: not stale
    assert fresh.is_stale(15 * MINUTE + 1, 5 * MINUTE)


def test_a_future_dated_event_does_not_keep_a_stalled_view_fresh() -> None:
    ahead = Freshness(max_event_ts_ms=60 * MINUTE, written_at_ms=10 * MINUTE)
    assert ahead.lag_ms(20 * MINUTE) == 10 * MINUTE
    assert ahead.is_stale(20 * MINUTE, 5 * MINUTE)


def test_unknown_freshness_is_not_stale() -> None:
    assert UNKNOWN_FRESHNESS.lag_ms(10 * MINUTE) is None
    assert not UNKNOWN_FRESHNESS.is_stale(10 * MINUTE, 0)

"""EpochAlignment / EpochClock against a model of Bytewax's epoch rule (bytewax 0.21.1
src/inputs.rs): an input partition's epoch closes in the first activation whose start is
at least the epoch interval after its last close; the activation reads ``current_time``
first, then calls ``next_batch`` and ``next_awake``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.io.kafka_source import EpochAlignment, next_on_grid

ALIGN = EpochAlignment(period=timedelta(seconds=1), window=timedelta(milliseconds=40))
ORIGIN = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def _closes(start_offset_ms: int, seed: int, jitter_ms: int, delay_ms: int, busy: bool) -> list[datetime]:
    """Close times of one partition woken as the clock says (idle: a 40 ms wait)."""
    rng = random.Random(seed)
    true_start = ORIGIN + start_offset_ms * MS
    # Bytewax starts the first epoch a little before the partition (and its clock) exists.
    clock = ALIGN.clock(started=true_start + rng.uniform(0, 150) * MS)
    closes: list[datetime] = []
    wake: datetime | None = true_start
    now = true_start
    while now < ORIGIN + timedelta(seconds=60):
        at = now + MS if wake is None else max(wake, now + MS / 10)
        current = at + rng.uniform(0, jitter_ms) * MS  # Bytewax's current_time
        now = current + rng.uniform(0, delay_ms) * MS  # when next_awake reads the clock
        wanted = None if busy else next_on_grid(now, timedelta(milliseconds=40))
        wake = clock.wake(now, wanted)
        if current - true_start >= ALIGN.epoch_interval:
            true_start = current
            closes.append(current)
    return closes


@settings(max_examples=60, deadline=None)
@given(
    start_offset_ms=st.integers(0, 999),
    seed=st.integers(0, 2**32 - 1),
    jitter_ms=st.integers(0, 25),
    delay_ms=st.integers(0, 20),
    busy=st.booleans(),
)
# Found by CI: a first epoch that started 110-150 ms before the clock, so the clock's
# estimate of its end passed the mark while the true end came before it.
@example(start_offset_ms=0, seed=1195, jitter_ms=16, delay_ms=2, busy=True)
# Found by a thorough run: a close counted from when next_awake ran, 41 ms after its
# mark, so the next epoch's estimated end passed the next mark.
@example(start_offset_ms=0, seed=0, jitter_ms=23, delay_ms=19, busy=True)
def test_closes_come_to_the_whole_seconds_from_any_phase(
    start_offset_ms: int, seed: int, jitter_ms: int, delay_ms: int, busy: bool
) -> None:
    closes = _closes(start_offset_ms, seed, jitter_ms, delay_ms, busy)
    # The first close is held to a mark, the next ones stay on the marks.
    settled = closes[1:]
    assert len(settled) >= 55  # still about one close a second
    for c in settled:
        after_mark = (c - ORIGIN) % ALIGN.period
        assert after_mark <= (jitter_ms + delay_ms + 1) * MS, (c, after_mark)


def test_a_wake_that_would_close_early_is_held_to_the_mark() -> None:
    clock = ALIGN.clock(started=ORIGIN + 2 * MS - timedelta(seconds=1))
    assert clock.wake(ORIGIN + 2 * MS, ORIGIN + 40 * MS) == ORIGIN + 40 * MS  # closes the first epoch
    # Early in the epoch: wake-ups are left alone, "at once" too.
    assert clock.wake(ORIGIN + 500 * MS, ORIGIN + 540 * MS) == ORIGIN + 540 * MS
    assert clock.wake(ORIGIN + 500 * MS, None) is None
    # In the window before the mark: held to it.
    assert clock.wake(ORIGIN + 940 * MS, ORIGIN + 960 * MS) == ORIGIN + timedelta(seconds=1)
    assert clock.wake(ORIGIN + 950 * MS, None) == ORIGIN + timedelta(seconds=1)
    # The activation at the mark closes the epoch; the next one starts there.
    assert clock.wake(ORIGIN + 1001 * MS, ORIGIN + 1040 * MS) == ORIGIN + 1040 * MS
    assert clock.wake(ORIGIN + 1940 * MS, ORIGIN + 1960 * MS) == ORIGIN + timedelta(seconds=2)
    assert ALIGN.epoch_interval == 960 * MS


def test_a_first_epoch_estimated_just_past_a_mark_is_held_from_the_margin_on() -> None:
    # The clock believes the first epoch ends at 1.110 s; Bytewax's may end from 0.910 s on.
    clock = ALIGN.clock(started=ORIGIN + 150 * MS)
    assert clock.wake(ORIGIN + 900 * MS, None) is None  # before the first margin
    assert clock.wake(ORIGIN + 920 * MS, None) == ORIGIN + timedelta(seconds=2)
    assert clock.wake(ORIGIN + 990 * MS, ORIGIN + 1030 * MS) == ORIGIN + timedelta(seconds=2)
    # The activation at the mark closes the epoch for Bytewax and for the clock alike.
    assert clock.wake(ORIGIN + 2001 * MS, ORIGIN + 2040 * MS) == ORIGIN + 2040 * MS
    assert clock.wake(ORIGIN + 2950 * MS, None) == ORIGIN + timedelta(seconds=3)

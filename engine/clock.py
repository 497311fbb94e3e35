"""The wall clock, read one way everywhere: whole milliseconds since the Unix epoch.

Event times, ``as_of`` and freshness lags are all epoch milliseconds (docs/semantics.md);
reading the clock in the same unit and with the same rounding everywhere keeps a served
value's "now" comparable with the decoder's future bound and the status lag.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, from the system clock (integer arithmetic, no float)."""
    return time.time_ns() // 1_000_000

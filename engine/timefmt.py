"""How the command line reads and shows event times: UTC datetimes, never epoch integers.

>>> iso_utc(1767225600000)
'2026-01-01T00:00:00Z'
>>> iso_utc(1767225600123)
'2026-01-01T00:00:00.123Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.clock import wall_clock_ms
from engine.exceptions import ConfigError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_cli_time(text: str, flag: str) -> int:
    """A time flag's value -> epoch ms: ``now`` (whole seconds), or an ISO 8601 time with an
    explicit offset (``2026-01-01T00:00:00Z``), floored to the millisecond in integer maths.

    >>> parse_cli_time("2026-01-01T00:00:00.123Z", "--end")
    1767225600123
    """
    if text == "now":
        return wall_clock_ms() // 1000 * 1000
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: expected an ISO 8601 time like 2026-01-01T00:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(
            f"{flag}: {text!r} has no time zone offset",
            hint=f"add one, e.g. {text}Z for UTC; a time zone is never guessed",
        )
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def iso_utc(epoch_ms: int) -> str:
    """ISO 8601 in UTC with a ``Z``; milliseconds only when not zero."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    spec = "milliseconds" if epoch_ms % 1000 else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def duration_text(ms: int) -> str:
    """A duration the way windows are written: ``15m``, ``1h``, ``1d``, ``90s``, ``250ms``.

    >>> duration_text(900_000), duration_text(86_400_000), duration_text(1_500)
    ('15m', '1d', '1500ms')
    """
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"

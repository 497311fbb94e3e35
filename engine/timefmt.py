"""How event times are read from and shown as text: UTC datetimes, never guessed zones.

``iso_epoch_ms`` is the one ISO 8601 parser of the time contract (docs/semantics.md
section 1): the stream decoder, the Parquet-history backfill, the feature server's
``as_of`` and the command line's time flags all read times through it.

>>> iso_utc(1767225600000)
'2026-01-01T00:00:00Z'
>>> iso_utc(1767225600123)
'2026-01-01T00:00:00.123Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.clock import wall_clock_ms
from engine.exceptions import ConfigError, NaiveTimeError, NotIsoTimeError

#: "No event" time: minus infinity as int64, for newest/max event times of nothing yet. The one
#: copy: io, the kernel, the write path and serving all import it from here.
NO_EVENT_TS: int = -(2**63)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def iso_epoch_ms(text: str) -> int:
    """An ISO 8601 time with an explicit offset (``2026-01-01T00:00:00Z``) -> epoch ms,
    floored to the millisecond in integer maths (no float rounding of sub-milliseconds).

    Raises NotIsoTimeError (not ISO 8601; the message says why) or NaiveTimeError (no
    offset): the caller names its field and how to fix it.

    >>> iso_epoch_ms("2026-01-01T01:00:00.0009+01:00")
    1767225600000
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NotIsoTimeError(str(exc)) from None
    if moment.tzinfo is None:
        raise NaiveTimeError(f"{text!r} has no UTC offset", hint="add Z or +HH:MM; a time zone is never guessed")
    return (moment - _EPOCH) // _ONE_MS


def parse_cli_time(text: str, flag: str) -> int:
    """A time flag's value -> epoch ms: ``now`` (whole seconds), or an ISO 8601 time with an
    explicit offset (``2026-01-01T00:00:00Z``), floored to the millisecond in integer maths.

    >>> parse_cli_time("2026-01-01T00:00:00.123Z", "--end")
    1767225600123
    """
    if text == "now":
        return wall_clock_ms() // 1000 * 1000
    try:
        return iso_epoch_ms(text)
    except NotIsoTimeError:
        raise ConfigError(f"{flag}: expected an ISO 8601 time like 2026-01-01T00:00:00Z, got {text!r}") from None
    except NaiveTimeError:
        raise ConfigError(
            f"{flag}: {text!r} has no time zone offset",
            hint=f"add one, e.g. {text}Z for UTC; a time zone is never guessed",
        ) from None


def iso_utc(epoch_ms: int) -> str:
    """ISO 8601 in UTC with a ``Z``; milliseconds only when not zero."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    spec = "milliseconds" if epoch_ms % 1000 else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def time_text(epoch_ms: int) -> str:
    """An event time for a message: ISO 8601 UTC with the epoch milliseconds beside it,
    so it reads as a date and still matches the raw field and the CLI flags.

    >>> time_text(1_780_000_000_000), time_text(2**53)
    ('2026-05-28T20:26:40Z (1780000000000 ms)', '9007199254740992 ms')
    """
    try:
        return f"{iso_utc(epoch_ms)} ({epoch_ms} ms)"
    except (ValueError, OverflowError, OSError):  # beyond year 9999 (event times go to 2**53 ms)
        return f"{epoch_ms} ms"


def duration_text(ms: int) -> str:
    """A duration the way windows are written: ``15m``, ``1h``, ``1d``, ``90s``, ``250ms``.

    >>> duration_text(900_000), duration_text(86_400_000), duration_text(1_500)
    ('15m', '1d', '1500ms')
    """
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"

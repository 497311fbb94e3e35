"""How the command line shows event times: UTC datetimes, never epoch integers.

>>> iso_utc(1767225600000)
'2026-01-01T00:00:00Z'
>>> iso_utc(1767225600123)
'2026-01-01T00:00:00.123Z'
"""

from __future__ import annotations

from datetime import UTC, datetime


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

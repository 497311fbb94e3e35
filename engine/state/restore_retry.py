"""A shard restore interrupted by a broker outage is retried, with a bounded backoff.

A restore (engine/state/changelog.py) writes each batch of changelog records to RocksDB
together with the changelog position it reached, in one WriteBatch. An outage in the
middle (the read fails, or no record and no end of the partition arrive for a while:
:class:`~engine.state.exceptions.ChangelogUnavailable`) leaves the shard at the last
batch written; the next attempt resumes from there. Nothing uses the shard meanwhile:
its process opens it for the dataflow only once the restore has reached the
changelog's end, and its owner record says ``restoring`` (with the attempts so far and
what interrupted the last one) for ``streamfeat status`` and the dashboard.

Each interruption is logged as a warning (on the terminal of ``streamfeat run``). After
the last delay the error is raised with a hint: a restart resumes from the same point.
Errors that a retry cannot fix (a foreign record, a topic with another partition count)
are raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from engine.state.exceptions import ChangelogUnavailable

_LOG = logging.getLogger("streamfeat.restore")
T = TypeVar("T")

#: Seconds to wait before each retry: doubling to 30 s, about 8 minutes in all.
RESTORE_RETRY_DELAYS_S: tuple[float, ...] = (1, 2, 4, 8, 15, *([30] * 15))


def with_restore_retries(
    shard: int,
    attempt: Callable[[int, str], T],
    delays_s: tuple[float, ...] = RESTORE_RETRY_DELAYS_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt(retries_so_far, last_error)`` until it returns; after a
    :class:`ChangelogUnavailable`, wait the next delay and call it again."""
    last_error = ""
    for retries, delay in enumerate(delays_s):
        try:
            return attempt(retries, last_error)
        except ChangelogUnavailable as exc:
            last_error = str(exc)  # text only: the exception's frames hold the failed clients
            _LOG.warning(
                "shard %d: restore interrupted (attempt %d of %d): %s; retrying in %.0f s",
                shard,
                retries + 1,
                len(delays_s) + 1,
                last_error,
                delay,
            )
            sleep(delay)
    try:
        return attempt(len(delays_s), last_error)
    except ChangelogUnavailable as exc:
        raise ChangelogUnavailable(
            f"shard {shard}: the restore was interrupted {len(delays_s) + 1} times, the last time by: {exc}",
            hint="the shard keeps what it restored so far; restart once the broker answers, "
            "the restore resumes from there",
        ) from exc

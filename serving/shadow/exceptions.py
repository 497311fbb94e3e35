"""Errors of a shadow run's setup (bad flags, unreadable request or mapping files).

Failures of one request (a baseline that is down, slow or answers garbage) are not
errors: they are recorded in the report and the run continues.
"""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class ShadowSetupError(StreamfeatError):
    """The run cannot start: a flag, the requests file, the replay log or the mapping file is wrong."""

    exit_code = 2

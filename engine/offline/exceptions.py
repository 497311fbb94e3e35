"""Errors raised by the offline package (training sets, backfill, consistency checks)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.exceptions import StreamfeatError


class OfflineError(StreamfeatError):
    """Base class of offline errors."""


class TrainingSetError(OfflineError, ValueError):
    """A training set cannot be computed from these definitions or this log."""


class SpineValidationError(TrainingSetError):
    """The spine lacks columns or has rows that cannot be used.

    ``rows`` holds the 0-based row numbers of every offending row (never dropped
    silently); ``columns`` names the missing or offending columns.
    """

    def __init__(
        self,
        message: str,
        *,
        rows: Sequence[int] = (),
        columns: Sequence[str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.rows = tuple(rows)
        self.columns = tuple(columns)


class OnDemandComputationError(TrainingSetError):
    """An on-demand feature view's function failed or returned the wrong shape."""


class BackfillError(OfflineError):
    """A backfill cannot start or had to stop; nothing of the named file was written."""


class HistoryFileError(BackfillError):
    """A history file is unreadable or does not match the source schema."""

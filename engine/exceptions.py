"""Errors raised by the engine package.

Every error carries an optional ``hint`` (how to fix it) and the exit code the CLI
uses when it reaches the top level.
"""

from __future__ import annotations

from collections.abc import Sequence


class StreamfeatError(Exception):
    """Base class of every error streamfeat raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(StreamfeatError):
    """A setting, flag or environment variable is invalid."""

    exit_code = 2


class SettingsError(ConfigError):
    """One or more settings are invalid: the message lists every one, each with its fix
    (engine/config.py); ``problems`` holds them one by one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"invalid setting: {self.problems[0]}"
        else:
            message = f"{len(self.problems)} invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message, hint="fix each where it is given (the file, variable or flag named), then run again")


class KafkaBrokerError(StreamfeatError):
    """The local Kafka broker could not be obtained, started or stopped."""


class GenerateError(StreamfeatError):
    """Demo events could not be generated or delivered (for example, records not acknowledged)."""


class DataflowRunError(StreamfeatError):
    """The streaming dataflow stopped on an error that is not one of ours (details in its log)."""


class KafkaUnreachableError(StreamfeatError):
    """No Kafka broker answers at the configured address."""


class NotIsoTimeError(StreamfeatError, ValueError):
    """A time text is not ISO 8601 (engine.timefmt.iso_epoch_ms); callers name the field."""


class NaiveTimeError(StreamfeatError, ValueError):
    """An ISO 8601 time text has no UTC offset: a time zone is never guessed."""

"""Errors raised while compiling or running a dataflow."""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class DataflowConfigError(StreamfeatError):
    """The repo, plan or settings do not describe a runnable dataflow."""

    exit_code = 2


class ClusterSettingsError(DataflowConfigError):
    """The processes of one cluster were started with settings that must agree but do not."""

"""Errors of ``streamfeat import-feast``."""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class FeastImportError(StreamfeatError):
    """The Feast repo cannot be read, or the output cannot be written."""

    exit_code = 2

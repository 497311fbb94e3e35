"""Errors of ``streamfeat import-feast``."""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class FeastImportError(StreamfeatError):
    """The Feast repo cannot be read, or the output cannot be written."""

    exit_code = 2


class Untranslatable(Exception):
    """One Feast object cannot be translated; the message says why. Never leaves the
    translator: it lists the object in ``Translation.not_translated`` instead."""

"""Errors raised by the tile kernel.

Every error names the thing, the field, what was expected and what was received,
and carries a ``hint`` on how to fix it (see :class:`engine.exceptions.StreamfeatError`).
"""

from __future__ import annotations

from engine.exceptions import StreamfeatError


class KernelError(StreamfeatError):
    """Base class of every error the kernel raises on purpose."""


class KernelSpecError(KernelError, ValueError):
    """A view or aggregation spec handed to the kernel has an invalid value."""


class KernelSpecTypeError(KernelError, TypeError):
    """A view or aggregation spec handed to the kernel has a value of the wrong type."""


class KernelInputError(KernelError, ValueError):
    """Arrays handed to a kernel function have the wrong shape, dtype or order."""


class TileCodecError(KernelError, ValueError):
    """A packed tile record is truncated, corrupt or of an unsupported version."""

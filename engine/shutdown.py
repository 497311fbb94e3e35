"""A graceful stop of the streaming dataflow on Ctrl-C.

Bytewax turns a ``KeyboardInterrupt`` raised while it runs into a Rust panic with a
backtrace on stderr. Instead, the first SIGINT only sets :data:`STOP`; every source
partition then ends its stream (``StopIteration``), the dataflow finishes the batches
in flight and returns normally, with their offsets stored alongside the state. A
second SIGINT interrupts at once, as usual. SIGTERM is handled the same way.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if STOP.is_set():
        raise KeyboardInterrupt
    STOP.set()


def stop_gracefully_on_sigint() -> None:
    """Install the handler for SIGINT and SIGTERM (what a service manager sends to stop a
    process: the same graceful stop); call from the main thread before the dataflow starts."""
    STOP.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigint)


def stop_requested() -> bool:
    return STOP.is_set()

"""The C heap of a process that writes state: keep freed memory for the next allocation.

Every cycle of the write path allocates and frees buffers of hundreds of kilobytes to
megabytes (the joined stored records, their decoded arrays, the encoded records, the
RocksDB WriteBatch and memtable blocks). glibc's malloc serves an allocation above its
mmap threshold (128 KiB, raised only up to the size of the largest block freed so far)
with fresh pages and hands the top of its heap back to the kernel once 2x that much is
free there, so the next cycle's buffers fault their pages in again, one kernel fault
per 4 KiB page. Over a day of history (records of tens of kilobytes) that was about
3,200 faults per 20 ms cycle at 10k events/s (benchmarks/RESULTS.md, session 16).

:func:`keep_freed_memory` fixes both thresholds, so buffers up to ``MMAP_THRESHOLD``
come from the heap and up to ``TRIM_THRESHOLD`` of free heap top is kept for reuse. It
changes where memory comes from, never a value; on a C library without ``mallopt``
(not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Final

MMAP_THRESHOLD: Final = 16 * 2**20
TRIM_THRESHOLD: Final = 64 * 2**20
# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def keep_freed_memory() -> bool:
    """Set the process's malloc thresholds (see the module docstring); True when set."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on an unknown parameter or value.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

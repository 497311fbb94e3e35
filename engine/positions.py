"""An event's position in its topic as one integer: ``partition * 2**40 + offset``.

The time contract orders events by ``(event time, partition, offset)``
(docs/semantics.md section 2); the kernel stores the position as the float64 partial
``last_pos`` (exact below 2**53) and the Parquet log's reader sorts and deduplicates
rows by it. This module is the one definition both import: the kernel's checked
encoder is ``engine.kernel.layout.encode_positions``.
"""

from __future__ import annotations

POSITION_OFFSET_BITS = 40
#: ``position = partition * PARTITION_STRIDE + offset``.
PARTITION_STRIDE = 1 << POSITION_OFFSET_BITS
# float64 holds integers exactly below 2**53, so partitions must stay below 2**13.
MAX_PARTITION = 2 ** (53 - POSITION_OFFSET_BITS) - 1
MAX_OFFSET = PARTITION_STRIDE - 1

"""The HyperLogLog of ``count_distinct_approx`` (param ``precision`` p; docs/semantics.md
"Sketch functions").

Blob: the ``2**p`` registers (uint8), dense as ``uint8[2**p]``, or sparse as
``uint32 index[n]`` then ``uint8 rank[n]`` for the n non-zero registers when
``5 * n < 2**p`` (the two lengths never coincide). Registers merge by maximum, so any
order of merges gives the same registers, and each state has one canonical blob.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.kernel.blob_buffers import JoinedBlobs, group_bounds, lex_order, scatter, slices
from engine.kernel.exceptions import TileCodecError
from engine.kernel.sketch_slot import EMPTY_BLOB, Int64Array, Params, SketchSlot, UInt64Array, group_ids
from engine.kernel.value_hash import hash_values

HLL_MIN_PRECISION: Final = 4
HLL_MAX_PRECISION: Final = 18
HLL_DEFAULT_PRECISION: Final = 12


def leading_zeros64(x: UInt64Array) -> Int64Array:
    """Number of leading zero bits of each uint64 (64 for zero), from the binary
    exponents of its two 32-bit halves (each exact as a float64)."""
    x = np.asarray(x, dtype=np.uint64)
    high = _bit_lengths((x >> np.uint64(32)).astype(np.float64))
    low = _bit_lengths((x & np.uint64(0xFFFFFFFF)).astype(np.float64))
    return np.where(high > 0, 32 - high, 64 - low)


def _bit_lengths(whole: npt.NDArray[np.float64]) -> Int64Array:
    """The bit length of each whole number below 2**53 held as a float64 (0 for 0.0):
    its binary exponent plus one, read from the exponent field."""
    lengths: Int64Array = np.maximum((whole.view(np.int64) >> 52) - 1022, 0)
    return lengths


def hll_ranks(hashes: UInt64Array, precision: int) -> tuple[Int64Array, Int64Array]:
    """(register index, rank) of each hash: the top ``p`` bits pick the register, the
    rank is the position of the first 1 bit in the remaining ``64 - p`` bits (``64 - p + 1``
    when they are all zero)."""
    p = np.uint64(precision)
    index = (hashes >> np.uint64(64 - precision)).astype(np.int64)
    rest = hashes << p
    rank = np.minimum(leading_zeros64(rest) + 1, 64 - precision + 1)
    return index, rank


def _hll_blob(index: Int64Array, rank: Int64Array, m: int) -> bytes:
    """Canonical blob of the non-zero registers ``index`` (sorted) with ``rank``."""
    if not len(index):
        return EMPTY_BLOB
    if 5 * len(index) < m:
        return index.astype("<u4").tobytes() + rank.astype(np.uint8).tobytes()
    dense = np.zeros(m, dtype=np.uint8)
    dense[index] = rank
    return dense.tobytes()


def _hll_blobs(index: Int64Array, rank: Int64Array, groups: Int64Array, n_groups: int, m: int) -> list[bytes]:
    """The canonical blob of each group from (register, rank) pairs in any order: the
    greatest rank of each (group, register); the sparse blobs laid out in one byte
    buffer with array scatters and sliced once, the dense ones (rare) one by one."""
    order = lex_order((rank, index, groups))
    index, rank, groups = index[order], rank[order], groups[order]
    last = np.ones(len(index), dtype=bool)  # the greatest rank of each (group, register)
    last[:-1] = (index[1:] != index[:-1]) | (groups[1:] != groups[:-1])
    index, rank, groups = index[last], rank[last], groups[last]
    bounds = group_bounds(groups, n_groups)
    count = np.diff(bounds)
    dense = 5 * count >= m
    sizes = np.where(dense, 0, 5 * count)
    blob_end = np.cumsum(sizes)
    blob_begin = blob_end - sizes
    sparse = ~dense[groups]
    g, j = groups[sparse], np.flatnonzero(sparse) - bounds[groups[sparse]]
    buf = np.zeros(int(blob_end[-1]) if n_groups else 0, dtype=np.uint8)
    scatter(buf, blob_begin[g] + 4 * j, index[sparse].astype("<u4"), 4)
    buf[blob_begin[g] + 4 * count[g] + j] = rank[sparse].astype(np.uint8)
    out = slices(buf.tobytes(), blob_begin, blob_end)
    for group in np.flatnonzero(dense).tolist():
        a, b = int(bounds[group]), int(bounds[group + 1])
        out[group] = _hll_blob(index[a:b], rank[a:b], m)
    return out


def hll_registers(blob: bytes, precision: int) -> npt.NDArray[np.uint8]:
    m = 1 << precision
    dense = np.zeros(m, dtype=np.uint8)
    if len(blob) == m:
        dense[:] = np.frombuffer(blob, dtype=np.uint8)
    elif len(blob) % 5 == 0 and 5 * (len(blob) // 5) < m:
        n = len(blob) // 5
        index = np.frombuffer(blob, dtype="<u4", count=n).astype(np.int64)
        dense[index] = np.frombuffer(blob, dtype=np.uint8, offset=4 * n)
    else:
        _raise_length(blob, precision)
    return dense


def _raise_length(blob: bytes, precision: int) -> None:
    m = 1 << precision
    raise TileCodecError(
        f"hll blob (precision {precision}): length: expected {m} bytes (dense) or 5*n < {m} (sparse), got {len(blob)}",
        hint="the stored value is corrupt, or the precision changed without a new fingerprint",
    )


def hll_estimate(registers: npt.NDArray[np.uint8]) -> float:
    """The HyperLogLog estimate with linear counting for small cardinalities:
    ``E = alpha_m * m**2 / sum(2**-M[j])``; when ``E <= 2.5 * m`` and some register is
    zero, ``m * ln(m / zeros)``. (64-bit hashes need no large-range correction.)"""
    m = len(registers)
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1 + 1.079 / m))
    raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return raw


def _register_pairs(
    blobs: Sequence[bytes], groups: Int64Array, precision: int
) -> tuple[Int64Array, Int64Array, Int64Array]:
    """(register, rank, group) of every non-zero register of every blob: sparse blobs
    read with array gathers over the joined bytes, dense ones (rare) one by one."""
    m = 1 << precision
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    is_dense = lengths == m
    is_sparse = (lengths % 5 == 0) & (lengths < m) & (lengths > 0)
    bad = (lengths > 0) & ~is_dense & ~is_sparse
    if bool(bad.any()):
        _raise_length(blobs[int(np.flatnonzero(bad)[0])], precision)
    parts: list[tuple[Int64Array, Int64Array, Int64Array]] = []
    for i in np.flatnonzero(is_dense).tolist():  # dense blobs are rare: one by one
        registers = np.frombuffer(blobs[i], dtype=np.uint8)
        index = np.flatnonzero(registers).astype(np.int64)
        parts.append((index, registers[index].astype(np.int64), np.full(len(index), groups[i], dtype=np.int64)))
    sparse = list(compress(blobs, is_sparse.tolist()))
    sparse_groups = np.asarray(groups, dtype=np.int64)[is_sparse]
    joined = JoinedBlobs.of(sparse)
    n = joined.lengths // 5
    of_entry = np.repeat(np.arange(len(sparse), dtype=np.int64), n)
    j = np.arange(len(of_entry), dtype=np.int64) - (np.cumsum(n) - n)[of_entry]
    starts = joined.starts[of_entry]
    index = joined.words(starts + 4 * j, "<u4").astype(np.int64)
    rank = joined.buffer[starts + 4 * n[of_entry] + j].astype(np.int64)
    parts.append((index, rank, sparse_groups[of_entry]))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


@dataclass(frozen=True)
class HyperLogLog:
    name: str = "hll"
    # Up to this many pairs are merged one by one (SketchKind.pairwise_merges): measured crossover.
    pairwise_merges: int = 2

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        precision = int(slot.param("precision"))
        index, rank = hll_ranks(hash_values(values), precision)
        return _hll_blobs(index, rank, group_ids(starts, len(index)), len(starts), 1 << precision)

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        precision = int(slot.param("precision"))
        merged = np.maximum(hll_registers(a, precision), hll_registers(b, precision))
        index = np.flatnonzero(merged).astype(np.int64)
        return _hll_blob(index, merged[index].astype(np.int64), 1 << precision)

    def merge_groups(self, slot: SketchSlot, blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
        precision = int(slot.param("precision"))
        index, rank, of_register = _register_pairs(blobs, groups, precision)
        return _hll_blobs(index, rank, of_register, n_groups, 1 << precision)

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> int:
        if not blob:
            return 0
        return round(hll_estimate(hll_registers(blob, int(slot.param("precision")))))


HYPERLOGLOG: Final = HyperLogLog()

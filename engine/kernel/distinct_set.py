"""The exact distinct set of ``count_distinct`` (param ``max_distinct`` B;
docs/semantics.md "Sketch functions").

Blob: the sorted distinct 64-bit value hashes, ``uint64[n]`` little endian; more than B
of them is the one byte ``b"\\xff"`` (over the bound: merging it with anything stays
over). Equal states are equal bytes, so any order of merges gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.kernel.blob_buffers import first_of_runs, group_bounds, slices
from engine.kernel.exceptions import TileCodecError
from engine.kernel.sketch_slot import Int64Array, Params, SketchSlot, UInt64Array, group_ids
from engine.kernel.value_hash import hash_values

#: count_distinct's largest allowed max_distinct (docs/semantics.md).
MAX_DISTINCT_LIMIT: Final = 10_000

OVERFLOW_BLOB: Final = b"\xff"


class OverBound:
    """The value of an exact ``count_distinct`` whose window holds more than its bound."""

    _instance: OverBound | None = None

    def __new__(cls) -> OverBound:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OVER_BOUND"


OVER_BOUND: Final = OverBound()


@dataclass(frozen=True)
class DistinctSet:
    name: str = "distinct_set"
    # Up to this many pairs are merged one by one (SketchKind.pairwise_merges): measured crossover.
    pairwise_merges: int = 1

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        hashes = hash_values(values)
        return _sets_of(hashes, group_ids(starts, len(hashes)), len(starts), int(slot.param("max_distinct")))

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        if a == OVERFLOW_BLOB or b == OVERFLOW_BLOB:
            return OVERFLOW_BLOB
        union = np.union1d(_hashes(a), _hashes(b))
        return _distinct_blob(union, int(slot.param("max_distinct")))

    def merge_groups(self, slot: SketchSlot, blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
        """All groups' unions in one sort: every stored hash tagged with its group,
        sorted and deduplicated once; a group holding an over-bound blob stays over."""
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
        # b"\xff" is the only blob of one byte: a set's blob is a multiple of 8 bytes.
        over_blob = lengths == len(OVERFLOW_BLOB)
        over_blob[over_blob] = [blobs[i] == OVERFLOW_BLOB for i in np.flatnonzero(over_blob).tolist()]
        kept = (lengths > 0) & ~over_blob
        bad = kept & (lengths % 8 != 0)
        if bool(bad.any()):
            _hashes(blobs[int(np.flatnonzero(bad)[0])])  # raises the codec error naming the length
        over = np.zeros(n_groups, dtype=bool)
        over[groups[over_blob]] = True
        hashes = np.frombuffer(b"".join(compress(blobs, kept.tolist())), dtype="<u8").astype(np.uint64)
        of_hash = np.repeat(np.asarray(groups, dtype=np.int64)[kept], lengths[kept] // 8)
        out = _sets_of(hashes, of_hash, n_groups, int(slot.param("max_distinct")))
        for group in np.flatnonzero(over).tolist():
            out[group] = OVERFLOW_BLOB
        return out

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> int | OverBound:
        if blob == OVERFLOW_BLOB:
            return OVER_BOUND
        return len(blob) // 8


def _sets_of(hashes: UInt64Array, groups: Int64Array, n_groups: int, bound: int) -> list[bytes]:
    """The canonical blob of each group's distinct ``hashes`` (in any order); ``b""``
    for a group without hashes."""
    h, g = _by_group_and_hash(hashes, groups)
    keep = first_of_runs(h.view(np.int64), g)
    h, g = h[keep], g[keep]
    bounds = group_bounds(g, n_groups)
    begins, ends = bounds[:-1], bounds[1:]
    out = slices(h.astype("<u8", copy=False).tobytes(), 8 * begins, 8 * ends)
    for group in np.flatnonzero(ends - begins > bound).tolist():
        out[group] = OVERFLOW_BLOB
    return out


def _by_group_and_hash(hashes: UInt64Array, groups: Int64Array) -> tuple[UInt64Array, Int64Array]:
    """``hashes`` and ``groups`` sorted by (group, hash), as ``np.lexsort((hashes,
    groups))`` orders them: one argsort of the group above the hash's top
    bits (several times faster than lexsort's two stable passes). Rows equal in that
    key are equal rows unless two hashes differ only in their lowest bits, which
    takes lexsort; the order of equal rows cannot show."""
    if len(hashes) < 2:
        return hashes, groups
    lo = int(groups.min())
    bits = (int(groups.max()) - lo).bit_length()
    key = hashes
    if bits:
        key = ((groups - lo).astype(np.uint64) << np.uint64(64 - bits)) | (hashes >> np.uint64(bits))
    order = np.argsort(key, kind="stable")
    h, g, sorted_key = hashes[order], groups[order], key[order]
    tied = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    if len(tied) and bool((h[tied] != h[tied + 1]).any()):
        order = np.lexsort((hashes, groups))
        h, g = hashes[order], groups[order]
    return h, g


def _distinct_blob(sorted_hashes: UInt64Array, bound: int) -> bytes:
    if len(sorted_hashes) > bound:
        return OVERFLOW_BLOB
    return sorted_hashes.astype("<u8", copy=False).tobytes()


def _hashes(blob: bytes) -> UInt64Array:
    if len(blob) % 8:
        raise TileCodecError(
            f"distinct_set blob: length: expected a multiple of 8 bytes, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)


DISTINCT_SET: Final = DistinctSet()

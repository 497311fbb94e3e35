"""The sketch section's batch operations: build, merge and window-merge blobs of many
rows at once, through the registered kinds (``engine/kernel/sketch_kinds.py``).

Every path (streaming apply, backfill, serving, training sets) goes through
:func:`build_sketches`, :func:`merge_blobs`, :func:`merge_rows` and
:func:`merge_window`, and each of them hands a kind all rows of a slot in one call
(``build`` / ``merge_groups``): one decode of every stored blob and one encode of every
result per batch, never a Python merge per pair of blobs. The slot, the kind protocol
and the value hash live in ``sketch_slot.py`` and ``value_hash.py`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError
from engine.kernel.sketch_kinds import SKETCH_KINDS
from engine.kernel.sketch_slot import (
    EMPTY_BLOB,
    BlobArray,
    Int64Array,
    Params,
    ParamValue,
    SketchKind,
    SketchSlot,
    UInt64Array,
    empty_blobs,
)
from engine.kernel.value_hash import canonical_bytes, hash_bytes, hash_values

__all__ = [
    "EMPTY_BLOB",
    "SKETCH_KINDS",
    "BlobArray",
    "Int64Array",
    "ParamValue",
    "Params",
    "SketchKind",
    "SketchSlot",
    "UInt64Array",
    "build_sketches",
    "canonical_bytes",
    "empty_blobs",
    "hash_bytes",
    "hash_values",
    "merge_blobs",
    "merge_rows",
    "merge_window",
]


def build_sketches(
    slots: Sequence[SketchSlot],
    raw_values: Mapping[str, npt.NDArray[np.generic]],
    order: npt.NDArray[np.intp],
    starts: Int64Array,
    event_ts: Int64Array,
    positions: Int64Array,
) -> BlobArray:
    """Blobs ``(groups, len(slots))`` of the groups ``starts`` over events taken in
    ``order`` (the permutation of :func:`engine.kernel.aggregate.group_order`)."""
    out = empty_blobs(len(starts), len(slots))
    if not len(starts):
        return out
    ts, pos = event_ts[order], positions[order]
    for j, slot in enumerate(slots):
        column = raw_values.get(slot.column)
        if column is None:
            raise KernelInputError(
                f"sketch slot '{slot.column}' ({slot.kind}): expected raw values of column "
                f"'{slot.column}', got only {sorted(raw_values)}",
                hint="routing carries raw values for every column a sketch slot reads",
            )
        out[:, j] = slot.implementation.build(slot, np.asarray(column)[order], ts, pos, starts)
    return out


def merge_blobs(slots: Sequence[SketchSlot], a: BlobArray, b: BlobArray) -> BlobArray:
    """Row-wise merge of two ``(rows, len(slots))`` blob arrays: the bytes of
    :func:`merge_rows` over both arrays with row ``i`` of each in group ``i``, read as
    pairs (a batch's tiles shared with the stored record) without its grouping steps."""
    if a.shape != b.shape or a.shape[1:] != (len(slots),):
        raise KernelInputError(
            f"merge_blobs: expected two arrays of shape (rows, {len(slots)}), got {a.shape} and {b.shape}",
            hint="one blob per tile and slot",
        )
    rows = a.shape[0]
    out = empty_blobs(rows, len(slots))
    for j, slot in enumerate(slots):
        left, right = a[:, j].tolist(), b[:, j].tolist()
        both = [i for i, (x, y) in enumerate(zip(left, right, strict=True)) if x and y]
        column = [x or y for x, y in zip(left, right, strict=True)]  # one empty: the other as stored
        if both:
            merged = _merge_pairs(slot, [left[i] for i in both], [right[i] for i in both])
            for i, blob in zip(both, merged, strict=True):
                column[i] = blob
        out[:, j] = _object_column(column)
    return out


def _merge_pairs(slot: SketchSlot, left: list[bytes], right: list[bytes]) -> list[bytes]:
    """``merge(left[i], right[i])`` of each pair of non-empty blobs: one ``merge`` per
    pair up to the kind's ``pairwise_merges``, else one ``merge_groups`` over all (the
    same bytes; which is cheaper depends on the count)."""
    kind = slot.implementation
    if len(left) <= kind.pairwise_merges:
        return [kind.merge(slot, x, y) for x, y in zip(left, right, strict=True)]
    pairs = len(left)
    return kind.merge_groups(slot, left + right, np.tile(np.arange(pairs, dtype=np.int64), 2), pairs)


def _object_column(blobs: list[bytes]) -> BlobArray:
    """``blobs`` as a 1-d object array of the same ``bytes`` objects."""
    column = np.empty(len(blobs), dtype=object)
    column[:] = blobs
    return column


def merge_rows(slots: Sequence[SketchSlot], blobs: BlobArray, groups: Int64Array, n_groups: int) -> BlobArray:
    """``(n_groups, len(slots))``: row g merges every row ``i`` of ``blobs`` with
    ``groups[i] == g`` (any order gives the same bytes). A group with one non-empty
    blob keeps it as stored; the others go to their kind in one call per slot (pairs
    through :func:`_merge_pairs`)."""
    if blobs.ndim != 2 or blobs.shape[1] != len(slots) or len(groups) != blobs.shape[0]:
        raise KernelInputError(
            f"merge_rows: expected blobs of shape ({len(groups)}, {len(slots)}), got {blobs.shape}",
            hint="one group id per row of blobs",
        )
    out = empty_blobs(n_groups, len(slots))
    for j, slot in enumerate(slots):
        column = blobs[:, j].tolist()
        present = np.fromiter(map(bool, column), dtype=bool, count=len(column))
        rows = np.flatnonzero(present)
        per_group = np.bincount(groups[rows], minlength=n_groups)
        single = rows[per_group[groups[rows]] == 1]
        out[groups[single], j] = blobs[single, j]
        several = rows[per_group[groups[rows]] > 1]
        if not len(several):
            continue
        if bool((per_group[groups[several]] == 2).all()):
            pairs = several[np.argsort(groups[several], kind="stable")].reshape(-1, 2)
            targets = groups[pairs[:, 0]]
            merged = _merge_pairs(
                slot, [column[i] for i in pairs[:, 0].tolist()], [column[i] for i in pairs[:, 1].tolist()]
            )
        else:
            targets, dense = np.unique(groups[several], return_inverse=True)
            merged = slot.implementation.merge_groups(
                slot, [column[i] for i in several.tolist()], dense.reshape(-1).astype(np.int64), len(targets)
            )
        out[targets, j] = _object_column(merged)
    return out


def merge_window(slot: SketchSlot, blobs: Sequence[bytes]) -> bytes:
    """The merged blob of a window's tiles in one pass (any order gives the same bytes)."""
    present = [blob for blob in blobs if blob]
    if len(present) <= 1:
        return present[0] if present else EMPTY_BLOB
    return slot.implementation.merge_groups(slot, present, np.zeros(len(present), dtype=np.int64), 1)[0]

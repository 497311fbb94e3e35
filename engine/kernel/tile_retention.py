"""Tile retention: the retention cutoff, dropping expired tiles, and folding them into
one compacted partial for views with a lifetime window (docs/semantics.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import Float64Array, Int64Array, IntOrArray, as_int64_vector, merge_partials
from engine.kernel.exceptions import KernelInputError
from engine.kernel.layout import PartialLayout
from engine.kernel.sketches import BlobArray, merge_rows


def first_kept_tile(newest_ts: IntOrArray, retention_ms: int, interval_ms: int) -> IntOrArray:
    """The retention cutoff: the oldest tile id kept when the newest event is ``newest_ts``.

    Tile ``i`` ends at ``(i + 1) * interval_ms`` (exclusive) and is kept while
    ``newest_ts - end <= retention_ms`` (docs/semantics.md section 7): the smallest
    ``i`` with ``(i + 1) * interval_ms >= newest_ts - retention_ms``, in exact integer
    maths. Works element-wise on an int64 array of newest times.
    """
    oldest_allowed_end = newest_ts - retention_ms
    return -((-oldest_allowed_end) // interval_ms) - 1


def apply_retention(
    tiles: npt.ArrayLike,
    partials: npt.ArrayLike,
    newest_ts: int,
    retention_ms: int,
    interval_ms: int,
) -> tuple[Int64Array, Float64Array]:
    """Drop tiles whose end is more than ``retention_ms`` behind ``newest_ts`` (a view
    with a lifetime window folds them instead: :func:`fold_expired`).

    Tile ``i`` ends at ``(i + 1) * interval_ms`` (exclusive); it is kept while
    ``newest_ts - end <= retention_ms`` (docs/semantics.md section 7, where the view's
    retention is ``max window + allowed_lateness + interval``). ``tiles`` must be
    strictly increasing; the result is a slice (a view) of the inputs.
    """
    tile_ids = as_int64_vector("tiles", tiles)
    parts = np.asarray(partials, dtype=np.float64)
    if parts.ndim != 2 or parts.shape[0] != len(tile_ids):
        raise KernelInputError(
            f"kernel input 'partials': expected shape ({len(tile_ids)}, width), got {parts.shape}",
            hint="pass the partials that belong to the tiles, one row per tile",
        )
    if interval_ms <= 0 or retention_ms < 0:
        raise KernelInputError(
            f"apply_retention: expected interval_ms > 0 and retention_ms >= 0, "
            f"got interval_ms={interval_ms}, retention_ms={retention_ms}",
            hint="use ViewSpec.interval_ms and ViewSpec.retention_ms",
        )
    first_kept = first_kept_tile(int(newest_ts), int(retention_ms), int(interval_ms))
    lo = int(np.searchsorted(tile_ids, first_kept, side="left"))
    return tile_ids[lo:], parts[lo:]


@dataclass(frozen=True)
class FoldPlan:
    """Which rows :func:`fold_expired` folds: each entity's expired rows form one run."""

    rows: Int64Array  # the expired rows, ascending
    run_of_row: Int64Array  # the run (0 .. runs - 1) of each expired row
    starts: Int64Array  # first row of each run
    lengths: Int64Array  # rows in each run
    keep: npt.NDArray[np.bool_]  # rows left after folding: the not expired and each run's newest

    @property
    def newest_expired(self) -> Int64Array:
        """The row of each run that keeps the run's fold (its newest tile id)."""
        newest: Int64Array = self.starts + self.lengths - 1
        return newest


def fold_plan(codes: Int64Array, expired: npt.NDArray[np.bool_]) -> FoldPlan | None:
    """The runs of expired rows to fold (rows sorted by ``(code, tile)``, an entity's
    expired rows a prefix of its rows); None when no entity has two expired rows, so
    folding changes nothing."""
    rows = np.flatnonzero(expired)
    if len(rows) == 0:
        return None
    run_codes = codes[rows]
    starts = rows[np.flatnonzero(np.r_[True, run_codes[1:] != run_codes[:-1]])]
    lengths = np.diff(np.r_[np.searchsorted(rows, starts), len(rows)])
    if bool((lengths == 1).all()):
        return None
    keep = np.ones(len(codes), dtype=bool)
    keep[rows] = False
    keep[starts + lengths - 1] = True
    run_of_row = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    return FoldPlan(rows.astype(np.int64), run_of_row, starts.astype(np.int64), lengths.astype(np.int64), keep)


def fold_expired(
    layout: PartialLayout,
    codes: Int64Array,
    tiles: Int64Array,
    partials: Float64Array,
    expired: npt.NDArray[np.bool_],
    sketches: BlobArray | None = None,
) -> tuple[Int64Array, Int64Array, Float64Array, BlobArray | None]:
    """Fold each entity's expired tiles into one compacted partial (lifetime windows).

    Rows are sorted by ``(code, tile)`` and an entity's expired rows are a prefix of
    its rows (``tile < first kept``). They merge left to right in tile order (the
    compacted partial, always the oldest row, first) into one row kept under the
    newest expired tile id, so the result is the same whether the tiles expired in
    one trim or over many, and the tile ids stay strictly increasing. ``sketches``
    (``(rows, len(layout.sketch_slots))`` blobs, or None) fold the same way.
    """
    plan = fold_plan(codes, expired)
    if plan is None:
        return codes, tiles, partials, sketches
    starts, lengths = plan.starts, plan.lengths
    folded = partials[starts].copy()
    for j in range(1, int(lengths.max())):
        longer = lengths > j
        folded[longer] = merge_partials(layout, folded[longer], partials[starts[longer] + j])
    out = partials.copy()
    newest_expired = plan.newest_expired
    out[newest_expired] = folded
    keep = plan.keep
    out_blobs = None
    if sketches is not None:  # each entity's expired blobs merge in one pass (any order: the same bytes)
        out_blobs = sketches.copy()
        out_blobs[newest_expired] = merge_rows(layout.sketch_slots, sketches[plan.rows], plan.run_of_row, len(starts))
        out_blobs = out_blobs[keep]
    return codes[keep], tiles[keep], out[keep], out_blobs

"""The sketch and list kinds, registered, and the functions that read them
(docs/semantics.md "Sketch functions" and "List functions").

One module per kind owns its blob format: ``distinct_set`` (``count_distinct``),
``hyperloglog`` (``count_distinct_approx``), ``ddsketch`` (``percentile``, ``median``)
and ``value_lists`` (``last_n``, ``first_n``, ``last_distinct_n``). This module imports
them all, fills :data:`engine.kernel.sketch_slot.SKETCH_KINDS` once, and maps each
function to the slot its aggregation reads; nothing it imports imports it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from engine.kernel.ddsketch import (
    DDSKETCH,
    DDSKETCH_DEFAULT_ALPHA,
    DDSKETCH_MAX_ALPHA,
    DDSKETCH_MIN_ALPHA,
    MAX_BUCKETS,
    DDState,
    dd_decode,
    dd_encode,
    dd_merge_groups,
    dd_merge_many,
    dd_quantile,
)
from engine.kernel.distinct_set import DISTINCT_SET, MAX_DISTINCT_LIMIT, OVER_BOUND, OverBound
from engine.kernel.hyperloglog import (
    HLL_DEFAULT_PRECISION,
    HLL_MAX_PRECISION,
    HLL_MIN_PRECISION,
    HYPERLOGLOG,
    hll_estimate,
    hll_ranks,
    hll_registers,
)
from engine.kernel.sketch_slot import KIND_NAMES, SKETCH_KINDS, SketchKind, SketchSlot, SlotSource
from engine.kernel.value_hash import ListItem
from engine.kernel.value_lists import (
    LIST_SLOT_BUILDERS,
    NEWEST_DISTINCT,
    NEWEST_VALUES,
    OLDEST_VALUES,
)

__all__ = [
    "DDSKETCH",
    "DDSKETCH_DEFAULT_ALPHA",
    "DDSKETCH_MAX_ALPHA",
    "DDSKETCH_MIN_ALPHA",
    "DISTINCT_SET",
    "HLL_DEFAULT_PRECISION",
    "HLL_MAX_PRECISION",
    "HLL_MIN_PRECISION",
    "HYPERLOGLOG",
    "MAX_BUCKETS",
    "MAX_DISTINCT_LIMIT",
    "OVER_BOUND",
    "SKETCH_KINDS",
    "SLOT_BUILDERS",
    "DDState",
    "OverBound",
    "SketchValue",
    "dd_decode",
    "dd_encode",
    "dd_merge_groups",
    "dd_merge_many",
    "dd_quantile",
    "evaluate_blob",
    "hll_estimate",
    "hll_ranks",
    "hll_registers",
    "slot_for",
]

SketchValue = int | float | OverBound | list[ListItem] | None

_KINDS: Final[tuple[SketchKind, ...]] = (
    DISTINCT_SET,
    HYPERLOGLOG,
    DDSKETCH,
    NEWEST_VALUES,
    OLDEST_VALUES,
    NEWEST_DISTINCT,
)
if tuple(kind.name for kind in _KINDS) != KIND_NAMES:
    raise ImportError(
        f"sketch kinds: expected the kinds named {KIND_NAMES}, got {tuple(k.name for k in _KINDS)}",
        name=__name__,
    )
SKETCH_KINDS.update((kind.name, kind) for kind in _KINDS)


def _ddsketch_slot(agg: SlotSource) -> SketchSlot:
    return SketchSlot.of(agg.column, "ddsketch", alpha=float(agg.param("alpha") or DDSKETCH_DEFAULT_ALPHA))


#: Function -> the slot its aggregation reads.
SLOT_BUILDERS: Final[dict[str, Callable[[SlotSource], SketchSlot]]] = {
    **LIST_SLOT_BUILDERS,
    "count_distinct": lambda agg: SketchSlot.of(
        agg.column, "distinct_set", max_distinct=int(agg.param("max_distinct") or 0)
    ),
    "count_distinct_approx": lambda agg: SketchSlot.of(
        agg.column, "hll", precision=int(agg.param("precision") or HLL_DEFAULT_PRECISION)
    ),
    "percentile": _ddsketch_slot,
    "median": _ddsketch_slot,
}


def slot_for(agg: SlotSource) -> SketchSlot | None:
    builder = SLOT_BUILDERS.get(agg.function)
    return None if builder is None else builder(agg)


def evaluate_blob(agg: SlotSource, slot: SketchSlot, blob: bytes) -> SketchValue:
    """The value of ``agg`` over the merged blob of its window."""
    value = slot.implementation.evaluate(slot, agg.function, agg.params, blob)
    if value is None or isinstance(value, int | float | OverBound | list):
        return value
    raise TypeError(f"sketch kind {slot.kind!r} evaluated {agg.output_name!r} to {value!r}")

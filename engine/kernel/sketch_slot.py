"""Sketch slots and the kind protocol: the base of the variable-size partial section.

Aggregations whose state is not a handful of float64 fields (distinct counts,
quantile sketches, last-N lists) keep, per tile, one **blob** per **slot**. A slot is
one ``(column, kind, params)``; aggregations sharing it share the blob (for example
``count_distinct`` over 1 h and over 1 day). The packed tile record carries the blobs
in its versioned section (``engine/kernel/codec.py`` owns those bytes,
docs/architecture.md "Kernel").

A **kind** (:class:`SketchKind`) defines, for its slots:

- ``build``: the blob of each group of events (the events of one (entity, tile),
  or of one training-set window), from the events' raw column values;
- ``merge``: the blob of two blobs; associative, commutative and deterministic, so any
  grouping and order of merges gives the same bytes (online == backfill == training);
- ``merge_groups``: the merge of many blobs per group in one pass, the same bytes as
  ``merge`` applied pairwise in any order (the write path, retention folds and
  window evaluation use it; ``merge`` stays the reference);
- ``evaluate``: the aggregation's value over a merged blob.

``b""`` is every kind's empty state and the identity of ``merge``: a record written
before the section existed reads as empty blobs.

This module knows the kinds by name only (:data:`KIND_NAMES`); the kind modules
(``distinct_set``, ``hyperloglog``, ``ddsketch``, ``value_lists``) import it, and
``engine/kernel/sketch_kinds.py`` registers their instances (the package's import
does), so no module imports one that imports it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelSpecError, KernelSpecTypeError

Int64Array = npt.NDArray[np.int64]
UInt64Array = npt.NDArray[np.uint64]
#: Blobs of many rows: an object array of ``bytes``, shape ``(rows, n_slots)``.
BlobArray = npt.NDArray[np.object_]
ParamValue = int | float
Params = tuple[tuple[str, ParamValue], ...]

EMPTY_BLOB = b""

#: Every kind's registry name (the slot's ``kind``); engine/kernel/sketch_kinds.py
#: registers exactly these.
KIND_NAMES: Final = ("distinct_set", "hll", "ddsketch", "newest_values", "oldest_values", "newest_distinct")


@dataclass(frozen=True)
class SketchSlot:
    """One blob per tile: ``kind`` state over ``column``, with the kind's ``params``
    (sorted ``(name, value)`` pairs, part of the view's state meaning)."""

    column: str
    kind: str
    params: Params = ()

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise KernelSpecTypeError(
                f"SketchSlot: field 'column': expected a non-empty str, got {self.column!r}",
                hint="use the aggregated column's name",
            )
        if self.kind not in KIND_NAMES:
            raise KernelSpecError(
                f"SketchSlot '{self.column}': field 'kind': expected one of {sorted(KIND_NAMES)}, got {self.kind!r}",
                hint="add the kind's name to engine/kernel/sketch_slot.KIND_NAMES and register it in sketch_kinds",
            )
        if not isinstance(self.params, tuple) or list(self.params) != sorted(self.params):
            raise KernelSpecError(
                f"SketchSlot '{self.column}': field 'params': expected a sorted tuple of "
                f"(name, value) pairs, got {self.params!r}",
                hint="build slots with SketchSlot.of(column, kind, **params)",
            )

    @classmethod
    def of(cls, column: str, kind: str, **params: ParamValue) -> SketchSlot:
        return cls(column, kind, tuple(sorted(params.items())))

    def param(self, name: str) -> ParamValue:
        for key, value in self.params:
            if key == name:
                return value
        raise KernelSpecError(
            f"SketchSlot '{self.column}' ({self.kind}): param '{name}': expected it among "
            f"{[k for k, _ in self.params]}, got none",
            hint="the kind's slot_for builds every parameter it reads",
        )

    @property
    def implementation(self) -> SketchKind:
        return SKETCH_KINDS[self.kind]


class SketchKind(Protocol):
    """One kind of blob. Implementations are stateless singletons."""

    @property
    def name(self) -> str:
        """Registry key, stored nowhere (slots are derived from the view at every start)."""
        ...

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        """One blob per group. Events are sorted by group, then by ``(event_ts,
        position)``; group ``g`` is ``[starts[g], starts[g + 1])`` (the last group ends
        at ``len(values)``). ``values`` are the column's raw values (object array of
        ``str`` for string columns; numeric dtype otherwise)."""
        ...

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        """Associative, commutative, deterministic; ``b""`` is the identity."""
        ...

    def merge_groups(self, slot: SketchSlot, blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
        """One blob per group ``0 .. n_groups - 1``: the merge of the ``blobs[i]`` with
        ``groups[i] == g`` (any order), ``b""`` for a group without a non-empty blob."""
        ...

    @property
    def pairwise_merges(self) -> int:
        """Up to this many pairs of blobs (a small batch's tiles shared with the stored
        record), ``merge_rows`` calls ``merge`` once per pair instead of one
        ``merge_groups`` over all: the same bytes (see ``merge_groups``), and cheaper for
        so few, since ``merge_groups`` has a fixed cost of tens of numpy calls."""
        ...

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> object:
        """The value of aggregation ``function`` (with its ``params``) over the merged
        blob of a non-empty window."""
        ...


#: Name -> kind, filled once by engine/kernel/sketch_kinds.py (imported by the package).
SKETCH_KINDS: dict[str, SketchKind] = {}


def empty_blobs(rows: int, n_slots: int) -> BlobArray:
    out = np.empty((rows, n_slots), dtype=object)
    out.fill(EMPTY_BLOB)
    return out


def group_ids(starts: Int64Array, n: int) -> Int64Array:
    """The group of each of ``n`` sorted events, the groups starting at ``starts``."""
    lengths = np.diff(np.append(starts, n))
    return np.repeat(np.arange(len(starts), dtype=np.int64), lengths)


class SlotSource(Protocol):
    """What a slot builder reads of an aggregation (``engine.kernel.layout.AggregationSpec``)."""

    @property
    def output_name(self) -> str: ...
    @property
    def column(self) -> str: ...
    @property
    def function(self) -> str: ...
    @property
    def params(self) -> Params: ...
    def param(self, name: str) -> ParamValue | None: ...

"""The kernel's own view spec: what window evaluation needs to know about a view
(its tile interval, columns, aggregations and retention), derived once per view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from engine.kernel.exceptions import KernelSpecError, KernelSpecTypeError
from engine.kernel.layout import (
    FIRST_SEEN,
    LIFETIME_WINDOW_TILES,
    AggregationSpec,
    LayoutSource,
    PartialLayout,
    TypedAggregations,
    aggregation_specs,
    check_spec_int,
    sketch_slots_of,
)
from engine.kernel.sketch_slot import SketchSlot


class ViewLike(LayoutSource, TypedAggregations, Protocol):
    """What the kernel reads of a definitions ``StreamFeatureView``."""

    @property
    def interval_ms(self) -> int: ...
    @property
    def retention_ms(self) -> int: ...


@dataclass(frozen=True)
class ViewSpec:
    """What window evaluation needs to know about a ``StreamFeatureView``."""

    interval_ms: int
    columns: tuple[str, ...]
    aggregations: tuple[AggregationSpec, ...]
    retention_ms: int
    # Whether records carry first_ts; None: exactly when some aggregation is first_seen.
    # A projection keeps the full view's value, because its records are unchanged.
    tracks_first_event: bool | None = None
    # The record's sketch slots; None: those of the aggregations (a projection keeps
    # the full view's, because its records are unchanged).
    sketch_slots: tuple[SketchSlot, ...] | None = None
    layout: PartialLayout = field(init=False, repr=False, compare=False)
    # Per aggregation, in declared order: first field index and window length in tiles.
    field_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    window_tiles: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Per aggregation: index of its sketch slot in layout.sketch_slots, or None.
    sketch_index: tuple[int | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_spec_int("ViewSpec", "interval_ms", self.interval_ms, minimum=1)
        check_spec_int("ViewSpec", "retention_ms", self.retention_ms, minimum=0)
        if not isinstance(self.aggregations, tuple) or not all(
            isinstance(a, AggregationSpec) for a in self.aggregations
        ):
            raise KernelSpecTypeError(
                f"ViewSpec: field 'aggregations': expected a tuple of AggregationSpec, got {self.aggregations!r}",
                hint="build specs with ViewSpec.from_view(view)",
            )
        needs_first = any(a.function == FIRST_SEEN for a in self.aggregations)
        tracks = needs_first if self.tracks_first_event is None else self.tracks_first_event
        if needs_first and not tracks:
            raise KernelSpecError(
                "ViewSpec: field 'tracks_first_event': expected True for a view with first_seen, got False",
                hint="leave tracks_first_event as None to derive it from the aggregations",
            )
        needed = sketch_slots_of(self.aggregations)
        slots = needed if self.sketch_slots is None else self.sketch_slots
        missing = [slot for slot in needed if slot not in slots]
        if missing:
            raise KernelSpecError(
                f"ViewSpec: field 'sketch_slots': expected every slot the aggregations read, missing {missing!r}",
                hint="leave sketch_slots as None to derive them from the aggregations",
            )
        layout = PartialLayout(self.columns, tracks, slots)
        names = [a.output_name for a in self.aggregations]
        if len(set(names)) != len(names):
            raise KernelSpecError(
                f"ViewSpec: field 'aggregations': expected distinct output names, got {names!r}",
                hint="give aggregations of the same column and function distinct names",
            )
        tiles = []
        for agg in self.aggregations:
            if agg.window_ms is None:
                tiles.append(LIFETIME_WINDOW_TILES)
                continue
            if agg.window_ms % self.interval_ms:
                raise KernelSpecError(
                    f"AggregationSpec '{agg.output_name}': field 'window_ms': expected a "
                    f"multiple of interval_ms={self.interval_ms}, got {agg.window_ms}",
                    hint="every window is a whole number of tiles (docs/semantics.md section 2)",
                )
            tiles.append(agg.window_ms // self.interval_ms)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "field_offsets", tuple(layout.offset(a.column) for a in self.aggregations))
        object.__setattr__(self, "window_tiles", tuple(tiles))
        object.__setattr__(
            self,
            "sketch_index",
            tuple(None if (slot := a.sketch_slot) is None else slots.index(slot) for a in self.aggregations),
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(a.output_name for a in self.aggregations)

    @property
    def max_finite_window_tiles(self) -> int:
        """Longest finite window in tiles (0 when every window is lifetime)."""
        return max((w for w in self.window_tiles if w != LIFETIME_WINDOW_TILES), default=0)

    @property
    def has_lifetime_window(self) -> bool:
        """Whether retention must fold expired tiles into a compacted partial."""
        return LIFETIME_WINDOW_TILES in self.window_tiles

    def project(self, names: Iterable[str]) -> ViewSpec:
        """The same view evaluating only the aggregations named (in declared order).

        Records are unchanged (the layout depends on the columns alone), so a reader
        that needs a few of a view's features evaluates only those.

        >>> spec = ViewSpec(60_000, ("amount",), (
        ...     AggregationSpec("n_1h", "amount", "count", 3_600_000),
        ...     AggregationSpec("sum_1h", "amount", "sum", 3_600_000)), 86_400_000)
        >>> spec.project(["sum_1h"]).output_names
        ('sum_1h',)
        """
        wanted = set(names)
        unknown = sorted(wanted - set(self.output_names))
        if unknown:
            raise KernelSpecError(
                f"ViewSpec.project: expected aggregation names of this view, got unknown {unknown}",
                hint=f"the view's aggregations are {list(self.output_names)}",
            )
        kept = tuple(a for a in self.aggregations if a.output_name in wanted)
        return ViewSpec(
            self.interval_ms,
            self.columns,
            kept,
            self.retention_ms,
            self.layout.tracks_first_event,
            self.layout.sketch_slots,
        )

    @classmethod
    def from_view(cls, view: ViewLike) -> ViewSpec:
        """Copy what the kernel needs from a ``StreamFeatureView`` (duck typed)."""
        return cls(
            interval_ms=int(view.interval_ms),
            columns=tuple(view.columns),
            aggregations=aggregation_specs(view),
            retention_ms=int(view.retention_ms),
        )

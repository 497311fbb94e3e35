"""The variable-size partial section: per (tile, sketch slot) one byte blob.

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
- ``evaluate``: the aggregation's value over a merged blob.

``b""`` is every kind's empty state and the identity of ``merge``: a record written
before the section existed reads as empty blobs.

Kinds register themselves in :data:`SKETCH_KINDS` (``engine/kernel/sketch_kinds.py``
holds the distinct-count and quantile kinds); every path (streaming apply, backfill,
serving, training sets) goes through :func:`build_sketches`, :func:`merge_blobs`,
:func:`merge_window` and :meth:`SketchKind.evaluate`.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError, KernelSpecError, KernelSpecTypeError

Int64Array = npt.NDArray[np.int64]
UInt64Array = npt.NDArray[np.uint64]
#: Blobs of many rows: an object array of ``bytes``, shape ``(rows, n_slots)``.
BlobArray = npt.NDArray[np.object_]
ParamValue = int | float
Params = tuple[tuple[str, ParamValue], ...]

EMPTY_BLOB = b""


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
        if self.kind not in SKETCH_KINDS:
            _load_kinds()
        if self.kind not in SKETCH_KINDS:
            raise KernelSpecError(
                f"SketchSlot '{self.column}': field 'kind': expected one of {sorted(SKETCH_KINDS)}, got {self.kind!r}",
                hint="register the kind in engine/kernel/sketches.SKETCH_KINDS",
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

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> object:
        """The value of aggregation ``function`` (with its ``params``) over the merged
        blob of a non-empty window."""
        ...


SKETCH_KINDS: dict[str, SketchKind] = {}


def _load_kinds() -> None:
    """Import the modules whose import registers kinds (static imports: no dynamic
    code outside the repo loader). A new kinds module adds its import here."""
    from engine.kernel import sketch_kinds  # noqa: F401  (registers at import)


def register_kind(kind: SketchKind) -> SketchKind:
    """Add ``kind`` to :data:`SKETCH_KINDS` (module import time)."""
    SKETCH_KINDS[kind.name] = kind
    return kind


# -- deterministic hashing (docs/semantics.md "Sketch functions") ------------------------

_TAG_STR = b"s"
_TAG_INT = b"i"
_TAG_FLOAT = b"f"
_TAG_BOOL = b"b"
_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")


def canonical_bytes(value: object) -> bytes:
    """The canonical byte encoding of one decoded value: a type tag, then the value
    (UTF-8 for strings, little-endian int64 / float64, one byte for bools). ``-0.0``
    encodes as ``0.0``; NaN and infinities never reach the kernel (the decoder refuses
    them). ``1`` and ``"1"`` differ by their tag."""
    if isinstance(value, str):
        return _TAG_STR + value.encode("utf-8")
    if isinstance(value, bool | np.bool_):
        return _TAG_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, int | np.integer):
        return _TAG_INT + _INT64.pack(int(value))
    if isinstance(value, float | np.floating):
        return _TAG_FLOAT + _FLOAT64.pack(float(value) + 0.0)
    raise KernelInputError(
        f"sketch value: expected str, int, float or bool, got {type(value).__name__} {value!r}",
        hint="only schema field values can be hashed",
    )


def hash_bytes(data: bytes) -> int:
    """The fixed 64-bit hash: BLAKE2b with an 8-byte digest, read little endian."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def hash_values(values: npt.NDArray[np.generic]) -> UInt64Array:
    """The 64-bit hash of each value's canonical encoding; each distinct value is
    hashed once (``np.unique``), so a batch costs one BLAKE2b per distinct value."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64) + 0.0  # -0.0 and 0.0 are the same float
    try:
        uniques, inverse = np.unique(arr, return_inverse=True)
    except TypeError:  # values of several types cannot be sorted: hash each distinct one
        seen: dict[bytes, int] = {}
        hashed_rows = [
            seen.setdefault(b, hash_bytes(b)) if b not in seen else seen[b] for b in map(canonical_bytes, arr.tolist())
        ]
        return np.asarray(hashed_rows, dtype=np.uint64)
    if arr.dtype.kind == "b":
        encode = [_TAG_BOOL + (b"\x01" if v else b"\x00") for v in uniques.tolist()]
    elif arr.dtype.kind in "iu":
        encode = [_TAG_INT + _INT64.pack(v) for v in uniques.tolist()]
    elif arr.dtype.kind == "f":
        encode = [_TAG_FLOAT + _FLOAT64.pack(v) for v in uniques.tolist()]
    else:
        encode = [canonical_bytes(v) for v in uniques.tolist()]
    hashed = np.fromiter((hash_bytes(b) for b in encode), dtype=np.uint64, count=len(encode))
    return np.asarray(hashed[inverse.reshape(-1)], dtype=np.uint64)


# -- many rows of blobs ------------------------------------------------------------------


def empty_blobs(rows: int, n_slots: int) -> BlobArray:
    out = np.empty((rows, n_slots), dtype=object)
    out.fill(EMPTY_BLOB)
    return out


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
    """Row-wise merge of two ``(rows, len(slots))`` blob arrays."""
    if a.shape != b.shape or a.shape[1:] != (len(slots),):
        raise KernelInputError(
            f"merge_blobs: expected two arrays of shape (rows, {len(slots)}), got {a.shape} and {b.shape}",
            hint="one blob per tile and slot",
        )
    out = np.empty(a.shape, dtype=object)
    for j, slot in enumerate(slots):
        merge = slot.implementation.merge
        out[:, j] = [_merge_one(merge, slot, x, y) for x, y in zip(a[:, j], b[:, j], strict=True)]
    return out


def _merge_one(merge: object, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
    if not a:
        return b
    if not b:
        return a
    return merge(slot, a, b)  # type: ignore[operator, no-any-return]


def merge_window(slot: SketchSlot, blobs: Sequence[bytes]) -> bytes:
    """The merged blob of a window's tiles (any order gives the same bytes)."""
    merge_many = getattr(slot.implementation, "merge_many", None)
    if merge_many is not None:  # a kind that merges a whole window in one pass (DDSketch)
        return merge_many(slot, blobs)  # type: ignore[no-any-return]
    merge = slot.implementation.merge
    out = EMPTY_BLOB
    for blob in blobs:
        out = _merge_one(merge, slot, out, blob)
    return out


def check_finite_params(owner: str, **params: float) -> None:
    for name, value in params.items():
        if not math.isfinite(value):
            raise KernelSpecError(
                f"{owner}: param '{name}': expected a finite number, got {value!r}",
                hint="see docs/semantics.md 'Sketch functions' for the allowed ranges",
            )

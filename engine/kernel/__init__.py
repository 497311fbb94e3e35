"""The tile kernel: pure numpy tile maths shared by streaming, serving and offline.

See docs/semantics.md (the contract) and docs/architecture.md ("Kernel").
"""

from engine.kernel.aggregate import aggregate_batch, merge_partials, merge_tile_sets
from engine.kernel.codec import HEADER, RECORD_VERSION, decode_tiles, encode_tiles
from engine.kernel.exceptions import (
    KernelError,
    KernelInputError,
    KernelSpecError,
    KernelSpecTypeError,
    TileCodecError,
)
from engine.kernel.layout import FIELDS_PER_COLUMN, AggregationSpec, PartialLayout, encode_positions
from engine.kernel.tile_retention import apply_retention
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import WindowResult, evaluate
from engine.kernel.window_many import WindowBatch, evaluate_many

__all__ = [
    "FIELDS_PER_COLUMN",
    "HEADER",
    "RECORD_VERSION",
    "AggregationSpec",
    "KernelError",
    "KernelInputError",
    "KernelSpecError",
    "KernelSpecTypeError",
    "PartialLayout",
    "TileCodecError",
    "ViewSpec",
    "WindowBatch",
    "WindowResult",
    "aggregate_batch",
    "apply_retention",
    "decode_tiles",
    "encode_positions",
    "encode_tiles",
    "evaluate",
    "evaluate_many",
    "merge_partials",
    "merge_tile_sets",
]

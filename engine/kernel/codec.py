"""Packed tile record: the bytes stored per (view, entity) in RocksDB and Redis.

Layout (docs/architecture.md "State"), little endian::

    header  struct '<BBHIq'  version=1, flags=0, width, n_tiles, max_event_ts
    tiles   int64[n_tiles]
    partials float64[n_tiles * width]   (row-major, one row per tile)

The header is 16 bytes, so both arrays start 8-byte aligned and decode without
copying (``np.frombuffer``).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import as_int64_vector, check_sorted_tiles
from engine.kernel.exceptions import KernelInputError, TileCodecError

RECORD_VERSION = 1
HEADER = struct.Struct("<BBHIq")
_TILE_ID = struct.Struct("<q")
_MAX_WIDTH = 2**16 - 1
_MAX_TILES = 2**32 - 1


def encode_tiles(tiles: npt.ArrayLike, partials: npt.ArrayLike, max_event_ts: int) -> bytes:
    """Pack one entity's sorted tile ids, their partial rows and the max event time."""
    tile_ids = as_int64_vector("tiles", tiles)
    parts = np.asarray(partials, dtype=np.float64)
    if parts.ndim != 2 or parts.shape[0] != len(tile_ids):
        raise KernelInputError(
            f"encode_tiles: field 'partials': expected shape ({len(tile_ids)}, width), "
            f"got {parts.shape}",
            hint="one partial row per tile id",
        )
    width = parts.shape[1]
    if width > _MAX_WIDTH or len(tile_ids) > _MAX_TILES:
        raise KernelInputError(
            f"encode_tiles: expected width <= {_MAX_WIDTH} and n_tiles <= {_MAX_TILES}, "
            f"got width {width}, n_tiles {len(tile_ids)}",
            hint="the record header stores width as uint16 and n_tiles as uint32",
        )
    check_sorted_tiles("tiles", tile_ids)
    header = HEADER.pack(RECORD_VERSION, 0, width, len(tile_ids), int(max_event_ts))
    return b"".join(
        (
            header,
            tile_ids.astype("<i8", copy=False).tobytes(),
            parts.astype("<f8", copy=False).tobytes(),
        )
    )


def decode_tiles(
    buf: bytes | bytearray | memoryview, expected_width: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """Unpack a record into ``(tiles, partials, max_event_ts)`` without copying.

    The arrays are views of ``buf`` (read-only when ``buf`` is ``bytes``). Raises
    :class:`TileCodecError` naming expected and received sizes when the record is
    truncated or has trailing bytes, when its version or flags are unknown, when its
    width differs from ``expected_width`` (if given), or when its tile ids are not
    strictly increasing.
    """
    width, n_tiles, max_event_ts = check_header(buf, expected_width)
    tiles = np.frombuffer(buf, dtype="<i8", count=n_tiles, offset=HEADER.size)
    partials = np.frombuffer(
        buf, dtype="<f8", count=n_tiles * width, offset=HEADER.size + 8 * n_tiles
    ).reshape(n_tiles, width)
    if n_tiles > 1 and not bool(np.all(tiles[1:] > tiles[:-1])):
        bad = int(np.flatnonzero(tiles[1:] <= tiles[:-1])[0])
        raise TileCodecError(
            f"tile record: field 'tiles': expected strictly increasing ids, got "
            f"{int(tiles[bad])} then {int(tiles[bad + 1])} at index {bad}",
            hint="the stored value is corrupt",
        )
    return (
        tiles.astype(np.int64, copy=False),
        partials.astype(np.float64, copy=False),
        int(max_event_ts),
    )


def check_header(
    buf: bytes | bytearray | memoryview, expected_width: int | None = None
) -> tuple[int, int, int]:
    """``(width, n_tiles, max_event_ts)`` of a record after checking its header and total length.

    Raises the :class:`TileCodecError` of :func:`decode_tiles` for a truncated record,
    trailing bytes, an unknown version or flags, or a width other than ``expected_width``.
    """
    size = len(buf)
    if size < HEADER.size:
        raise TileCodecError(
            f"tile record: header: expected {HEADER.size} bytes, got {size}",
            hint="the stored value is truncated or is not a streamfeat tile record",
        )
    version, flags, width, n_tiles, max_event_ts = HEADER.unpack_from(buf, 0)
    if version != RECORD_VERSION:
        raise TileCodecError(
            f"tile record: field 'version': expected {RECORD_VERSION}, got {version}",
            hint="the state was written by another streamfeat version; rebuild it with a backfill",
        )
    if flags != 0:
        raise TileCodecError(
            f"tile record: field 'flags': expected 0, got {flags}",
            hint="unknown flags mean a newer record format or a corrupt value",
        )
    if expected_width is not None and width != expected_width:
        raise TileCodecError(
            f"tile record: field 'width': expected {expected_width}, got {width}",
            hint="the view's columns changed without a new fingerprint, or the value is corrupt",
        )
    expected = HEADER.size + 8 * n_tiles + 8 * n_tiles * width
    if size != expected:
        raise TileCodecError(
            f"tile record: length: expected {expected} bytes for {n_tiles} tiles of width "
            f"{width}, got {size}",
            hint="the stored value is truncated or corrupt",
        )
    return int(width), int(n_tiles), int(max_event_ts)


def tile_span(buf: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(first tile id, last tile id)`` of a record, read from its header and tile
    array only (retention sweeps look at every record); None for a record of no tiles."""
    n_tiles = HEADER.unpack_from(buf, 0)[3]
    if n_tiles == 0:
        return None
    first: int = _TILE_ID.unpack_from(buf, HEADER.size)[0]
    last: int = _TILE_ID.unpack_from(buf, HEADER.size + _TILE_ID.size * (n_tiles - 1))[0]
    return first, last

"""Packed tile record: the bytes stored per (view, entity) in RocksDB and Redis.

Layout (docs/architecture.md "State"), little endian::

    header  struct '<BBHIq'  version=1, flags, width, n_tiles, max_event_ts
    tiles   int64[n_tiles]
    partials float64[n_tiles * width]   (row-major, one row per tile)
    -- only when flags has FLAG_SKETCHES (bit 0): the sketch section --
    section header struct '<BBHI'  section_version=1, reserved=0, n_slots, blob_bytes
    lengths uint32[n_tiles * n_slots]    (row-major: tile, then slot), zero-padded to 8 bytes
    blobs   blob_bytes bytes             (the blobs in the order of lengths), zero-padded to 8 bytes

The header is 16 bytes, so both arrays start 8-byte aligned and decode without
copying (``np.frombuffer``); the section keeps every record a whole number of 8-byte
words. A record without the flag (every record written before the section existed,
and every record whose blobs are all empty) reads as empty blobs ``b""``: the empty
state of every sketch kind (``engine/kernel/sketch_slot.py``).

Hot and cold parts (docs/architecture.md "State"): an entity whose record grows past
``engine.view_merge.SPILL_ABOVE`` tiles is kept as two records of this format, a cold
one holding its older tiles and a hot one holding the newest, so a touch rewrites only
the hot one. Every cold tile id is below every hot tile id; the hot record's header has
``FLAG_COLD`` (bit 1), the cold record never has it and its ``max_event_ts`` is not
read. :func:`join_parts` gives the one record the two stand for, byte for byte what
:func:`encode_tiles` writes for the concatenated tiles (with the hot record's
``max_event_ts``); :func:`split_record` is its inverse. The decoders refuse
``FLAG_COLD`` as an unknown flag, so no reader can take a hot part for the whole record.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import IntOrArray, as_int64_vector, check_sorted_tiles
from engine.kernel.blob_buffers import runs
from engine.kernel.blob_rows import BlobRows
from engine.kernel.exceptions import KernelInputError, TileCodecError
from engine.kernel.sketch_slot import BlobArray, empty_blobs

RECORD_VERSION = 1
HEADER = struct.Struct("<BBHIq")
#: The same header as a numpy record type, for decoding many records' headers at once.
HEADER_DTYPE = np.dtype([("version", "u1"), ("flags", "u1"), ("width", "<u2"), ("n_tiles", "<u4"), ("max_ts", "<i8")])
FLAG_SKETCHES = 1
#: On a hot record only: the entity's older tiles are in its cold record.
FLAG_COLD = 2
SECTION_VERSION = 1
SECTION_HEADER = struct.Struct("<BBHI")
_MAX_SLOTS = 2**16 - 1
_MAX_BLOB_BYTES = 2**32 - 1
_TILE_ID = struct.Struct("<q")
_MAX_WIDTH = 2**16 - 1
_MAX_TILES = 2**32 - 1
_ZEROS = bytes(8)


def partials_offset(n_tiles: IntOrArray) -> IntOrArray:
    """Byte offset of a record's partials (after the header and ``n_tiles`` tile ids);
    element-wise on an int64 array of tile counts."""
    return HEADER.size + 8 * n_tiles


def section_offset(n_tiles: IntOrArray, width: int) -> IntOrArray:
    """Byte offset of a record's sketch section: the size of a record without one."""
    return HEADER.size + 8 * n_tiles * (1 + width)


def encode_tiles(
    tiles: npt.ArrayLike,
    partials: npt.ArrayLike,
    max_event_ts: int,
    sketches: BlobArray | None = None,
) -> bytes:
    """Pack one entity's sorted tile ids, their partial rows, the max event time and,
    when given, its sketch blobs (``(n_tiles, n_slots)`` object array of bytes; the
    section is written only when some blob is not empty)."""
    tile_ids = as_int64_vector("tiles", tiles)
    parts = np.asarray(partials, dtype=np.float64)
    if parts.ndim != 2 or parts.shape[0] != len(tile_ids):
        raise KernelInputError(
            f"encode_tiles: field 'partials': expected shape ({len(tile_ids)}, width), got {parts.shape}",
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
    section = b"" if sketches is None else encode_section(sketches, len(tile_ids))
    flags = FLAG_SKETCHES if section else 0
    header = HEADER.pack(RECORD_VERSION, flags, width, len(tile_ids), int(max_event_ts))
    return b"".join(
        (
            header,
            tile_ids.astype("<i8", copy=False).tobytes(),
            parts.astype("<f8", copy=False).tobytes(),
            section,
        )
    )


def _pad8(n: int) -> int:
    return -n % 8


def encode_section(sketches: BlobArray, n_tiles: int) -> bytes:
    """The sketch section of ``n_tiles`` rows of blobs; ``b""`` when every blob is empty."""
    blobs = np.asarray(sketches, dtype=object)
    if blobs.ndim != 2 or blobs.shape[0] != n_tiles:
        raise KernelInputError(
            f"encode_tiles: field 'sketches': expected shape ({n_tiles}, n_slots), got {blobs.shape}",
            hint="one blob per tile and sketch slot (engine/kernel/sketches.py)",
        )
    flat = blobs.reshape(-1).tolist()
    if not any(flat):
        return b""
    n_slots = blobs.shape[1]
    lengths = np.fromiter((len(b) for b in flat), dtype=np.int64, count=len(flat))
    total = int(lengths.sum())
    if n_slots > _MAX_SLOTS or total > _MAX_BLOB_BYTES:
        raise KernelInputError(
            f"encode_tiles: sketch section: expected n_slots <= {_MAX_SLOTS} and blob bytes "
            f"<= {_MAX_BLOB_BYTES}, got {n_slots} slots, {total} bytes",
            hint="sketch states are bounded by their kinds' parameters",
        )
    length_bytes = lengths.astype("<u4").tobytes()
    return b"".join(
        (
            SECTION_HEADER.pack(SECTION_VERSION, 0, n_slots, total),
            length_bytes,
            bytes(_pad8(len(length_bytes))),
            *flat,
            bytes(_pad8(total)),
        )
    )


def section_slots(buf: bytes | bytearray | memoryview) -> int:
    """Number of sketch slots a record's section holds (0 without a section)."""
    width, n_tiles, _ = check_header(buf)
    if not HEADER.unpack_from(buf, 0)[1] & FLAG_SKETCHES:
        return 0
    slots: int = SECTION_HEADER.unpack_from(buf, section_offset(n_tiles, width))[2]
    return slots


def decode_sketches(buf: bytes | bytearray | memoryview, n_slots: int) -> BlobArray:
    """The ``(n_tiles, n_slots)`` blobs of a record (checked like :func:`decode_tiles`);
    empty blobs for a record without a sketch section."""
    width, n_tiles, _ = check_header(buf)
    flags = HEADER.unpack_from(buf, 0)[1]
    if not flags & FLAG_SKETCHES:
        return empty_blobs(n_tiles, n_slots)
    at = section_offset(n_tiles, width)
    _, _, stored_slots, total = SECTION_HEADER.unpack_from(buf, at)
    if stored_slots != n_slots:
        raise TileCodecError(
            f"tile record: sketch section: field 'n_slots': expected {n_slots}, got {stored_slots}",
            hint="the view's sketch aggregations changed without a new fingerprint, or the value is corrupt",
        )
    at += SECTION_HEADER.size
    count = n_tiles * n_slots
    lengths = np.frombuffer(buf, dtype="<u4", count=count, offset=at).astype(np.int64)
    if int(lengths.sum()) != total:
        raise TileCodecError(
            f"tile record: sketch section: field 'blob_bytes': expected the sum of the blob "
            f"lengths {int(lengths.sum())}, got {total}",
            hint="the stored value is corrupt",
        )
    at += 4 * count + _pad8(4 * count)
    ends = (np.cumsum(lengths) + at).tolist()
    starts = [at, *ends[:-1]]
    data = bytes(buf)
    out = np.empty(count, dtype=object)
    out[:] = [data[a:b] for a, b in zip(starts, ends, strict=True)]
    return out.reshape(n_tiles, n_slots)


def unpack_arrays(buf: bytes, n_tiles: int, width: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A record's tile ids and partials as tuples of Python numbers, on any host byte
    order (its header checked by the caller)."""
    tiles: tuple[int, ...] = struct.unpack_from(f"<{n_tiles}q", buf, HEADER.size)
    flat: tuple[float, ...] = struct.unpack_from(f"<{n_tiles * width}d", buf, partials_offset(n_tiles))
    return tiles, flat


def without_sketch_section(record: bytes, width: int) -> bytes:
    """``record`` without its sketch section (header flag cleared), after checking it in
    full like :func:`decode_tiles` does (version, flags, width, length including the
    section): the tile ids and partials alone, for readers that evaluate no sketch."""
    _, n_tiles, _ = check_header(record, width)
    version, flags, _, _, max_event_ts = HEADER.unpack_from(record)
    if not flags & FLAG_SKETCHES:
        return record
    header = HEADER.pack(version, flags & ~FLAG_SKETCHES, width, n_tiles, max_event_ts)
    return b"".join((header, memoryview(record)[HEADER.size : section_offset(n_tiles, width)]))


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
    partials = np.frombuffer(buf, dtype="<f8", count=n_tiles * width, offset=partials_offset(n_tiles)).reshape(
        n_tiles, width
    )
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
    buf: bytes | bytearray | memoryview, expected_width: int | None = None, *, hot_part: bool = False
) -> tuple[int, int, int]:
    """``(width, n_tiles, max_event_ts)`` of a record after checking its header and total length.

    Raises the :class:`TileCodecError` of :func:`decode_tiles` for a truncated record,
    trailing bytes, an unknown version or flags, or a width other than ``expected_width``.
    ``FLAG_COLD`` is an unknown flag unless ``hot_part`` (the parts' own functions below).
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
    if flags & ~((FLAG_SKETCHES | FLAG_COLD) if hot_part else FLAG_SKETCHES):
        raise TileCodecError(
            f"tile record: field 'flags': expected 0 or {FLAG_SKETCHES}, got {flags}",
            hint="unknown flags mean a newer record format or a corrupt value",
        )
    if expected_width is not None and width != expected_width:
        raise TileCodecError(
            f"tile record: field 'width': expected {expected_width}, got {width}",
            hint="the view's columns changed without a new fingerprint, or the value is corrupt",
        )
    expected = section_offset(n_tiles, width)
    if flags & FLAG_SKETCHES:
        expected += _section_size(buf, expected, n_tiles)
    if size != expected:
        raise TileCodecError(
            f"tile record: length: expected {expected} bytes for {n_tiles} tiles of width {width}, got {size}",
            hint="the stored value is truncated or corrupt",
        )
    return int(width), int(n_tiles), int(max_event_ts)


def _section_size(buf: bytes | bytearray | memoryview, at: int, n_tiles: int) -> int:
    """Byte size of the sketch section starting at ``at`` (from its header)."""
    if len(buf) < at + SECTION_HEADER.size:
        raise TileCodecError(
            f"tile record: sketch section: expected a {SECTION_HEADER.size}-byte header at "
            f"byte {at}, got {max(0, len(buf) - at)} bytes",
            hint="the stored value is truncated or corrupt",
        )
    version, reserved, n_slots, total = SECTION_HEADER.unpack_from(buf, at)
    if version != SECTION_VERSION or reserved != 0:
        raise TileCodecError(
            f"tile record: sketch section: field 'section_version': expected {SECTION_VERSION} "
            f"(reserved 0), got {version} (reserved {reserved})",
            hint="the state was written by another streamfeat version; rebuild it with a backfill",
        )
    lengths = 4 * n_tiles * int(n_slots)
    return SECTION_HEADER.size + lengths + _pad8(lengths) + int(total) + _pad8(int(total))


def tile_span(buf: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(first tile id, last tile id)`` of a record, read from its header and tile
    array only (retention sweeps look at every record); None for a record of no tiles."""
    n_tiles = HEADER.unpack_from(buf, 0)[3]
    if n_tiles == 0:
        return None
    first: int = _TILE_ID.unpack_from(buf, HEADER.size)[0]
    last: int = _TILE_ID.unpack_from(buf, HEADER.size + _TILE_ID.size * (n_tiles - 1))[0]
    return first, last


def leading_tiles(buf: bytes, count: int) -> tuple[int, ...]:
    """The first ``count`` tile ids of a record (fewer when it holds fewer), read from
    its header and tile array only."""
    n: int = min(count, HEADER.unpack_from(buf, 0)[3])
    ids: tuple[int, ...] = struct.unpack_from(f"<{n}q", buf, HEADER.size)
    return ids


def section_bytes(blobs: BlobRows, row_bounds: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The blob bytes of each record ``i`` holding blob rows ``row_bounds[i] ..
    row_bounds[i + 1]`` (0: the record gets no section and no flag), checked against the
    section's limits."""
    row_bytes = blobs.lengths.sum(axis=1)
    ends = np.concatenate([[0], np.cumsum(row_bytes)])
    totals: npt.NDArray[np.int64] = ends[row_bounds[1:]] - ends[row_bounds[:-1]]
    n_slots = blobs.n_slots
    if n_slots > _MAX_SLOTS or (len(totals) and int(totals.max()) > _MAX_BLOB_BYTES):
        raise KernelInputError(
            f"encode_tiles: sketch section: expected n_slots <= {_MAX_SLOTS} and blob bytes "
            f"<= {_MAX_BLOB_BYTES}, got {n_slots} slots, {int(totals.max())} bytes",
            hint="sketch states are bounded by their kinds' parameters",
        )
    return totals


def section_head_words(
    n_tiles: npt.NDArray[np.int64], n_slots: int, totals: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The 8-byte words of each record's section header and zero-padded blob lengths
    (0 for a record without a section): what :func:`write_section_heads` fills."""
    words: npt.NDArray[np.int64] = np.where(totals > 0, 1 + (n_tiles * n_slots + 1) // 2, 0)
    return words


def write_section_heads(
    words: npt.NDArray[np.int64],
    at: npt.NDArray[np.int64],
    blobs: BlobRows,
    row_bounds: npt.NDArray[np.int64],
    totals: npt.NDArray[np.int64],
) -> None:
    """Write, from word ``at[i]`` of the zeroed record words, the section header and the
    blob lengths of each record ``i`` with a section (blob rows ``row_bounds[i] ..
    row_bounds[i + 1]``), all records at once."""
    with_section = np.flatnonzero(totals > 0)
    n_slots = blobs.n_slots
    # '<BBHI' (version, reserved 0, n_slots, blob bytes) read as one little-endian word.
    head = np.uint64(SECTION_VERSION) | np.uint64(n_slots << 16) | (totals[with_section].astype(np.uint64) << 32)
    words.view("<u8")[at[with_section]] = head
    n_rows = np.diff(row_bounds)[with_section]
    lengths = blobs.lengths[runs(row_bounds[:-1][with_section], n_rows)].reshape(-1)
    words.view("<u4")[runs(2 * (at[with_section] + 1), n_rows * n_slots)] = lengths


def append_sections(
    heads: bytes,
    edges: Sequence[int],
    blobs: BlobRows,
    row_bounds: npt.NDArray[np.int64],
    totals: npt.NDArray[np.int64],
) -> list[bytes]:
    """Records ``heads[edges[i]:edges[i + 1]]`` (header, tiles, partials and, when
    ``totals[i]``, the section's header and lengths: :func:`write_section_heads`), each
    followed by its blobs (rows ``row_bounds[i] .. row_bounds[i + 1]``) and padding: the
    bytes :func:`encode_tiles` writes. One join per record: a record's blobs are copied
    as the few byte runs they already form, never one by one."""
    run_buffer, run_start, run_end, run_of_record = (a.tolist() for a in blobs.record_runs(row_bounds))
    buffers = [memoryview(b) for b in blobs.buffers]
    view = memoryview(heads)
    out: list[bytes] = []
    for i, total in enumerate(totals.tolist()):
        if not total:
            out.append(heads[edges[i] : edges[i + 1]])
            continue
        parts: list[bytes | memoryview] = [view[edges[i] : edges[i + 1]]]
        for r in range(run_of_record[i], run_of_record[i + 1]):
            parts.append(buffers[run_buffer[r]][run_start[r] : run_end[r]])
        parts.append(_ZEROS[: _pad8(total)])
        out.append(b"".join(parts))
    return out


def stored_cold_part(cold: bytes | None, key: bytes) -> bytes:
    """The cold part read for the flagged tile record of state key ``key``; a flagged
    record whose cold part is missing is refused, never read as the hot part alone."""
    if cold is None:
        raise TileCodecError(
            f"tile record {key!r}: its hot part is flagged, but no cold part is stored",
            hint="the stored values are corrupt; rebuild the state with a backfill",
        )
    return cold


def has_cold(record: bytes) -> bool:
    """Whether ``record`` is a hot part whose entity also has a cold record (one byte
    read: readers of entities without one pay nothing more; a truncated record is left
    to the decoders, which name what is wrong)."""
    return len(record) > 1 and bool(record[1] & FLAG_COLD)


def with_cold_flag(record: bytes, cold: bool) -> bytes:
    """``record`` with its header's ``FLAG_COLD`` set (``cold``) or cleared."""
    flags = record[1] | FLAG_COLD if cold else record[1] & ~FLAG_COLD
    if flags == record[1]:
        return record
    return b"".join((record[:1], bytes((flags,)), memoryview(record)[2:]))


def _parts(record: bytes) -> tuple[int, int, int, int, int]:
    """``(width, n_tiles, max_event_ts, n_slots, blob_bytes)`` of a record (its header
    and length checked, a hot part's ``FLAG_COLD`` allowed)."""
    width, n_tiles, max_ts = check_header(record, hot_part=True)
    if not record[1] & FLAG_SKETCHES:
        return width, n_tiles, max_ts, 0, 0
    _, _, n_slots, total = SECTION_HEADER.unpack_from(record, section_offset(n_tiles, width))
    return width, n_tiles, max_ts, int(n_slots), int(total)


def _blob_lengths(record: bytes, width: int, n_tiles: int, n_slots: int) -> npt.NDArray[np.int64]:
    at = section_offset(n_tiles, width) + SECTION_HEADER.size
    lengths: npt.NDArray[np.int64] = np.frombuffer(record, dtype="<u4", count=n_tiles * n_slots, offset=at).astype(
        np.int64
    )
    return lengths


def _record(
    width: int,
    max_ts: int,
    tiles: Sequence[bytes | memoryview],
    partials: Sequence[bytes | memoryview],
    n_tiles: int,
    n_slots: int,
    lengths: npt.NDArray[np.int64] | None,
    blobs: Sequence[bytes | memoryview],
    cold: bool,
) -> bytes:
    """One record from its byte runs: what :func:`encode_tiles` writes for them."""
    total = 0 if lengths is None else int(lengths.sum())
    flags = (FLAG_SKETCHES if total else 0) | (FLAG_COLD if cold else 0)
    out: list[bytes | memoryview] = [HEADER.pack(RECORD_VERSION, flags, width, n_tiles, max_ts), *tiles, *partials]
    if total and lengths is not None:
        length_bytes = lengths.astype("<u4").tobytes()
        out += [SECTION_HEADER.pack(SECTION_VERSION, 0, n_slots, total), length_bytes, bytes(_pad8(len(length_bytes)))]
        out += [*blobs, bytes(_pad8(total))]
    return b"".join(out)


def join_parts(cold: bytes, hot: bytes) -> bytes:
    """The one record a cold and a hot part stand for: the cold tiles, then the hot
    ones, the hot part's ``max_event_ts``, no ``FLAG_COLD``; byte for byte what
    :func:`encode_tiles` writes for the concatenation. Raises :class:`TileCodecError`
    when the parts differ in width or sketch slots or their tiles do not follow on."""
    width, n_cold, _, slots_c, total_c = _parts(cold)
    hot_width, n_hot, max_ts, slots_h, total_h = _parts(hot)
    if hot_width != width or (slots_c and slots_h and slots_c != slots_h):
        raise TileCodecError(
            f"tile record parts: expected the same width and sketch slots, got width {width} and "
            f"{hot_width}, {slots_c} and {slots_h} slots",
            hint="the stored values are corrupt",
        )
    spans = tile_span(cold), tile_span(hot)
    if spans[0] is not None and spans[1] is not None and spans[0][1] >= spans[1][0]:
        raise TileCodecError(
            f"tile record parts: expected every cold tile before every hot tile, got cold tile "
            f"{spans[0][1]} and hot tile {spans[1][0]}",
            hint="the stored values are corrupt",
        )
    c, h = memoryview(cold), memoryview(hot)
    tiles = (c[HEADER.size : partials_offset(n_cold)], h[HEADER.size : partials_offset(n_hot)])
    partials = (
        c[partials_offset(n_cold) : section_offset(n_cold, width)],
        h[partials_offset(n_hot) : section_offset(n_hot, width)],
    )
    n_slots = slots_c or slots_h
    lengths = None
    blobs: list[memoryview] = []
    if n_slots:
        parts = []
        for part, n, slots, total in ((cold, n_cold, slots_c, total_c), (hot, n_hot, slots_h, total_h)):
            if not slots:
                parts.append(np.zeros(n * n_slots, dtype=np.int64))
                continue
            parts.append(_blob_lengths(part, width, n, n_slots))
            at = section_offset(n, width) + SECTION_HEADER.size + 4 * n * n_slots + _pad8(4 * n * n_slots)
            blobs.append(memoryview(part)[at : at + total])
        lengths = np.concatenate(parts)
    return _record(width, max_ts, tiles, partials, n_cold + n_hot, n_slots, lengths, blobs, False)


def split_record(record: bytes, n_cold: int) -> tuple[bytes, bytes]:
    """``(cold, hot)``: the first ``n_cold`` tiles of ``record`` as a cold part and the
    rest as a hot part (``FLAG_COLD`` set; both keep the record's ``max_event_ts``);
    :func:`join_parts` gives ``record`` back."""
    width, n_tiles, max_ts, n_slots, _ = _parts(record)
    if not 0 < n_cold < n_tiles:
        raise KernelInputError(
            f"split_record: expected 0 < n_cold < {n_tiles}, got {n_cold}",
            hint="both parts hold at least one tile",
        )
    view = memoryview(record)
    n_hot = n_tiles - n_cold
    cut_tiles = partials_offset(n_cold)
    cut_partials = partials_offset(n_tiles) + 8 * n_cold * width
    tiles = (view[HEADER.size : cut_tiles], view[cut_tiles : partials_offset(n_tiles)])
    partials = (
        view[partials_offset(n_tiles) : cut_partials],
        view[cut_partials : section_offset(n_tiles, width)],
    )
    if not n_slots:
        cold = _record(width, max_ts, tiles[:1], partials[:1], n_cold, 0, None, (), False)
        return cold, _record(width, max_ts, tiles[1:], partials[1:], n_hot, 0, None, (), True)
    lengths = _blob_lengths(record, width, n_tiles, n_slots)
    count = n_tiles * n_slots
    at = section_offset(n_tiles, width) + SECTION_HEADER.size + 4 * count + _pad8(4 * count)
    cut = at + int(lengths[: n_cold * n_slots].sum())
    end = at + int(lengths.sum())
    cold = _record(
        width, max_ts, tiles[:1], partials[:1], n_cold, n_slots, lengths[: n_cold * n_slots], (view[at:cut],), False
    )
    hot = _record(
        width, max_ts, tiles[1:], partials[1:], n_hot, n_slots, lengths[n_cold * n_slots :], (view[cut:end],), True
    )
    return cold, hot

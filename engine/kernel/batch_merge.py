"""Merge a batch's new tile partials into many entities' stored tile sets at once.

The write path touches thousands of entities per batch. Merging them one entity at a
time costs tens of microseconds each in numpy call overhead, so this module works on
all entities of a batch together: stored records are decoded into one flat array,
the batch's partials are merged in by one linear merge, retention is applied with one
mask, and only the final split into per-entity records is a Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import merge_partials, overflow_is_a_value
from engine.kernel.blob_buffers import JoinedBlobs, gather_runs, runs, scatter_runs
from engine.kernel.blob_rows import BlobRows, no_blob_rows
from engine.kernel.codec import (
    FLAG_SKETCHES,
    HEADER,
    HEADER_DTYPE,
    RECORD_VERSION,
    SECTION_HEADER,
    SECTION_VERSION,
    append_sections,
    decode_sketches,
    decode_tiles,
    section_bytes,
    section_head_words,
    section_offset,
    write_section_heads,
)
from engine.kernel.exceptions import TileCodecError
from engine.kernel.layout import PartialLayout
from engine.kernel.sketches import BlobArray, empty_blobs, merge_blobs
from engine.kernel.tile_retention import first_kept_tile, fold_expired
from engine.timefmt import NO_EVENT_TS

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FlatTiles:
    """Tile sets of many entities, flattened: row ``i`` belongs to entity ``codes[i]``.

    Rows are sorted by (code, tile). ``max_event_ts[c]`` is the newest event time of
    entity code ``c`` (``NO_EVENT_TS`` when unknown). ``sketches`` holds each row's
    blobs ``(rows, n_slots)`` when the layout has sketch slots (None: all empty).
    """

    codes: Int64Array
    tiles: Int64Array
    partials: Float64Array
    max_event_ts: Int64Array
    sketches: BlobArray | None = None

    def blobs(self, n_slots: int) -> BlobArray:
        """``sketches``, or empty blobs when there are none."""
        if self.sketches is None:
            return empty_blobs(len(self.codes), n_slots)
        return self.sketches

    def with_rows(self, rows: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> FlatTiles:
        """The rows selected by an index or mask (same ``max_event_ts``)."""
        return FlatTiles(
            self.codes[rows],
            self.tiles[rows],
            self.partials[rows],
            self.max_event_ts,
            None if self.sketches is None else self.sketches[rows],
        )


_WORD = 8  # every field of a record is 8 bytes wide (the header is two words)
_HEADER_WORDS = HEADER.size // _WORD


def decode_many(layout: PartialLayout, records: Sequence[bytes | None]) -> FlatTiles:
    """Decode the stored record of entity code ``i`` from ``records[i]`` (None: no record).

    All records are joined into one buffer and decoded with array operations. Any
    record failing a check (length, version, flags, width, tile order) is handed to
    :func:`engine.kernel.codec.decode_tiles`, which raises its precise error.
    """
    flat, blobs = decode_rows(layout, records)
    if blobs is None:
        return flat
    return FlatTiles(flat.codes, flat.tiles, flat.partials, flat.max_event_ts, blobs.objects())


def decode_rows(layout: PartialLayout, records: Sequence[bytes | None]) -> tuple[FlatTiles, BlobRows | None]:
    """:func:`decode_many` with the sketch blobs left as byte ranges of the joined
    records (None when the layout has no sketch slots); the returned tiles carry none."""
    width = layout.width
    n_slots = len(layout.sketch_slots)
    max_ts = np.full(len(records), NO_EVENT_TS, dtype=np.int64)
    present = [i for i, r in enumerate(records) if r is not None]
    empty = np.empty(0, dtype=np.int64)
    if not present:
        no_rows = no_blob_rows(0, n_slots) if n_slots else None
        return FlatTiles(empty, empty.copy(), np.empty((0, width)), max_ts), no_rows
    stored: list[bytes] = [r for r in records if r is not None]
    sizes = np.fromiter(map(len, stored), dtype=np.int64, count=len(stored))
    bad = (sizes < HEADER.size) | (sizes % _WORD != 0)
    if bool(bad.any()):
        _raise_for(stored, bad, layout)
    buf = b"".join(stored)
    words = np.frombuffer(buf, dtype="<i8")
    word_at = np.cumsum(sizes // _WORD) - sizes // _WORD
    header = np.frombuffer(buf, dtype=np.uint8).reshape(-1, _WORD)[
        (word_at[:, None] + np.arange(_HEADER_WORDS)).ravel()
    ]
    fields = header.reshape(-1).view(HEADER_DTYPE)
    n_tiles = fields["n_tiles"].astype(np.int64)
    core = section_offset(n_tiles, width)
    with_section = fields["flags"] == FLAG_SKETCHES
    bad = (
        (fields["version"] != RECORD_VERSION)
        | ((fields["flags"] != 0) & ~(with_section & (n_slots > 0)))
        | (fields["width"] != width)
        | ((sizes != core) & ~with_section)
        | (with_section & (sizes < core + SECTION_HEADER.size))
    )
    if bool(bad.any()):
        _raise_for(stored, bad, layout)
    blobs = None
    if n_slots:
        blobs, bad = _section_rows(buf, word_at * _WORD + core, with_section, n_tiles, sizes - core, n_slots)
        if bool(bad.any()):
            _raise_for(stored, bad, layout)
    codes_present = np.asarray(present, dtype=np.int64)
    max_ts[codes_present] = fields["max_ts"]
    tiles = gather_runs(words, word_at + _HEADER_WORDS, n_tiles).astype(np.int64)
    codes = np.repeat(codes_present, n_tiles)
    if len(tiles) > 1:
        same = codes[1:] == codes[:-1]
        unordered = same & (tiles[1:] <= tiles[:-1])
        if bool(unordered.any()):
            bad = np.zeros(len(stored), dtype=bool)
            bad[np.searchsorted(codes_present, codes[1:][unordered])] = True
            _raise_for(stored, bad, layout)
    partial_words = gather_runs(words.view("<f8"), word_at + _HEADER_WORDS + n_tiles, n_tiles * width)
    partials = partial_words.astype(np.float64).reshape(-1, width)
    return FlatTiles(codes, tiles, partials, max_ts), blobs


def _section_rows(
    buf: bytes,
    section_at: Int64Array,
    with_section: npt.NDArray[np.bool_],
    n_tiles: Int64Array,
    section_sizes: Int64Array,
    n_slots: int,
) -> tuple[BlobRows, npt.NDArray[np.bool_]]:
    """The blob rows (one per tile) of joined records whose sections start at
    ``section_at`` (records without one: empty blobs), located with array gathers, and
    the mask of records whose section fails a codec check (then the blobs are all empty)."""
    joined = JoinedBlobs(buf, section_at, section_sizes)
    records = np.flatnonzero(with_section)
    at = section_at[records]
    version = joined.buffer[at]
    reserved = joined.buffer[at + 1]
    stored_slots = joined.words(at + 2, "<u2").astype(np.int64)
    totals = joined.words(at + 4, "<u4").astype(np.int64)
    count = n_tiles[records] * n_slots
    lengths_bytes = 4 * count
    expected = SECTION_HEADER.size + lengths_bytes + (-lengths_bytes % 8) + totals + (-totals % 8)
    bad_section = (version != SECTION_VERSION) | (reserved != 0) | (stored_slots != n_slots)
    bad_section |= section_sizes[records] != expected
    bad = np.zeros(len(section_at), dtype=bool)
    out = no_blob_rows(int(n_tiles.sum()), n_slots, buf)
    if bool(bad_section.any()):
        bad[records[bad_section]] = True
        return out, bad
    of_length = np.repeat(np.arange(len(records), dtype=np.int64), count)
    j = np.arange(len(of_length), dtype=np.int64) - (np.cumsum(count) - count)[of_length]
    lengths = joined.words(at[of_length] + SECTION_HEADER.size + 4 * j, "<u4").astype(np.int64)
    sums = np.bincount(of_length, weights=lengths, minlength=len(records)).astype(np.int64)
    if bool((sums != totals).any()):
        bad[records[sums != totals]] = True
        return out, bad
    data_at = at + SECTION_HEADER.size + lengths_bytes + (-lengths_bytes % 8)
    begins = data_at[of_length] + np.cumsum(lengths) - lengths - (np.cumsum(sums) - sums)[of_length]
    first_row = np.cumsum(n_tiles) - n_tiles
    rows = runs(first_row[records], n_tiles[records])
    if len(rows):
        out.begin[rows] = begins.reshape(-1, n_slots)[:, 0]
        out.lengths[rows] = lengths.reshape(-1, n_slots)
    return out, bad


def _raise_for(stored: Sequence[bytes], bad: npt.NDArray[np.bool_], layout: PartialLayout) -> None:
    """Raise the codec's own error for the first record marked ``bad``."""
    first = int(np.flatnonzero(bad)[0])
    record = stored[first]
    decode_tiles(record, expected_width=layout.width)
    decode_sketches(record, len(layout.sketch_slots))
    raise TileCodecError(  # decode_tiles accepted what the batch checks refused: a bug here
        f"tile record #{first}: refused by the batch decoder but accepted by decode_tiles",
        hint="report this; the batch checks must match the codec's",
    )


def _pair_keys(a: FlatTiles, b: FlatTiles) -> tuple[Int64Array, Int64Array] | None:
    """One int64 per row of each input that sorts like its (code, tile) pair; None when
    the numbering would overflow or an input is not strictly sorted by (code, tile)."""
    tiles_lo = min(int(a.tiles.min()), int(b.tiles.min()))
    span = max(int(a.tiles.max()), int(b.tiles.max())) - tiles_lo + 1
    codes_hi = max(int(a.codes.max()), int(b.codes.max()))
    if min(int(a.codes.min()), int(b.codes.min())) < 0 or (codes_hi + 1) * span >= 2**62:
        return None
    key_a = a.codes * span + (a.tiles - tiles_lo)
    key_b = b.codes * span + (b.tiles - tiles_lo)
    for key in (key_a, key_b):
        if len(key) > 1 and not bool(np.all(key[1:] > key[:-1])):
            return None
    return key_a, key_b


@dataclass(frozen=True)
class MergePlan:
    """Where the rows of two flat tile sets go in their union (:func:`merge_plan`)."""

    rows_a: Int64Array  # the stored row each shared new row merges into
    shared: npt.NDArray[np.bool_]  # new rows whose (code, tile) is stored
    only_b: Int64Array  # the other new rows
    slot_a: Int64Array  # output row of each stored row
    slot_b: Int64Array  # output row of each new-only row
    total: int


def merge_plan(stored: FlatTiles, new: FlatTiles) -> MergePlan | None:
    """The union of two flat tile sets sorted by (code, tile) with each pair at most
    once, as a linear merge of two sorted runs (binary searches instead of a sort);
    None when the pairs cannot be numbered in one int64 (then merge by sorting)."""
    n_a, n_b = len(stored.codes), len(new.codes)
    if not n_a or not n_b:
        none = np.empty(0, dtype=np.int64)
        return MergePlan(none, np.zeros(n_b, dtype=bool), np.arange(n_b), np.arange(n_a), np.arange(n_b), n_a + n_b)
    keys = _pair_keys(stored, new)
    if keys is None:
        return None
    key_a, key_b = keys
    at = np.searchsorted(key_a, key_b)  # where each new row goes among the stored rows
    shared = at < n_a
    shared[shared] = key_a[at[shared]] == key_b[shared]
    only_b = np.flatnonzero(~shared)
    # Output slot of each stored row: its index plus the new-only rows before it;
    # of each new-only row: its insertion point plus the new-only rows before it.
    slot_a = np.arange(n_a) + np.searchsorted(key_b[only_b], key_a)
    slot_b = at[only_b] + np.arange(len(only_b))
    return MergePlan(at[shared], shared, only_b, slot_a, slot_b, n_a + len(only_b))


@overflow_is_a_value
def merge_flat(layout: PartialLayout, stored: FlatTiles, new: FlatTiles, plan: MergePlan | None = None) -> FlatTiles:
    """Union of two flat tile sets over the same entity codes, merging shared tiles
    (:func:`merge_plan`, or ``plan`` when the caller already has it for these two sets);
    a shared pair merges stored first, new second."""
    max_ts = np.maximum(stored.max_event_ts, new.max_event_ts)
    slots = layout.sketch_slots
    if slots:
        stored = FlatTiles(stored.codes, stored.tiles, stored.partials, max_ts, stored.blobs(len(slots)))
        new = FlatTiles(new.codes, new.tiles, new.partials, max_ts, new.blobs(len(slots)))
    if not len(new.codes):
        return FlatTiles(stored.codes, stored.tiles, stored.partials, max_ts, stored.sketches)
    if not len(stored.codes):
        return FlatTiles(new.codes, new.tiles, new.partials, max_ts, new.sketches)
    plan = merge_plan(stored, new) if plan is None else plan
    if plan is None:
        return _merge_flat_by_sort(layout, stored, new, max_ts)
    partials_a = stored.partials
    sketches_a = stored.sketches
    if len(plan.rows_a):
        partials_a = partials_a.copy()
        rows = plan.rows_a
        partials_a[rows] = merge_partials(layout, partials_a[rows], new.partials[plan.shared])
        if sketches_a is not None and new.sketches is not None:
            sketches_a = sketches_a.copy()
            sketches_a[rows] = merge_blobs(slots, sketches_a[rows], new.sketches[plan.shared])
    only_b, slot_a, slot_b, total = plan.only_b, plan.slot_a, plan.slot_b, plan.total
    if not len(only_b):
        return FlatTiles(stored.codes, stored.tiles, partials_a, max_ts, sketches_a)
    codes = np.empty(total, dtype=np.int64)
    tiles = np.empty(total, dtype=np.int64)
    partials = np.empty((total, partials_a.shape[1]), dtype=np.float64)
    codes[slot_a], codes[slot_b] = stored.codes, new.codes[only_b]
    tiles[slot_a], tiles[slot_b] = stored.tiles, new.tiles[only_b]
    partials[slot_a], partials[slot_b] = partials_a, new.partials[only_b]
    sketches = None
    if sketches_a is not None and new.sketches is not None:
        sketches = empty_blobs(total, len(slots))
        sketches[slot_a], sketches[slot_b] = sketches_a, new.sketches[only_b]
    return FlatTiles(codes, tiles, partials, max_ts, sketches)


def _merge_flat_by_sort(layout: PartialLayout, stored: FlatTiles, new: FlatTiles, max_ts: Int64Array) -> FlatTiles:
    """:func:`merge_flat` for inputs whose pairs cannot be numbered in one int64."""
    codes = np.concatenate([stored.codes, new.codes])
    tiles = np.concatenate([stored.tiles, new.tiles])
    partials = np.concatenate([stored.partials, new.partials])
    sketches = (
        None if stored.sketches is None or new.sketches is None else np.concatenate([stored.sketches, new.sketches])
    )
    order = np.lexsort((tiles, codes))  # lexsort is stable: stored rows stay first
    codes, tiles, partials = codes[order], tiles[order], partials[order]
    dup = np.flatnonzero((codes[1:] == codes[:-1]) & (tiles[1:] == tiles[:-1]))
    if sketches is not None:
        sketches = sketches[order]
        if len(dup):
            sketches[dup] = merge_blobs(layout.sketch_slots, sketches[dup], sketches[dup + 1])
    if len(dup):
        partials[dup] = merge_partials(layout, partials[dup], partials[dup + 1])
        keep = np.ones(len(codes), dtype=bool)
        keep[dup + 1] = False
        codes, tiles, partials = codes[keep], tiles[keep], partials[keep]
        sketches = None if sketches is None else sketches[keep]
    return FlatTiles(codes, tiles, partials, max_ts, sketches)


def expired_rows(flat: FlatTiles, retention_ms: int, interval_ms: int) -> npt.NDArray[np.bool_] | None:
    """The rows whose tile ends more than ``retention_ms`` behind its entity's newest
    event (:func:`engine.kernel.tile_retention.first_kept_tile`); None when none does."""
    if not len(flat.codes):
        return None
    newest = flat.max_event_ts[flat.codes]
    first_kept = first_kept_tile(newest, retention_ms, interval_ms)
    keep: npt.NDArray[np.bool_] = (flat.tiles >= first_kept) | (newest == NO_EVENT_TS)
    if bool(keep.all()):
        return None
    return ~keep


def retain(
    flat: FlatTiles, retention_ms: int, interval_ms: int, compact_into: PartialLayout | None = None
) -> FlatTiles:
    """Drop every tile whose end is more than ``retention_ms`` behind its entity's newest event.

    Same rule as :func:`engine.kernel.tile_retention.apply_retention`, for many entities;
    with ``compact_into`` (a view with a lifetime window) the expired tiles are folded
    into one compacted partial per entity instead (:func:`fold_expired`).
    """
    expired = expired_rows(flat, retention_ms, interval_ms)
    if expired is None:
        return flat
    if compact_into is not None:
        codes, tiles, partials, sketches = fold_expired(
            compact_into, flat.codes, flat.tiles, flat.partials, expired, flat.sketches
        )
        return FlatTiles(codes, tiles, partials, flat.max_event_ts, sketches)
    return flat.with_rows(~expired)


def encode_many(layout: PartialLayout, flat: FlatTiles, n_entities: int) -> list[bytes]:
    """One packed tile record per entity code ``0 .. n_entities - 1`` (codec format)."""
    n_slots = len(layout.sketch_slots)
    return encode_rows(layout, flat, BlobRows.of_objects(flat.blobs(n_slots)) if n_slots else None, n_entities)


def encode_rows(layout: PartialLayout, flat: FlatTiles, blobs: BlobRows | None, n_entities: int) -> list[bytes]:
    """:func:`encode_many` of tiles whose blobs are ``blobs`` (row ``i`` of ``flat``
    owns blob row ``i``; ``flat.sketches`` is not read).

    Every record is laid out in one int64 word array (header words, tile ids,
    partials), serialized once and sliced per entity; a layout with sketch slots
    appends each record's section (:func:`engine.kernel.codec.append_sections`).
    """
    width = layout.width
    bounds = np.searchsorted(flat.codes, np.arange(n_entities + 1))
    n_tiles = np.diff(bounds).astype(np.int64)
    core_words = section_offset(n_tiles, width) // _WORD
    totals = None if blobs is None else section_bytes(blobs, bounds)
    record_words = core_words
    if totals is not None:
        record_words = core_words + section_head_words(n_tiles, len(layout.sketch_slots), totals)
    word_at = np.cumsum(record_words) - record_words
    # Zeroed when sections are written: their lengths arrays end in padding.
    out = np.empty(int(record_words.sum()), dtype="<i8") if totals is None else np.zeros(int(record_words.sum()), "<i8")
    header = np.zeros(n_entities, dtype=HEADER_DTYPE)
    header["version"] = RECORD_VERSION
    header["width"] = width
    if totals is not None:
        header["flags"] = (totals > 0) * FLAG_SKETCHES
    header["n_tiles"] = n_tiles
    header["max_ts"] = flat.max_event_ts[:n_entities]
    header_words = header.view("<i8").reshape(n_entities, _HEADER_WORDS)
    out[word_at] = header_words[:, 0]
    out[word_at + 1] = header_words[:, 1]
    scatter_runs(out, word_at + _HEADER_WORDS, n_tiles, flat.tiles)
    scatter_runs(out.view("<f8"), word_at + _HEADER_WORDS + n_tiles, n_tiles * width, flat.partials.reshape(-1))
    if blobs is not None and totals is not None:
        write_section_heads(out, word_at + core_words, blobs, bounds, totals)
    buf = out.tobytes()
    edges = (np.append(word_at, len(out)) * _WORD).tolist()
    if blobs is not None and totals is not None:
        return append_sections(buf, edges, blobs, bounds, totals)
    return [buf[edges[i] : edges[i + 1]] for i in range(n_entities)]

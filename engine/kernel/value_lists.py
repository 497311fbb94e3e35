"""The list kinds of ``last_n``, ``first_n`` and ``last_distinct_n`` (docs/semantics.md
section 3, "List functions").

Each kind keeps, per tile, at most ``n`` **entries** ``(event time, position, value)``,
the position being ``partition * 2**40 + offset`` (``engine.kernel.layout.encode_positions``),
so every entry has a distinct key ``(event time, position)`` and the order of the
contract is total:

``newest_values`` (``last_n``)
    the ``n`` events with the greatest keys, newest first;
``oldest_values`` (``first_n``)
    the ``n`` events with the smallest keys, oldest first;
``newest_distinct`` (``last_distinct_n``)
    per distinct value (compared by :func:`engine.kernel.value_hash.canonical_bytes`:
    type and value) the key of its newest event, the ``n`` values with the greatest
    such keys, newest first. A value among a window's ``n`` newest distinct values is
    among the ``n`` newest distinct values of the tile holding its newest event, so the
    truncated tiles still merge to the exact answer.

Blob layout (little endian, one canonical form: equal states are equal bytes):
``uint32 k``, then ``int64 event_ts[k]``, ``int64 position[k]``, ``uint32 length[k]``,
then the ``k`` values' canonical bytes back to back, entries in the answer's order.
``merge`` concatenates both entry lists, sorts them by key (ties, impossible between
distinct events, fall back to the value bytes) and truncates to ``n``: the result
depends only on the union, so any grouping and order of merges gives the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.kernel.blob_buffers import JoinedBlobs, first_of_runs, group_bounds, lex_order, scatter, slices
from engine.kernel.exceptions import KernelSpecError, TileCodecError
from engine.kernel.sketch_slot import EMPTY_BLOB, Int64Array, Params, SketchSlot, SlotSource, group_ids
from engine.kernel.value_hash import ListItem, decode_value, value_bytes

#: The largest n of a list function (docs/semantics.md "List functions").
MAX_LIST_LENGTH: Final = 1000

#: One entry: (event time, position, canonical value bytes).
Entry = tuple[int, int, bytes]

_COUNT = struct.Struct("<I")


def encode_entries(entries: list[Entry]) -> bytes:
    """The canonical blob of ``entries`` (already in the answer's order)."""
    if not entries:
        return EMPTY_BLOB
    k = len(entries)
    return b"".join(
        (
            _COUNT.pack(k),
            np.fromiter((e[0] for e in entries), dtype="<i8", count=k).tobytes(),
            np.fromiter((e[1] for e in entries), dtype="<i8", count=k).tobytes(),
            np.fromiter((len(e[2]) for e in entries), dtype="<u4", count=k).tobytes(),
            *(e[2] for e in entries),
        )
    )


def decode_entries(blob: bytes) -> list[Entry]:
    """The entries of a blob, in stored order (``b""``: none)."""
    if not blob:
        return []
    if len(blob) < _COUNT.size:
        raise TileCodecError(
            f"value list blob: header: expected {_COUNT.size} bytes, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    (k,) = _COUNT.unpack_from(blob, 0)
    fixed = _COUNT.size + 20 * k
    if len(blob) < fixed:
        raise TileCodecError(
            f"value list blob: length: expected at least {fixed} bytes for {k} entries, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    ts = np.frombuffer(blob, dtype="<i8", count=k, offset=_COUNT.size).tolist()
    pos = np.frombuffer(blob, dtype="<i8", count=k, offset=_COUNT.size + 8 * k).tolist()
    lengths = np.frombuffer(blob, dtype="<u4", count=k, offset=_COUNT.size + 16 * k).tolist()
    if fixed + sum(lengths) != len(blob):
        raise TileCodecError(
            f"value list blob: length: expected {fixed + sum(lengths)} bytes for {k} entries, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    out: list[Entry] = []
    at = fixed
    for t, p, length in zip(ts, pos, lengths, strict=True):
        out.append((t, p, blob[at : at + length]))
        at += length
    return out


def _blobs(groups: Int64Array, ts: Int64Array, pos: Int64Array, items: list[bytes], n_groups: int) -> list[bytes]:
    """Canonical blobs of entries sorted by group, each group in its answer order: every
    blob is laid out in one byte buffer with array scatters, then sliced once."""
    k = np.bincount(groups, minlength=n_groups).astype(np.int64)
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    payload_sizes = np.bincount(groups, weights=lengths, minlength=n_groups).astype(np.int64)
    sizes = np.where(k > 0, _COUNT.size + 20 * k + payload_sizes, 0)
    ends = np.cumsum(sizes)
    begins = ends - sizes
    buf = np.zeros(int(ends[-1]) if n_groups else 0, dtype=np.uint8)
    first = group_bounds(groups, n_groups)
    rank = np.arange(len(groups), dtype=np.int64) - first[groups]
    nonempty = np.flatnonzero(k)
    scatter(buf, begins[nonempty], k[nonempty].astype("<u4"), 4)
    fixed = begins[groups] + _COUNT.size
    scatter(buf, fixed + 8 * rank, ts.astype("<i8"), 8)
    scatter(buf, fixed + 8 * k[groups] + 8 * rank, pos.astype("<i8"), 8)
    scatter(buf, fixed + 16 * k[groups] + 4 * rank, lengths.astype("<u4"), 4)
    payload = np.frombuffer(b"".join(items), dtype=np.uint8)
    if len(payload):
        # Group g's payload is contiguous in the joined items; it moves to after its fixed part.
        payload_begins = np.cumsum(payload_sizes) - payload_sizes
        shift = begins + _COUNT.size + 20 * k - payload_begins
        buf[np.arange(len(payload), dtype=np.int64) + np.repeat(shift, payload_sizes)] = payload
    raw = buf.tobytes()
    bounds = zip(begins.tolist(), ends.tolist(), strict=True)
    return [raw[a:b] if b > a else EMPTY_BLOB for a, b in bounds]


@dataclass(frozen=True)
class _Entries:
    """The entries of many blobs, flat: entry i of group ``groups[i]``."""

    groups: Int64Array
    event_ts: Int64Array
    positions: Int64Array
    values: list[bytes]

    @classmethod
    def of(cls, blobs: Sequence[bytes], groups: Int64Array) -> _Entries:
        present = [i for i, blob in enumerate(blobs) if blob]
        joined = JoinedBlobs.of([blobs[i] for i in present])
        short = joined.lengths < _COUNT.size
        if bool(short.any()):
            decode_entries(blobs[present[int(np.flatnonzero(short)[0])]])  # raises the header error
        k = joined.words(joined.starts, "<u4").astype(np.int64)
        truncated = joined.lengths < _COUNT.size + 20 * k  # checked before reading the fixed part
        if bool(truncated.any()):
            decode_entries(blobs[present[int(np.flatnonzero(truncated)[0])]])  # raises the length error
        fixed = joined.starts + _COUNT.size
        of_entry = np.repeat(np.arange(len(present), dtype=np.int64), k)
        j = np.arange(len(of_entry), dtype=np.int64) - (np.cumsum(k) - k)[of_entry]
        entry_fixed, entry_k = fixed[of_entry], k[of_entry]
        lengths = joined.words(entry_fixed + 16 * entry_k + 4 * j, "<u4").astype(np.int64) if len(j) else j
        payload = np.bincount(of_entry, weights=lengths, minlength=len(present)).astype(np.int64)
        bad = joined.lengths != _COUNT.size + 20 * k + payload
        if bool(bad.any()):
            decode_entries(blobs[present[int(np.flatnonzero(bad)[0])]])  # raises the length error
        # Values follow each blob's fixed part back to back, in entry order.
        value_begin = (fixed + 20 * k)[of_entry] + np.cumsum(lengths) - lengths
        value_begin -= (np.cumsum(payload) - payload)[of_entry]
        return cls(
            np.asarray(groups, dtype=np.int64)[present][of_entry],
            joined.words(entry_fixed + 8 * j, "<i8").astype(np.int64),
            joined.words(entry_fixed + 8 * entry_k + 8 * j, "<i8").astype(np.int64),
            slices(joined.data, value_begin, value_begin + lengths),
        )


def _newest_first(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, reverse=True)


def _keep_distinct(newest_first: list[Entry], n: int) -> list[Entry]:
    seen: set[bytes] = set()
    kept: list[Entry] = []
    for entry in newest_first:
        if entry[2] not in seen:
            seen.add(entry[2])
            kept.append(entry)
            if len(kept) == n:
                break
    return kept


@dataclass(frozen=True)
class ValueList:
    """One list kind: which end of the event order it keeps and whether values repeat."""

    name: str
    newest: bool
    distinct: bool
    # Up to this many pairs are merged one by one (SketchKind.pairwise_merges): measured crossover.
    pairwise_merges: int = 8

    def select(self, entries: list[Entry], n: int) -> list[Entry]:
        """The kept entries of ``entries`` (any order), in the answer's order."""
        ordered = _newest_first(entries) if self.newest else sorted(entries)
        if self.distinct:
            return _keep_distinct(ordered, n)
        return ordered[:n]

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        n = int(slot.param("n"))
        total = len(values)
        groups = group_ids(starts, total)
        index = np.arange(total, dtype=np.int64)
        encoded: list[bytes] | None = None
        if self.distinct:
            # Each distinct value's newest event in its group: the last of its run once
            # sorted by (group, value, index); events are sorted by (e, position) per group.
            encoded = value_bytes(values)
            # Each value numbered by its first index, in one pass of dict lookups.
            first_seen: dict[bytes, int] = {}
            value_ids = np.fromiter(map(first_seen.setdefault, encoded, count()), dtype=np.int64, count=total)
            # Stable: each (group, value) run keeps its events in index order.
            order = lex_order((value_ids, groups))
            newest = np.ones(total, dtype=bool)
            newest[:-1] = (value_ids[order][1:] != value_ids[order][:-1]) | (groups[order][1:] != groups[order][:-1])
            candidates = np.sort(order[newest])
        else:
            candidates = index
        at, chosen_groups = self._kept_of_runs(groups[candidates], len(starts), n)
        chosen = candidates[at]
        items = value_bytes(values[chosen]) if encoded is None else [encoded[i] for i in chosen.tolist()]
        return _blobs(chosen_groups, event_ts[chosen], positions[chosen], items, len(starts))

    def _kept_of_runs(self, groups: Int64Array, n_groups: int, n: int) -> tuple[Int64Array, Int64Array]:
        """(index, group) of the kept rows of rows sorted by group, each group's rows in
        event order: its last ``n`` rows newest first, or its first ``n`` oldest first.
        Arithmetic on the group bounds, no sort: the rows already are in event order."""
        bounds = group_bounds(groups, n_groups)
        kept = np.minimum(np.diff(bounds), n)
        kept_groups = np.repeat(np.arange(n_groups, dtype=np.int64), kept)
        step = np.arange(len(kept_groups), dtype=np.int64) - (np.cumsum(kept) - kept)[kept_groups]
        if self.newest:
            return (bounds[1:] - 1)[kept_groups] - step, kept_groups
        return bounds[:-1][kept_groups] + step, kept_groups

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        return encode_entries(self.select(decode_entries(a) + decode_entries(b), int(slot.param("n"))))

    def merge_groups(self, slot: SketchSlot, blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
        """Every group's :meth:`select` of its blobs' entries at once: the entries read
        with array gathers, sorted by (group, event time, position, value bytes) in one
        lexsort, the first n per group (per distinct value first) kept, and the blobs
        written by :func:`_blobs`, the build's own writer."""
        n = int(slot.param("n"))
        entries = _Entries.of(blobs, groups)
        if not len(entries.groups):
            return [EMPTY_BLOB] * n_groups
        order = self._answer_order(entries)
        g = entries.groups[order]
        if self.distinct:  # the first (newest) entry of each value in each group
            # Any numbering of the distinct values will do: each value's last index.
            ids = {value: i for i, value in enumerate(entries.values)}
            numbered = np.fromiter(map(ids.__getitem__, entries.values), dtype=np.int64, count=len(entries.values))
            value_ids = numbered[order]
            by_value = lex_order((np.arange(len(order)), value_ids, g))
            first = first_of_runs(value_ids[by_value], g[by_value])
            kept = np.zeros(len(order), dtype=bool)
            kept[by_value[first]] = True
            order, g = order[kept], g[kept]
        group_first = group_bounds(g, n_groups)
        rank_in_group = np.arange(len(g), dtype=np.int64) - group_first[g]
        order, g = order[rank_in_group < n], g[rank_in_group < n]
        items = [entries.values[i] for i in order.tolist()]
        return _blobs(g, entries.event_ts[order], entries.positions[order], items, n_groups)

    def _answer_order(self, entries: _Entries) -> Int64Array:
        """The entries grouped, each group in the answer's order: by (e, position) and,
        for equal keys (never between distinct events), by the value bytes, as
        ``sorted`` orders the entry tuples."""
        tie_break = np.zeros(len(entries.groups), dtype=np.int64)
        for attempt in range(2):
            keys = (tie_break, entries.positions, entries.event_ts)
            # Newest first: groups ascending, each newest first, is the reverse of (-group, key) ascending.
            order = lex_order((*keys, -entries.groups))[::-1] if self.newest else lex_order((*keys, entries.groups))
            g, t, p = (a[order] for a in (entries.groups, entries.event_ts, entries.positions))
            tied = np.flatnonzero((g[1:] == g[:-1]) & (t[1:] == t[:-1]) & (p[1:] == p[:-1]))
            values = entries.values
            if attempt or not any(values[i] != values[j] for i, j in zip(order[tied], order[tied + 1], strict=True)):
                break
            _, ranks = np.unique(np.asarray(values, dtype=object), return_inverse=True)
            tie_break = ranks.reshape(-1).astype(np.int64)
        return np.asarray(order, dtype=np.int64)

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> list[ListItem]:
        return [decode_value(entry[2]) for entry in decode_entries(blob)]


NEWEST_VALUES: Final = ValueList("newest_values", newest=True, distinct=False)
OLDEST_VALUES: Final = ValueList("oldest_values", newest=False, distinct=False)
NEWEST_DISTINCT: Final = ValueList("newest_distinct", newest=True, distinct=True)

#: Each list function and the kind of its slot.
LIST_KINDS: Final = {
    "last_n": NEWEST_VALUES.name,
    "first_n": OLDEST_VALUES.name,
    "last_distinct_n": NEWEST_DISTINCT.name,
}


def _list_slot(agg: SlotSource) -> SketchSlot:
    n = agg.param("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LIST_LENGTH:
        raise KernelSpecError(
            f"AggregationSpec '{agg.output_name}': param 'n': expected an int 1..{MAX_LIST_LENGTH} "
            f"for {agg.function}, got {n!r}",
            hint=f"give {agg.function} its length, e.g. params=(('n', 5),)",
        )
    return SketchSlot.of(agg.column, LIST_KINDS[agg.function], n=n)


#: Function -> slot builder, joined into ``engine.kernel.sketch_kinds.SLOT_BUILDERS``.
LIST_SLOT_BUILDERS: Final[dict[str, Callable[[SlotSource], SketchSlot]]] = dict.fromkeys(LIST_KINDS, _list_slot)

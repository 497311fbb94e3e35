"""The sketch kinds of distinct counts and percentiles (docs/semantics.md "Sketch functions").

Each kind's blob has a fixed little-endian byte layout and one canonical form, so
equal states are equal bytes:

``distinct_set`` (``count_distinct``, param ``max_distinct`` B)
    the sorted distinct 64-bit value hashes, ``uint64[n]``; more than B of them is the
    one byte ``b"\\xff"`` (over the bound: merging it with anything stays over).
``hll`` (``count_distinct_approx``, param ``precision`` p)
    the ``2**p`` HyperLogLog registers (uint8): dense as ``uint8[2**p]``, or sparse as
    ``uint32 index[n]`` then ``uint8 rank[n]`` for the n non-zero registers when
    ``5 * n < 2**p`` (the two lengths never coincide). Registers merge by maximum.
``ddsketch`` (``percentile``, ``median``, param ``alpha``)
    header ``<QII`` (zero_count, n_pos, n_neg), then the ``int32`` keys of the positive
    store's non-empty buckets (ascending), then the negative store's (keys of ``|x|``),
    then their ``uint64`` counts in the same order. Bucket ``k`` holds ``gamma**(k-1) < |x| <= gamma**k``,
    ``gamma = (1 + alpha) / (1 - alpha)``; its value is ``2 * gamma**k / (gamma + 1)``,
    within ``alpha`` of every ``|x|`` it holds. Stores are trimmed to their first and
    last non-empty buckets; a store spanning more than :data:`MAX_BUCKETS` keys folds
    its lowest keys into ``top - MAX_BUCKETS + 1`` (collapsing lowest: only the smallest
    magnitudes of a distribution spanning over ``gamma**MAX_BUCKETS`` lose accuracy).
    Counts merge by addition, then the same fold: the result depends only on the
    summed counts, so any order of merges gives the same bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import TileCodecError
from engine.kernel.layout import AggregationSpec
from engine.kernel.sketches import (
    EMPTY_BLOB,
    Int64Array,
    Params,
    SketchSlot,
    UInt64Array,
    hash_values,
    register_kind,
)
from engine.kernel.value_lists import LIST_SLOT_BUILDERS, ListItem

#: count_distinct's largest allowed max_distinct (docs/semantics.md).
MAX_DISTINCT_LIMIT: Final = 10_000
HLL_MIN_PRECISION: Final = 4
HLL_MAX_PRECISION: Final = 18
HLL_DEFAULT_PRECISION: Final = 12
DDSKETCH_DEFAULT_ALPHA: Final = 0.01
DDSKETCH_MIN_ALPHA: Final = 1e-4
DDSKETCH_MAX_ALPHA: Final = 0.5
#: Buckets kept per DDSketch store before the lowest are folded (module docstring).
MAX_BUCKETS: Final = 2048


class OverBound:
    """The value of an exact ``count_distinct`` whose window holds more than its bound."""

    _instance: OverBound | None = None

    def __new__(cls) -> OverBound:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OVER_BOUND"


OVER_BOUND: Final = OverBound()

SketchValue = int | float | OverBound | list[ListItem] | None


def _group_ids(starts: Int64Array, n: int) -> Int64Array:
    lengths = np.diff(np.append(starts, n))
    return np.repeat(np.arange(len(starts), dtype=np.int64), lengths)


def _split(keys: Int64Array, groups: Int64Array, n_groups: int) -> list[slice]:
    bounds = np.searchsorted(groups, np.arange(n_groups + 1)).tolist()
    return [slice(bounds[g], bounds[g + 1]) for g in range(n_groups)]


# -- exact distinct sets ------------------------------------------------------------------

_OVERFLOW = b"\xff"


@dataclass(frozen=True)
class DistinctSet:
    name: str = "distinct_set"

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        bound = int(slot.param("max_distinct"))
        hashes = hash_values(values)
        groups = _group_ids(starts, len(hashes))
        order = np.lexsort((hashes, groups))
        h, g = hashes[order], groups[order]
        keep = np.ones(len(h), dtype=bool)
        keep[1:] = (h[1:] != h[:-1]) | (g[1:] != g[:-1])
        h, g = h[keep], g[keep]
        return [_distinct_blob(h[part], bound) for part in _split(h.view(np.int64), g, len(starts))]

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        if a == _OVERFLOW or b == _OVERFLOW:
            return _OVERFLOW
        union = np.union1d(_hashes(a), _hashes(b))
        return _distinct_blob(union, int(slot.param("max_distinct")))

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> SketchValue:
        if blob == _OVERFLOW:
            return OVER_BOUND
        return len(blob) // 8


def _distinct_blob(sorted_hashes: UInt64Array, bound: int) -> bytes:
    if len(sorted_hashes) > bound:
        return _OVERFLOW
    return sorted_hashes.astype("<u8", copy=False).tobytes()


def _hashes(blob: bytes) -> UInt64Array:
    if len(blob) % 8:
        raise TileCodecError(
            f"distinct_set blob: length: expected a multiple of 8 bytes, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)


# -- HyperLogLog ----------------------------------------------------------------------------


def leading_zeros64(x: UInt64Array) -> Int64Array:
    """Number of leading zero bits of each uint64 (64 for zero), by binary search."""
    x = x.astype(np.uint64, copy=True)
    n = np.zeros(len(x), dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        empty_top = (x >> np.uint64(64 - shift)) == 0
        n[empty_top] += shift
        x[empty_top] <<= np.uint64(shift)
    n[x == 0] = 64
    return n


def hll_ranks(hashes: UInt64Array, precision: int) -> tuple[Int64Array, Int64Array]:
    """(register index, rank) of each hash: the top ``p`` bits pick the register, the
    rank is the position of the first 1 bit in the remaining ``64 - p`` bits (``64 - p + 1``
    when they are all zero)."""
    p = np.uint64(precision)
    index = (hashes >> np.uint64(64 - precision)).astype(np.int64)
    rest = hashes << p
    rank = np.minimum(leading_zeros64(rest) + 1, 64 - precision + 1)
    return index, rank


def _hll_blob(index: Int64Array, rank: Int64Array, m: int) -> bytes:
    """Canonical blob of the non-zero registers ``index`` (sorted) with ``rank``."""
    if not len(index):
        return EMPTY_BLOB
    if 5 * len(index) < m:
        return index.astype("<u4").tobytes() + rank.astype(np.uint8).tobytes()
    dense = np.zeros(m, dtype=np.uint8)
    dense[index] = rank
    return dense.tobytes()


def hll_registers(blob: bytes, precision: int) -> npt.NDArray[np.uint8]:
    m = 1 << precision
    dense = np.zeros(m, dtype=np.uint8)
    if len(blob) == m:
        dense[:] = np.frombuffer(blob, dtype=np.uint8)
    elif len(blob) % 5 == 0 and 5 * (len(blob) // 5) < m:
        n = len(blob) // 5
        index = np.frombuffer(blob, dtype="<u4", count=n).astype(np.int64)
        dense[index] = np.frombuffer(blob, dtype=np.uint8, offset=4 * n)
    else:
        raise TileCodecError(
            f"hll blob (precision {precision}): length: expected {m} bytes (dense) or 5*n < {m} "
            f"(sparse), got {len(blob)}",
            hint="the stored value is corrupt, or the precision changed without a new fingerprint",
        )
    return dense


def hll_estimate(registers: npt.NDArray[np.uint8]) -> float:
    """The HyperLogLog estimate with linear counting for small cardinalities:
    ``E = alpha_m * m**2 / sum(2**-M[j])``; when ``E <= 2.5 * m`` and some register is
    zero, ``m * ln(m / zeros)``. (64-bit hashes need no large-range correction.)"""
    m = len(registers)
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1 + 1.079 / m))
    raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return raw


@dataclass(frozen=True)
class HyperLogLog:
    name: str = "hll"

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        precision = int(slot.param("precision"))
        index, rank = hll_ranks(hash_values(values), precision)
        groups = _group_ids(starts, len(index))
        order = np.lexsort((rank, index, groups))
        index, rank, groups = index[order], rank[order], groups[order]
        last = np.ones(len(index), dtype=bool)  # the greatest rank of each (group, register)
        last[:-1] = (index[1:] != index[:-1]) | (groups[1:] != groups[:-1])
        index, rank, groups = index[last], rank[last], groups[last]
        m = 1 << precision
        return [_hll_blob(index[part], rank[part], m) for part in _split(index, groups, len(starts))]

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        precision = int(slot.param("precision"))
        merged = np.maximum(hll_registers(a, precision), hll_registers(b, precision))
        index = np.flatnonzero(merged).astype(np.int64)
        return _hll_blob(index, merged[index].astype(np.int64), 1 << precision)

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> SketchValue:
        if not blob:
            return 0
        return round(hll_estimate(hll_registers(blob, int(slot.param("precision")))))


# -- DDSketch ------------------------------------------------------------------------------

_DD_HEADER = struct.Struct("<QII")


@dataclass(frozen=True)
class _Store:
    offset: int
    counts: npt.NDArray[np.uint64]


@dataclass(frozen=True)
class DDState:
    zero: int
    positive: _Store
    negative: _Store

    @property
    def total(self) -> int:
        return self.zero + int(self.positive.counts.sum()) + int(self.negative.counts.sum())


def dd_gamma(alpha: float) -> float:
    return (1 + alpha) / (1 - alpha)


def dd_keys(magnitudes: npt.NDArray[np.float64], alpha: float) -> Int64Array:
    """Bucket key of each ``|x| > 0``: ``ceil(log(|x|) / log(gamma))``."""
    return np.ceil(np.log(magnitudes) / math.log(dd_gamma(alpha))).astype(np.int64)


def dd_value(key: int, alpha: float) -> float:
    gamma = dd_gamma(alpha)
    return 2.0 * gamma**key / (gamma + 1.0)


def _canonical_store(offset: int, counts: npt.NDArray[np.uint64]) -> _Store:
    nz = np.flatnonzero(counts)
    if not len(nz):
        return _Store(0, np.zeros(0, dtype=np.uint64))
    lo, hi = int(nz[0]), int(nz[-1])
    counts = counts[lo : hi + 1]
    offset += lo
    if len(counts) > MAX_BUCKETS:
        cut = len(counts) - MAX_BUCKETS
        folded = counts[cut:].copy()
        folded[0] += counts[:cut].sum(dtype=np.uint64)
        counts, offset = folded, offset + cut
    return _Store(offset, counts.astype(np.uint64))


def _store_of(keys: Int64Array, counts: Int64Array) -> _Store:
    if not len(keys):
        return _Store(0, np.zeros(0, dtype=np.uint64))
    lo = int(keys.min())
    dense = np.zeros(int(keys.max()) - lo + 1, dtype=np.uint64)
    np.add.at(dense, keys - lo, counts.astype(np.uint64))
    return _canonical_store(lo, dense)


def dd_encode(state: DDState) -> bytes:
    if state.total == 0:
        return EMPTY_BLOB
    pos_keys = np.flatnonzero(state.positive.counts)
    neg_keys = np.flatnonzero(state.negative.counts)
    return b"".join(
        (
            _DD_HEADER.pack(state.zero, len(pos_keys), len(neg_keys)),
            (pos_keys + state.positive.offset).astype("<i4").tobytes(),
            (neg_keys + state.negative.offset).astype("<i4").tobytes(),
            state.positive.counts[pos_keys].astype("<u8").tobytes(),
            state.negative.counts[neg_keys].astype("<u8").tobytes(),
        )
    )


def dd_decode(blob: bytes) -> DDState:
    empty = _Store(0, np.zeros(0, dtype=np.uint64))
    if not blob:
        return DDState(0, empty, empty)
    if len(blob) < _DD_HEADER.size:
        raise TileCodecError(
            f"ddsketch blob: header: expected {_DD_HEADER.size} bytes, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    zero, n_pos, keys, counts = _dd_buckets(blob)
    return DDState(
        zero,
        _store_of(keys[:n_pos], counts[:n_pos].astype(np.int64)),
        _store_of(keys[n_pos:], counts[n_pos:].astype(np.int64)),
    )


def _dd_buckets(blob: bytes) -> tuple[int, int, Int64Array, npt.NDArray[np.uint64]]:
    """A non-empty blob's zero count, positive bucket count, bucket keys and counts
    (positive buckets first), checked against the blob's length."""
    zero, n_pos, n_neg = _DD_HEADER.unpack_from(blob, 0)
    n = n_pos + n_neg
    if len(blob) != _DD_HEADER.size + 12 * n:
        raise TileCodecError(
            f"ddsketch blob: length: expected {_DD_HEADER.size + 12 * n} bytes for "
            f"{n_pos} + {n_neg} buckets, got {len(blob)}",
            hint="the stored value is corrupt",
        )
    keys = np.frombuffer(blob, dtype="<i4", count=n, offset=_DD_HEADER.size).astype(np.int64)
    counts = np.frombuffer(blob, dtype="<u8", count=n, offset=_DD_HEADER.size + 4 * n)
    return int(zero), int(n_pos), keys, counts


def dd_merge_many(blobs: Sequence[bytes]) -> bytes:
    """The merge of many blobs at once: every bucket added in one pass and the result
    made canonical once. The same bytes as merging them pairwise in any order (adding
    counts commutes, and folding the lowest buckets past MAX_BUCKETS depends only on the
    final highest key), without decoding and re-encoding after every step."""
    present = [blob for blob in blobs if blob]
    if len(present) <= 1:
        return present[0] if present else EMPTY_BLOB
    zero = 0
    pos_keys: list[Int64Array] = []
    pos_counts: list[npt.NDArray[np.uint64]] = []
    neg_keys: list[Int64Array] = []
    neg_counts: list[npt.NDArray[np.uint64]] = []
    for blob in present:
        z, n_pos, keys, counts = _dd_buckets(blob)
        zero += z
        pos_keys.append(keys[:n_pos])
        pos_counts.append(counts[:n_pos])
        neg_keys.append(keys[n_pos:])
        neg_counts.append(counts[n_pos:])
    return dd_encode(
        DDState(
            zero,
            _store_of(np.concatenate(pos_keys), np.concatenate(pos_counts).astype(np.int64)),
            _store_of(np.concatenate(neg_keys), np.concatenate(neg_counts).astype(np.int64)),
        )
    )


def _add_stores(a: _Store, b: _Store) -> _Store:
    if not len(a.counts):
        return b
    if not len(b.counts):
        return a
    lo = min(a.offset, b.offset)
    hi = max(a.offset + len(a.counts), b.offset + len(b.counts))
    dense = np.zeros(hi - lo, dtype=np.uint64)
    dense[a.offset - lo : a.offset - lo + len(a.counts)] += a.counts
    dense[b.offset - lo : b.offset - lo + len(b.counts)] += b.counts
    return _canonical_store(lo, dense)


def dd_quantile(state: DDState, q: float, alpha: float) -> float | None:
    """The value of rank ``floor(q * (count - 1))`` (0-based, ascending)."""
    total = state.total
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    neg = state.negative
    # Ascending values: negative store from its largest magnitude down, zero, positive up.
    neg_cum = np.cumsum(neg.counts[::-1], dtype=np.uint64)
    if len(neg_cum) and rank < int(neg_cum[-1]):
        i = int(np.searchsorted(neg_cum, rank, side="right"))
        return -dd_value(neg.offset + len(neg.counts) - 1 - i, alpha)
    rank -= int(neg_cum[-1]) if len(neg_cum) else 0
    if rank < state.zero:
        return 0.0
    rank -= state.zero
    pos_cum = np.cumsum(state.positive.counts, dtype=np.uint64)
    i = int(np.searchsorted(pos_cum, rank, side="right"))
    return dd_value(state.positive.offset + i, alpha)


def _dd_blobs(g: Int64Array, s: Int64Array, k: Int64Array, counts: Int64Array, n_groups: int) -> list[bytes]:
    """Canonical blobs from runs sorted by (group, sign, key), one run per bucket.

    The runs of a group already are its sparse form (negative keys ascending, the zero
    bucket, positive keys ascending), so each blob is sliced from two byte strings; a
    store spanning more than MAX_BUCKETS keys takes the folding path.
    """
    ranked = g * 3 + (s + 1)
    group_end = np.searchsorted(g, np.arange(1, n_groups + 1)).tolist()
    neg_end = np.searchsorted(ranked, np.arange(n_groups) * 3 + 1).tolist()
    zero_end = np.searchsorted(ranked, np.arange(n_groups) * 3 + 2).tolist()
    keys = k.astype("<i4").tobytes()
    count_bytes = counts.astype("<u8").tobytes()
    key_list, count_list = k.tolist(), counts.tolist()
    out: list[bytes] = []
    begin = 0
    for group in range(n_groups):
        end, ne, ze = group_end[group], neg_end[group], zero_end[group]
        zero = count_list[ne] if ze > ne else 0
        too_wide = (end > ze and key_list[end - 1] - key_list[ze] >= MAX_BUCKETS) or (
            ne > begin and key_list[ne - 1] - key_list[begin] >= MAX_BUCKETS
        )
        if too_wide:
            pos, neg = slice(ze, end), slice(begin, ne)
            state = DDState(
                zero,
                _store_of(k[pos], counts[pos]),
                _store_of(k[neg], counts[neg]),
            )
            out.append(dd_encode(state))
        else:
            out.append(
                b"".join(
                    (
                        _DD_HEADER.pack(zero, end - ze, ne - begin),
                        keys[4 * ze : 4 * end],
                        keys[4 * begin : 4 * ne],
                        count_bytes[8 * ze : 8 * end],
                        count_bytes[8 * begin : 8 * ne],
                    )
                )
            )
        begin = end
    return out


@dataclass(frozen=True)
class DDSketch:
    name: str = "ddsketch"

    def build(
        self,
        slot: SketchSlot,
        values: npt.NDArray[np.generic],
        event_ts: Int64Array,
        positions: Int64Array,
        starts: Int64Array,
    ) -> list[bytes]:
        alpha = float(slot.param("alpha"))
        x = np.asarray(values, dtype=np.float64)
        groups = _group_ids(starts, len(x))
        sign = np.sign(x).astype(np.int64)
        keys = np.zeros(len(x), dtype=np.int64)
        nonzero = sign != 0
        keys[nonzero] = dd_keys(np.abs(x[nonzero]), alpha)
        order = np.lexsort((keys, sign, groups))
        g, s, k = groups[order], sign[order], keys[order]
        run = np.ones(len(k), dtype=bool)
        run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1]) | (k[1:] != k[:-1])
        starts_run = np.flatnonzero(run)
        counts = np.diff(np.append(starts_run, len(k)))
        g, s, k = g[starts_run], s[starts_run], k[starts_run]
        return _dd_blobs(g, s, k, counts, len(starts))

    def merge_many(self, slot: SketchSlot, blobs: Sequence[bytes]) -> bytes:
        return dd_merge_many(blobs)

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        sa, sb = dd_decode(a), dd_decode(b)
        return dd_encode(
            DDState(
                sa.zero + sb.zero,
                _add_stores(sa.positive, sb.positive),
                _add_stores(sa.negative, sb.negative),
            )
        )

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> SketchValue:
        q = 0.5 if function == "median" else float(dict(params)["q"])
        return dd_quantile(dd_decode(blob), q, float(slot.param("alpha")))


DISTINCT_SET = register_kind(DistinctSet())
HYPERLOGLOG = register_kind(HyperLogLog())
DDSKETCH = register_kind(DDSketch())

#: Function -> the slot its aggregation reads (the list functions' from engine/kernel/value_lists.py).
SLOT_BUILDERS: dict[str, Callable[[AggregationSpec], SketchSlot]] = {
    **LIST_SLOT_BUILDERS,
    "count_distinct": lambda agg: SketchSlot.of(
        agg.column, "distinct_set", max_distinct=int(agg.param("max_distinct") or 0)
    ),
    "count_distinct_approx": lambda agg: SketchSlot.of(
        agg.column, "hll", precision=int(agg.param("precision") or HLL_DEFAULT_PRECISION)
    ),
    "percentile": lambda agg: SketchSlot.of(
        agg.column, "ddsketch", alpha=float(agg.param("alpha") or DDSKETCH_DEFAULT_ALPHA)
    ),
    "median": lambda agg: SketchSlot.of(
        agg.column, "ddsketch", alpha=float(agg.param("alpha") or DDSKETCH_DEFAULT_ALPHA)
    ),
}


def slot_for(agg: AggregationSpec) -> SketchSlot | None:
    builder = SLOT_BUILDERS.get(agg.function)
    return None if builder is None else builder(agg)


def evaluate_blob(agg: AggregationSpec, slot: SketchSlot, blob: bytes) -> SketchValue:
    """The value of ``agg`` over the merged blob of its window."""
    value = slot.implementation.evaluate(slot, agg.function, agg.params, blob)
    if value is None or isinstance(value, int | float | OverBound | list):
        return value
    raise TypeError(f"sketch kind {slot.kind!r} evaluated {agg.output_name!r} to {value!r}")

"""The DDSketch of ``percentile`` and ``median`` (param ``alpha``; docs/semantics.md
"Sketch functions").

Blob: header ``<QII`` (zero_count, n_pos, n_neg), then the ``int32`` keys of the
positive store's non-empty buckets (ascending), then the negative store's (keys of
``|x|``), then their ``uint64`` counts in the same order. Bucket ``k`` holds
``gamma**(k-1) < |x| <= gamma**k``, ``gamma = (1 + alpha) / (1 - alpha)``; its value is
``2 * gamma**k / (gamma + 1)``, within ``alpha`` of every ``|x|`` it holds. Stores are
trimmed to their first and last non-empty buckets; a store spanning more than
:data:`MAX_BUCKETS` keys folds its lowest keys into ``top - MAX_BUCKETS + 1``
(collapsing lowest: only the smallest magnitudes of a distribution spanning over
``gamma**MAX_BUCKETS`` lose accuracy, and a quantile landing in that bucket is NaN). Counts merge by addition, then the same fold:
the result depends only on the summed counts, so any order of merges gives the same
bytes.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.kernel.blob_buffers import JoinedBlobs, first_of_runs, group_bounds, lex_order, scatter, slices
from engine.kernel.exceptions import TileCodecError
from engine.kernel.sketch_slot import EMPTY_BLOB, Int64Array, Params, SketchSlot, group_ids

DDSKETCH_DEFAULT_ALPHA: Final = 0.01
DDSKETCH_MIN_ALPHA: Final = 1e-4
DDSKETCH_MAX_ALPHA: Final = 0.5
#: Buckets kept per DDSketch store before the lowest are folded (module docstring).
MAX_BUCKETS: Final = 2048
_DD_HEADER = struct.Struct("<QII")
_LARGEST: Final = sys.float_info.max


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
    try:
        value = 2.0 * gamma**key / (gamma + 1.0)
    except OverflowError:  # gamma**key is beyond the largest double, its bucket value not
        value = math.inf
    if value == math.inf:  # the same value without an intermediate beyond the largest double
        value = gamma ** (key - 1) * (2.0 * gamma / (gamma + 1.0))
    # Every value a bucket holds is at most the largest double, so the largest double is
    # closer to each of them than a bucket value beyond it (the alpha bound still holds).
    return min(value, _LARGEST)


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
    return dd_merge_groups(blobs, np.zeros(len(blobs), dtype=np.int64), 1)[0]


def dd_merge_groups(blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
    """:func:`dd_merge_many` of every group at once: all blobs' buckets read with array
    gathers over the joined bytes, tagged (group, sign, key), sorted once and summed per
    bucket, then laid out by :func:`_dd_blobs` (the build's own canonical writer)."""
    present = [i for i, blob in enumerate(blobs) if blob]
    joined = JoinedBlobs.of([blobs[i] for i in present])
    of_blob = np.asarray(groups, dtype=np.int64)[present]
    short = joined.lengths < _DD_HEADER.size
    if bool(short.any()):
        dd_decode(blobs[present[int(np.flatnonzero(short)[0])]])  # raises the header error
    zero = joined.words(joined.starts, "<u8").astype(np.uint64)
    n_pos = joined.words(joined.starts + 8, "<u4").astype(np.int64)
    n_neg = joined.words(joined.starts + 12, "<u4").astype(np.int64)
    n = n_pos + n_neg
    bad = joined.lengths != _DD_HEADER.size + 12 * n
    if bool(bad.any()):
        _dd_buckets(blobs[present[int(np.flatnonzero(bad)[0])]])  # raises the length error
    of_bucket = np.repeat(np.arange(len(present), dtype=np.int64), n)
    j = np.arange(len(of_bucket), dtype=np.int64) - (np.cumsum(n) - n)[of_bucket]
    keys_at = joined.starts[of_bucket] + _DD_HEADER.size
    keys = joined.words(keys_at + 4 * j, "<i4").astype(np.int64)
    counts = joined.words(keys_at + 4 * n[of_bucket] + 8 * j, "<u8").astype(np.uint64)
    sign = np.where(j < n_pos[of_bucket], 1, -1).astype(np.int64)
    with_zero = np.flatnonzero(zero > 0)
    g = np.concatenate([of_blob[of_bucket], of_blob[with_zero]])
    s = np.concatenate([sign, np.zeros(len(with_zero), dtype=np.int64)])
    k = np.concatenate([keys, np.zeros(len(with_zero), dtype=np.int64)])
    c = np.concatenate([counts, zero[with_zero]])
    order = lex_order((k, s, g))
    g, s, k, c = g[order], s[order], k[order], c[order]
    run = first_of_runs(g, s, k)
    run_starts = np.flatnonzero(run)
    summed = np.add.reduceat(c, run_starts) if len(c) else c
    out = _dd_blobs(g[run_starts], s[run_starts], k[run_starts], summed, n_groups)
    has_blob = np.zeros(n_groups, dtype=bool)
    has_blob[of_blob] = True
    for group in np.flatnonzero(~has_blob).tolist():
        out[group] = EMPTY_BLOB
    return out


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


def _may_be_folded(store: _Store, index: int) -> bool:
    """Whether bucket ``index`` of ``store`` may hold folded values (module docstring): the
    lowest bucket of a store exactly MAX_BUCKETS wide, the width a wider store is cut to."""
    return index == 0 and len(store.counts) == MAX_BUCKETS


def dd_quantile(state: DDState, q: float, alpha: float) -> float | None:
    """The value of rank ``floor(q * (count - 1))`` (0-based, ascending); NaN when that rank
    lies in a bucket that may hold folded values, which has no answer within ``alpha``
    (served null with the status INVALID, never a value labelled PRESENT)."""
    total = state.total
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    neg = state.negative
    # Ascending values: negative store from its largest magnitude down, zero, positive up.
    neg_cum = np.cumsum(neg.counts[::-1], dtype=np.uint64)
    if len(neg_cum) and rank < int(neg_cum[-1]):
        i = int(np.searchsorted(neg_cum, rank, side="right"))
        if _may_be_folded(neg, len(neg.counts) - 1 - i):
            return math.nan
        return -dd_value(neg.offset + len(neg.counts) - 1 - i, alpha)
    rank -= int(neg_cum[-1]) if len(neg_cum) else 0
    if rank < state.zero:
        return 0.0
    rank -= state.zero
    pos_cum = np.cumsum(state.positive.counts, dtype=np.uint64)
    i = int(np.searchsorted(pos_cum, rank, side="right"))
    if _may_be_folded(state.positive, i):
        return math.nan
    return dd_value(state.positive.offset + i, alpha)


def _dd_blobs(g: Int64Array, s: Int64Array, k: Int64Array, counts: Int64Array, n_groups: int) -> list[bytes]:
    """Canonical blobs from runs sorted by (group, sign, key), one run per bucket.

    The runs of a group already are its sparse form (negative keys ascending, the zero
    bucket, positive keys ascending), so every blob is laid out in one byte buffer with
    array scatters and sliced once; a store spanning more than MAX_BUCKETS keys takes
    the folding path (:func:`dd_encode`).
    """
    # Each group's negative runs, zero run and positive runs, as three sub-groups.
    bounds = group_bounds(g * 3 + (s + 1), 3 * n_groups)
    group_begin, neg_end, zero_end, group_end = bounds[:-1:3], bounds[1::3], bounds[2::3], bounds[3::3]
    n_neg, n_pos = neg_end - group_begin, group_end - zero_end
    zero = np.zeros(n_groups, dtype=np.uint64)
    has_zero = zero_end > neg_end
    zero[has_zero] = counts[neg_end[has_zero]]
    n = n_pos + n_neg
    sizes = _DD_HEADER.size + 12 * n
    blob_end = np.cumsum(sizes)
    blob_begin = blob_end - sizes
    buf = np.zeros(int(blob_end[-1]) if n_groups else 0, dtype=np.uint8)
    scatter(buf, blob_begin, zero.astype("<u8"), 8)
    scatter(buf, blob_begin + 8, n_pos.astype("<u4"), 4)
    scatter(buf, blob_begin + 12, n_neg.astype("<u4"), 4)
    run_group = g[s != 0]
    positive = s[s != 0] > 0
    # Rank of each bucket in its store; the positive store comes first in both arrays.
    rank = np.flatnonzero(s != 0) - np.where(positive, zero_end[run_group], group_begin[run_group])
    key_at = blob_begin[run_group] + _DD_HEADER.size + 4 * rank + np.where(positive, 0, 4 * n_pos[run_group])
    count_at = blob_begin[run_group] + _DD_HEADER.size + 4 * n[run_group] + 8 * rank
    count_at += np.where(positive, 0, 8 * n_pos[run_group])
    scatter(buf, key_at, k[s != 0].astype("<i4"), 4)
    scatter(buf, count_at, counts[s != 0].astype("<u8"), 8)
    out = slices(buf.tobytes(), blob_begin, blob_end)
    if not len(k):
        return out
    last = len(k) - 1
    wide = (n_pos > 0) & (k[np.maximum(group_end - 1, 0)] - k[np.minimum(zero_end, last)] >= MAX_BUCKETS)
    wide |= (n_neg > 0) & (k[np.maximum(neg_end - 1, 0)] - k[np.minimum(group_begin, last)] >= MAX_BUCKETS)
    for group in np.flatnonzero(wide).tolist():
        begin, ne, ze, end = int(group_begin[group]), int(neg_end[group]), int(zero_end[group]), int(group_end[group])
        pos_runs, neg_runs = slice(ze, end), slice(begin, ne)
        state = DDState(
            int(zero[group]), _store_of(k[pos_runs], counts[pos_runs]), _store_of(k[neg_runs], counts[neg_runs])
        )
        out[group] = dd_encode(state)
    return out


@dataclass(frozen=True)
class DDSketch:
    name: str = "ddsketch"
    # Up to this many pairs are merged one by one (SketchKind.pairwise_merges): measured crossover.
    pairwise_merges: int = 2

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
        groups = group_ids(starts, len(x))
        sign = np.sign(x).astype(np.int64)
        keys = np.zeros(len(x), dtype=np.int64)
        nonzero = sign != 0
        keys[nonzero] = dd_keys(np.abs(x[nonzero]), alpha)
        order = lex_order((keys, sign, groups))
        g, s, k = groups[order], sign[order], keys[order]
        run = np.ones(len(k), dtype=bool)
        run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1]) | (k[1:] != k[:-1])
        starts_run = np.flatnonzero(run)
        counts = np.diff(np.append(starts_run, len(k)))
        g, s, k = g[starts_run], s[starts_run], k[starts_run]
        return _dd_blobs(g, s, k, counts, len(starts))

    def merge_groups(self, slot: SketchSlot, blobs: Sequence[bytes], groups: Int64Array, n_groups: int) -> list[bytes]:
        return dd_merge_groups(blobs, groups, n_groups)

    def merge(self, slot: SketchSlot, a: bytes, b: bytes) -> bytes:
        sa, sb = dd_decode(a), dd_decode(b)
        return dd_encode(
            DDState(
                sa.zero + sb.zero,
                _add_stores(sa.positive, sb.positive),
                _add_stores(sa.negative, sb.negative),
            )
        )

    def evaluate(self, slot: SketchSlot, function: str, params: Params, blob: bytes) -> float | None:
        q = 0.5 if function == "median" else float(dict(params)["q"])
        return dd_quantile(dd_decode(blob), q, float(slot.param("alpha")))


DDSKETCH: Final = DDSketch()

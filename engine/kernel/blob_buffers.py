"""Many variable-size byte strings as one buffer: the array tools the batch merges,
the record codec and the kinds share, so reading or writing a batch of blobs costs a
few numpy calls and one slice per blob instead of Python work per field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]


def runs(starts: Int64Array, lengths: Int64Array) -> Int64Array:
    """Concatenation of ``arange(s, s + n)`` for each (start, length) pair."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    # Element i of run r is starts[r] + (i - first element of run r): five numpy calls
    # whatever the sizes (small batches pay per call, not per element).
    out: Int64Array = np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)
    return out


# From this many words per run on, one slice per run beats one gather through an index
# of every word (measured crossover about 200 words; records of a day of minute tiles
# hold thousands).
SLICED_RUN_WORDS = 256


def _long_runs(lengths: Int64Array) -> bool:
    return len(lengths) > 0 and int(lengths.sum()) >= SLICED_RUN_WORDS * len(lengths)


def gather_runs(data: npt.NDArray[np.generic], starts: Int64Array, lengths: Int64Array) -> npt.NDArray[np.generic]:
    """``data[runs(starts, lengths)]``: one gather for short runs, one slice each for long ones."""
    if not _long_runs(lengths):
        gathered: npt.NDArray[np.generic] = data[runs(starts, lengths)]
        return gathered
    return np.concatenate([data[a : a + n] for a, n in zip(starts.tolist(), lengths.tolist(), strict=True)])


def scatter_runs(
    out: npt.NDArray[np.generic], starts: Int64Array, lengths: Int64Array, values: npt.NDArray[np.generic]
) -> None:
    """``out[runs(starts, lengths)] = values``: one scatter for short runs, one slice
    assignment each for long ones."""
    if not _long_runs(lengths):
        out[runs(starts, lengths)] = values
        return
    ends = np.cumsum(lengths).tolist()
    for a, n, end in zip(starts.tolist(), lengths.tolist(), ends, strict=True):
        out[a : a + n] = values[end - n : end]


@dataclass(frozen=True)
class JoinedBlobs:
    """Blobs back to back: blob ``i`` is ``data[starts[i] : starts[i] + lengths[i]]``."""

    data: bytes
    starts: Int64Array
    lengths: Int64Array

    @classmethod
    def of(cls, blobs: Sequence[bytes]) -> JoinedBlobs:
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
        return cls(b"".join(blobs), np.cumsum(lengths) - lengths, lengths)

    @property
    def buffer(self) -> npt.NDArray[np.uint8]:
        return np.frombuffer(self.data, dtype=np.uint8)

    def words(self, offsets: Int64Array, dtype: str) -> npt.NDArray[np.generic]:
        """The little-endian words of ``dtype`` (``"<u4"``, ``"<i8"``, ...) starting at
        each byte offset of ``data`` (any alignment)."""
        if not len(offsets):
            return np.empty(0, dtype=dtype)
        words: npt.NDArray[np.generic] = _unaligned(self.data, np.dtype(dtype))[offsets]
        return words


def _unaligned(data: bytes | npt.NDArray[np.uint8], dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    """Every word of ``dtype`` in ``data``, one starting at each byte (a view with a
    one-byte stride, any alignment): indexing it reads or writes whole words at byte
    offsets with one gather, instead of gathering their bytes one by one."""
    return np.ndarray((max(len(data) - dtype.itemsize + 1, 0),), dtype=dtype, buffer=data, strides=(1,))


def scatter(buf: npt.NDArray[np.uint8], offsets: Int64Array, words: npt.NDArray[np.generic], width: int) -> None:
    """Write each fixed-width little-endian word at its byte offset."""
    if not len(offsets):
        return
    if words.dtype.itemsize == width:
        _unaligned(buf, words.dtype)[offsets] = words
    else:
        buf[offsets[:, None] + np.arange(width)] = np.frombuffer(words.tobytes(), dtype=np.uint8).reshape(-1, width)


def slices(data: bytes, begins: Int64Array, ends: Int64Array) -> list[bytes]:
    """``data[begins[i] : ends[i]]`` for each i."""
    return [data[a:b] for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]


def group_bounds(groups: Int64Array, n_groups: int) -> Int64Array:
    """``np.searchsorted(groups, np.arange(n_groups + 1))`` of sorted non-negative group
    ids: where each group's rows begin (and the last ends), from one count per group
    instead of a binary search per group."""
    counts = np.bincount(groups, minlength=n_groups)[:n_groups]
    bounds: Int64Array = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    return bounds


def first_of_runs(*keys: Int64Array) -> npt.NDArray[np.bool_]:
    """For rows sorted by ``keys``: True where a row starts a new run of equal keys."""
    n = len(keys[0])
    out = np.ones(n, dtype=bool)
    if n > 1:
        same = np.ones(n - 1, dtype=bool)
        for key in keys:
            same &= key[1:] == key[:-1]
        out[1:] = ~same
    return out


def lex_order(keys: Sequence[npt.NDArray[np.generic]]) -> npt.NDArray[np.intp]:
    """The permutation ``np.lexsort(keys)`` (last key primary), as one stable argsort of
    the keys packed into one int64 when their value ranges fit in 62 bits together:
    several times faster than lexsort's pass per key, and the same permutation (both
    are stable). Keys that do not fit (64-bit hashes, wide times) take ``np.lexsort``."""
    n = len(keys[0]) if keys else 0
    if n < 2:
        return np.arange(n, dtype=np.intp)
    packed = np.zeros(n, dtype=np.int64)
    shift = 0
    for key in keys:  # least significant first, as lexsort reads them
        if key.dtype.kind not in "iub":
            return np.lexsort(keys)
        lo, hi = int(key.min()), int(key.max())
        bits = (hi - lo).bit_length()
        if shift + bits > 62 or hi >= 2**63:
            return np.lexsort(keys)
        if bits:
            packed |= (key.astype(np.int64) - lo) << shift
            shift += bits
    return np.argsort(packed, kind="stable")

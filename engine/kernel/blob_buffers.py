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
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    run_start = np.cumsum(lengths) - lengths
    nonempty = lengths > 0
    steps = np.ones(total, dtype=np.int64)
    # At each run's first element jump from the previous run's end to its start.
    first = run_start[nonempty]
    s = starts[nonempty]
    steps[first[0]] = s[0]
    steps[first[1:]] = s[1:] - (s[:-1] + lengths[nonempty][:-1] - 1)
    return np.cumsum(steps)


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
        width = np.dtype(dtype).itemsize
        if not len(offsets):
            return np.empty(0, dtype=dtype)
        raw = self.buffer[offsets[:, None] + np.arange(width)]
        words: npt.NDArray[np.generic] = raw.reshape(-1).view(dtype)
        return words


def scatter(buf: npt.NDArray[np.uint8], offsets: Int64Array, words: npt.NDArray[np.generic], width: int) -> None:
    """Write each fixed-width little-endian word at its byte offset."""
    if len(offsets):
        buf[offsets[:, None] + np.arange(width)] = np.frombuffer(words.tobytes(), dtype=np.uint8).reshape(-1, width)


def slices(data: bytes, begins: Int64Array, ends: Int64Array) -> list[bytes]:
    """``data[begins[i] : ends[i]]`` for each i."""
    return [data[a:b] for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]


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

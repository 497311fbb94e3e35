"""Canonical value bytes and the deterministic value hash of the sketch kinds
(docs/semantics.md "Sketch functions"): the one owner of the canonical encoding (a type
tag ``s``/``i``/``f``/``b``, then the value), which the list kinds store and decode and
whose BLAKE2b-64 the distinct-count kinds keep, the same in streaming, backfill, serving
and training sets."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError, TileCodecError
from engine.kernel.sketch_slot import UInt64Array

_TAG_STR = b"s"
_TAG_INT = b"i"
_TAG_FLOAT = b"f"
_TAG_BOOL = b"b"
_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")

#: A decoded value of a list function (the inverse of :func:`canonical_bytes`).
ListItem = str | int | float | bool
_TAG_DECODERS: dict[int, Callable[[bytes], ListItem]] = {
    _TAG_STR[0]: lambda raw: raw.decode("utf-8"),
    _TAG_INT[0]: lambda raw: int(_INT64.unpack(raw)[0]),
    _TAG_FLOAT[0]: lambda raw: float(_FLOAT64.unpack(raw)[0]),
    _TAG_BOOL[0]: lambda raw: raw == b"\x01",
}


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
    hashed once (found by a dict for strings, ``np.unique`` otherwise), so a batch costs
    one BLAKE2b per distinct value."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64) + 0.0  # -0.0 and 0.0 are the same float
    if arr.dtype.kind == "O":
        items = arr.tolist()
        if all(type(v) is str for v in items):  # a string column: a dict finds the distinct values without sorting
            ids: dict[str, int] = {}
            inverse = np.fromiter((ids.setdefault(v, len(ids)) for v in items), dtype=np.int64, count=len(items))
            distinct = np.fromiter(
                (hash_bytes(_TAG_STR + v.encode("utf-8")) for v in ids), dtype=np.uint64, count=len(ids)
            )
            return np.asarray(distinct[inverse], dtype=np.uint64)
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


def value_bytes(values: npt.NDArray[np.generic]) -> list[bytes]:
    """:func:`canonical_bytes` of every value, with one conversion per array for numbers."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        raw, tag = arr.astype("<i8").tobytes(), _TAG_INT
        return [tag + raw[8 * i : 8 * i + 8] for i in range(len(arr))]
    if arr.dtype.kind == "f":
        raw, tag = (arr.astype(np.float64) + 0.0).astype("<f8").tobytes(), _TAG_FLOAT  # -0.0 is 0.0
        return [tag + raw[8 * i : 8 * i + 8] for i in range(len(arr))]
    if arr.dtype.kind == "b":
        true, false = _TAG_BOOL + b"\x01", _TAG_BOOL + b"\x00"
        return [true if v else false for v in arr.tolist()]
    tag = _TAG_STR
    return [tag + v.encode("utf-8") if type(v) is str else canonical_bytes(v) for v in arr.tolist()]


def decode_value(raw: bytes) -> ListItem:
    """The decoded value of one canonical encoding (the inverse of :func:`canonical_bytes`)."""
    decoder = _TAG_DECODERS.get(raw[0]) if raw else None
    if decoder is None:
        raise TileCodecError(
            f"value list blob: value: expected a type tag s/i/f/b, got {raw[:1]!r}",
            hint="the stored value is corrupt",
        )
    return decoder(raw[1:])

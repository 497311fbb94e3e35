"""The deterministic value hash of the sketch kinds (docs/semantics.md "Sketch functions"):
BLAKE2b-64 of each value's canonical bytes, the same in streaming, backfill, serving and
training sets."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError
from engine.kernel.sketch_slot import UInt64Array

_TAG_STR = b"s"
_TAG_INT = b"i"
_TAG_FLOAT = b"f"
_TAG_BOOL = b"b"
_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")


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


#: Hashes of recently seen strings. Entity attributes (merchants, cards, devices) recur
#: from batch to batch, and one BLAKE2b costs several times a dict lookup. Bounded: the
#: memo starts over when full (a hash is a pure function of the text, so only the
#: speed depends on what it holds).
_STRING_HASHES: dict[str, int] = {}
_MAX_STRING_HASHES = 1 << 16


def _string_hash(text: str) -> int:
    """The hash of a string value, remembered in :data:`_STRING_HASHES`."""
    if len(_STRING_HASHES) >= _MAX_STRING_HASHES:
        _STRING_HASHES.clear()
    hashed = _STRING_HASHES[text] = hash_bytes(_TAG_STR + text.encode("utf-8"))
    return hashed


#: Canonical bytes of recently seen strings (the list kinds store them), bounded like
#: :data:`_STRING_HASHES`.
_STRING_BYTES: dict[str, bytes] = {}


def _string_bytes(text: str) -> bytes:
    if len(_STRING_BYTES) >= _MAX_STRING_HASHES:
        _STRING_BYTES.clear()
    encoded = _STRING_BYTES[text] = _TAG_STR + text.encode("utf-8")
    return encoded


def canonical_strings(texts: list[str]) -> list[bytes]:
    """``canonical_bytes`` of each string, each text encoded once per process while the
    memo holds it."""
    known = _STRING_BYTES.get
    return [known(text) or _string_bytes(text) for text in texts]


def hash_values(values: npt.NDArray[np.generic]) -> UInt64Array:
    """The 64-bit hash of each value's canonical encoding; each distinct value is
    hashed once (strings once per process while the memo holds them, other values once
    per call, found by ``np.unique``), so a batch costs at most one BLAKE2b per
    distinct value."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64) + 0.0  # -0.0 and 0.0 are the same float
    if arr.dtype.kind == "O":
        items = arr.tolist()
        if all(type(v) is str for v in items):  # a string column: each text hashed once per process
            known = _STRING_HASHES.get
            return np.fromiter((known(v) or _string_hash(v) for v in items), dtype=np.uint64, count=len(items))
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

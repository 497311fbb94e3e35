"""Canonical value bytes and the deterministic value hash of the sketch kinds
(docs/semantics.md "Sketch functions"): the one owner of the canonical encoding (a type
tag ``s``/``i``/``f``/``b``, then the value), which the list kinds store and decode and
whose BLAKE2b-64 the distinct-count kinds keep, the same in streaming, backfill, serving
and training sets."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from itertools import compress, islice, repeat
from operator import is_
from typing import TypeVar, cast

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


def hash_many(datas: Iterable[bytes]) -> UInt64Array:
    """:func:`hash_bytes` of each of ``datas``, read as one little-endian array of the
    joined digests. Each digest starts from a copy of one fresh 8-byte BLAKE2b state
    instead of a new hasher (whose keyword parsing cost about as much as the hashing of a
    short value) and makes no Python int."""
    copy_fresh = _FRESH_BLAKE2B_64.copy
    digests = []
    for data in datas:
        hasher = copy_fresh()
        hasher.update(data)
        digests.append(hasher.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


_FRESH_BLAKE2B_64 = hashlib.blake2b(digest_size=8)


#: Hashes of recently seen strings. Entity attributes (merchants, cards, devices) recur
#: from batch to batch, and one BLAKE2b costs several times a dict lookup. Bounded: the
#: memo starts over when full (a hash is a pure function of the text, so only the
#: speed depends on what it holds).
_STRING_HASHES: dict[str, int] = {}
_MAX_STRING_HASHES = 1 << 16
_Memoized = TypeVar("_Memoized", int, bytes)


def _through_memo(
    texts: list[str], memo: dict[str, _Memoized], compute: Callable[[list[str]], list[_Memoized]]
) -> list[_Memoized]:
    """``compute(distinct texts)`` of each text through ``memo``: C-level lookups per text
    and one ``compute`` call for the distinct texts the memo misses (a per-text generator
    cost several times more). Bounded: the memo starts over when the texts it misses would
    take it past :data:`_MAX_STRING_HASHES` (it then holds this call's texts alone, as many
    as fit)."""
    found = list(map(memo.get, texts))
    if None not in found:
        return cast("list[_Memoized]", found)
    missing = list(dict.fromkeys(compress(texts, map(is_, found, repeat(None)))))
    if len(memo) + len(missing) > _MAX_STRING_HASHES:
        memo.clear()
        missing = list(dict.fromkeys(texts))
        if len(missing) > _MAX_STRING_HASHES:  # more distinct texts than it holds
            computed = dict(zip(missing, compute(missing), strict=True))
            memo.update(islice(computed.items(), _MAX_STRING_HASHES))
            return list(map(computed.__getitem__, texts))
    memo.update(zip(missing, compute(missing), strict=True))
    return list(map(memo.__getitem__, texts))


def _string_hashes(texts: list[str]) -> UInt64Array:
    """The hash of each text, remembered in :data:`_STRING_HASHES`."""
    hashes = _through_memo(
        texts, _STRING_HASHES, lambda missing: hash_many([_TAG_STR + text.encode("utf-8") for text in missing]).tolist()
    )
    return np.array(hashes, dtype=np.uint64)


#: Canonical bytes of recently seen strings (the list kinds store them), bounded like
#: :data:`_STRING_HASHES`.
_STRING_BYTES: dict[str, bytes] = {}


def canonical_strings(texts: list[str]) -> list[bytes]:
    """``canonical_bytes`` of each string, each text encoded once per process while the
    memo holds it."""
    return _through_memo(texts, _STRING_BYTES, lambda missing: [_TAG_STR + text.encode("utf-8") for text in missing])


def _known_string_hashes(items: list[object]) -> UInt64Array | None:
    """The hashes of ``items`` when the memo holds every one (the usual batch of a
    string column), else None. Only strings are the memo's keys and no other value
    equals a string, so a full hit needs no check of the items' types; the hashes go
    straight into the array (a miss, None, stops the copy)."""
    try:
        lookup = cast("dict[object, int]", _STRING_HASHES).get  # any item may be looked up; only strings hit
        return np.fromiter(map(lookup, items), dtype=np.uint64, count=len(items))
    except TypeError:  # a miss, or an unhashable item: the general path decides
        return None


def _known_string_bytes(items: list[object]) -> list[bytes] | None:
    """The encodings of ``items`` when the memo holds every one, else None (as
    :func:`_known_string_hashes`; encodings are never empty)."""
    try:
        known = list(map(cast("dict[object, bytes]", _STRING_BYTES).get, items))
    except TypeError:  # an unhashable item: the general path refuses it by name
        return None
    return cast("list[bytes]", known) if all(known) else None


def hash_values(values: npt.NDArray[np.generic]) -> UInt64Array:
    """The 64-bit hash of each value's canonical encoding; each distinct value is
    hashed once (strings once per process while the memo holds them, other values once
    per call), so a batch costs at most one BLAKE2b per distinct value."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind == "O":
        items = arr.tolist()
        known = _known_string_hashes(items)
        if known is not None:
            return known
        if set(map(type, items)) == {str}:  # a string column: each text hashed once per process
            return _string_hashes(items)
        # Any other object array is told apart by canonical encoding, never by equality:
        # np.unique would take 1, 1.0 and True for one value, whose tags differ.
        encoded = list(map(canonical_bytes, items))
        distinct = list(dict.fromkeys(encoded))
        of_distinct = dict(zip(distinct, hash_many(distinct).tolist(), strict=True))
        return np.fromiter(map(of_distinct.__getitem__, encoded), dtype=np.uint64, count=len(encoded))
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64) + 0.0  # -0.0 and 0.0 are the same float
    uniques, inverse = np.unique(arr, return_inverse=True)
    if arr.dtype.kind == "b":
        encode = [_TAG_BOOL + (b"\x01" if v else b"\x00") for v in uniques.tolist()]
    elif arr.dtype.kind in "iu":
        encode = [_TAG_INT + _INT64.pack(v) for v in uniques.tolist()]
    elif arr.dtype.kind == "f":
        encode = [_TAG_FLOAT + _FLOAT64.pack(v) for v in uniques.tolist()]
    else:  # a numpy string column ("U"); canonical_bytes refuses any other kind by name
        encode = [canonical_bytes(v) for v in uniques.tolist()]
    return np.asarray(hash_many(encode)[inverse.reshape(-1)], dtype=np.uint64)


def value_bytes(values: npt.NDArray[np.generic]) -> list[bytes]:
    """:func:`canonical_bytes` of every value: numbers laid out with their tag in one buffer
    and sliced once per value, strings through the process's memo of their encodings."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iuf":
        tag, words = (
            (_TAG_FLOAT, (arr.astype(np.float64) + 0.0).astype("<f8"))  # -0.0 is 0.0
            if arr.dtype.kind == "f"
            else (_TAG_INT, arr.astype("<i8"))
        )
        tagged = np.empty((len(arr), 9), dtype=np.uint8)
        tagged[:, 0] = tag[0]
        tagged[:, 1:] = words.view(np.uint8).reshape(-1, 8)
        raw = tagged.tobytes()
        return [raw[i : i + 9] for i in range(0, 9 * len(arr), 9)]
    if arr.dtype.kind == "b":
        true, false = _TAG_BOOL + b"\x01", _TAG_BOOL + b"\x00"
        return [true if v else false for v in arr.tolist()]
    items = arr.tolist()
    known = _known_string_bytes(items)
    if known is not None:
        return known
    if set(map(type, items)) == {str}:
        return canonical_strings(items)
    return [canonical_bytes(v) for v in items]


def decode_value(raw: bytes) -> ListItem:
    """The decoded value of one canonical encoding (the inverse of :func:`canonical_bytes`)."""
    decoder = _TAG_DECODERS.get(raw[0]) if raw else None
    if decoder is None:
        raise TileCodecError(
            f"value list blob: value: expected a type tag s/i/f/b, got {raw[:1]!r}",
            hint="the stored value is corrupt",
        )
    return decoder(raw[1:])

"""Entity keys and shard routing (docs/architecture.md, docs/semantics.md section 6).

- entity key: join-key values as UTF-8, joined by ``b"\\x1f"``
- shard of an entity of a view: ``crc32(fingerprint + entity_key) % n_shards``

The record keys built from them live in engine/state/records.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

from engine.state.exceptions import StateTypeError, StateValueError

FINGERPRINT_LEN = 8
ENTITY_KEY_SEPARATOR = b"\x1f"


def check_fingerprint(fingerprint: bytes) -> bytes:
    """Return ``fingerprint`` unchanged after checking it is 8 bytes."""
    if not isinstance(fingerprint, bytes):
        raise StateTypeError(
            f"view fingerprint: expected bytes, got {type(fingerprint).__name__}",
            hint="pass StreamFeatureView.fingerprint (8 bytes), not its hex string",
        )
    if len(fingerprint) != FINGERPRINT_LEN:
        raise StateValueError(
            f"view fingerprint: expected {FINGERPRINT_LEN} bytes, got {len(fingerprint)}",
            hint="pass StreamFeatureView.fingerprint",
        )
    return fingerprint


def check_entity_key(entity_key: bytes) -> None:
    if not isinstance(entity_key, bytes):
        raise StateTypeError(
            f"entity key: expected bytes, got {type(entity_key).__name__}",
            hint="build entity keys with engine.state.keys.entity_key(values)",
        )


def entity_key(values: Sequence[str | int]) -> bytes:
    """Entity key bytes: the join-key values as UTF-8, joined by ``\\x1f``.

    Integers are written in decimal so ``7`` and ``"7"`` name the same entity (Kafka
    producers are not consistent about quoting ids). Booleans and other types are
    refused because their text form would be a guess.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise StateTypeError(
            f"entity key values: expected a sequence of str|int, got {type(values).__name__}",
            hint="wrap a single join-key value in a list: entity_key([user_id])",
        )
    if not values:
        raise StateValueError("entity key values: expected at least one join-key value, got none")
    parts: list[bytes] = []
    for index, value in enumerate(values):
        if isinstance(value, str):
            part = value.encode("utf-8")
        elif isinstance(value, int) and not isinstance(value, bool):
            part = str(value).encode("ascii")
        else:
            raise StateTypeError(f"entity key value #{index}: expected str or int, got {type(value).__name__}")
        if ENTITY_KEY_SEPARATOR in part:
            raise StateValueError(
                f"entity key value #{index}: expected no \\x1f character, got {value!r}",
                hint="\\x1f separates join-key values and cannot appear inside one",
            )
        parts.append(part)
    return ENTITY_KEY_SEPARATOR.join(parts)


def encode_entity_keys(join_values: Sequence[Sequence[object]]) -> list[bytes]:
    """:func:`entity_key` of every row of join-key columns already checked to hold str
    or int values (ingest's bulk form; the per-value checks would cost more than the
    encoding): ``join_values[j][i]`` is join key ``j`` of row ``i``."""
    if len(join_values) == 1:
        return list(map(str.encode, map(str, join_values[0])))  # mapped in C: no frame per value
    separator = ENTITY_KEY_SEPARATOR.decode()
    return [separator.join(str(v) for v in parts).encode() for parts in zip(*join_values, strict=True)]


def _check_shards(n_shards: int) -> None:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int):
        raise StateTypeError(f"n_shards: expected int, got {type(n_shards).__name__}")
    if n_shards < 1:
        raise StateValueError(f"n_shards: expected at least 1, got {n_shards}")


def shard_hasher(fingerprint: bytes) -> Callable[[bytes], int]:
    """``crc32(fingerprint + entity_key)`` of the entity keys of one view.

    crc32 is incremental, so hashing the fingerprint once and continuing per key gives
    exactly that without building the concatenation. The shard is the hash modulo the
    shard count; ingest routing and serving reads both use this.
    """
    seed = zlib.crc32(check_fingerprint(fingerprint))
    crc = zlib.crc32
    return lambda key: crc(key, seed)


def shard_for(fingerprint: bytes, entity_key: bytes, n_shards: int) -> int:
    """Shard that owns the state of one (view, entity)."""
    _check_shards(n_shards)
    check_entity_key(entity_key)
    return shard_hasher(fingerprint)(entity_key) % n_shards


def shards_of(fingerprint: bytes, entity_keys: Sequence[bytes], n_shards: int) -> list[int]:
    """:func:`shard_for` of the few to few hundred entity keys of one read, as a list:
    shard_hasher's crc32 mapped in C (no frame per key, no array to convert back)."""
    seed = zlib.crc32(check_fingerprint(fingerprint))
    return [crc % n_shards for crc in map(zlib.crc32, entity_keys, repeat(seed))]


def shard_for_many(fingerprint: bytes, entity_keys: Sequence[bytes], n_shards: int) -> npt.NDArray[np.int64]:
    """:func:`shard_for` of many entity keys of one view, as an int64 array."""
    _check_shards(n_shards)
    # shard_hasher's crc32 continued from the fingerprint's, mapped in C (no frame per key).
    seed = zlib.crc32(check_fingerprint(fingerprint))
    hashes = np.fromiter(map(zlib.crc32, entity_keys, repeat(seed)), dtype=np.int64, count=len(entity_keys))
    return hashes % n_shards

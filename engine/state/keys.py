"""State key layout and shard routing (docs/architecture.md, docs/semantics.md section 6).

- tile record key:  ``b"T" + fingerprint(8 bytes) + entity_key``
- offset record key: ``b"O" + topic(UTF-8) + b"\\x00" + partition(>I)``
- entity key: join-key values as UTF-8, joined by ``b"\\x1f"``
- shard of an entity of a view: ``crc32(fingerprint + entity_key) % n_shards``
- Redis key: ``b"sf:" + fingerprint hex + b":" + entity_key``
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from engine.state.exceptions import StateTypeError, StateValueError

FINGERPRINT_LEN = 8
TILE_PREFIX = b"T"
OFFSET_PREFIX = b"O"
ENTITY_KEY_SEPARATOR = b"\x1f"
_TOPIC_END = b"\x00"
_PARTITION = struct.Struct(">I")
_MAX_PARTITION = 2**32 - 1


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


def _check_entity_key(entity_key: bytes) -> None:
    if not isinstance(entity_key, bytes):
        raise StateTypeError(
            f"entity key: expected bytes, got {type(entity_key).__name__}",
            hint="build entity keys with engine.state.keys.entity_key(values)",
        )


def tile_key(fingerprint: bytes, entity_key: bytes) -> bytes:
    """Key of the packed tile record of one (view, entity)."""
    check_fingerprint(fingerprint)
    _check_entity_key(entity_key)
    return TILE_PREFIX + fingerprint + entity_key


def view_prefix(fingerprint: bytes) -> bytes:
    """Common prefix of every tile record key of one view."""
    return TILE_PREFIX + check_fingerprint(fingerprint)


def split_tile_key(key: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`tile_key`: ``(fingerprint, entity_key)``."""
    if len(key) < 1 + FINGERPRINT_LEN or not key.startswith(TILE_PREFIX):
        raise StateValueError(
            f"tile key: expected b'T' + 8-byte fingerprint + entity key, got {key!r}"
        )
    return key[1 : 1 + FINGERPRINT_LEN], key[1 + FINGERPRINT_LEN :]


def topic_prefix(topic: str) -> bytes:
    """Common prefix of the offset record keys of every partition of ``topic``."""
    if not isinstance(topic, str):
        raise StateTypeError(f"topic: expected str, got {type(topic).__name__}")
    encoded = topic.encode("utf-8")
    if not encoded or _TOPIC_END in encoded:
        raise StateValueError(
            f"topic: expected a non-empty name without NUL characters, got {topic!r}"
        )
    return OFFSET_PREFIX + encoded + _TOPIC_END


def offset_key(topic: str, partition: int) -> bytes:
    """Key of the offset record of one source partition."""
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise StateTypeError(
            f"partition of topic {topic!r}: expected int, got {type(partition).__name__}"
        )
    if not 0 <= partition <= _MAX_PARTITION:
        raise StateValueError(
            f"partition of topic {topic!r}: expected 0..{_MAX_PARTITION}, got {partition}"
        )
    return topic_prefix(topic) + _PARTITION.pack(partition)


def partition_of_offset_key(key: bytes, prefix: bytes) -> int:
    """Partition number of an offset record key that starts with ``prefix``."""
    tail = key[len(prefix) :]
    if not key.startswith(prefix) or len(tail) != _PARTITION.size:
        raise StateValueError(f"offset key: expected {prefix!r} + 4-byte partition, got {key!r}")
    partition: int = _PARTITION.unpack(tail)[0]
    return partition


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
            raise StateTypeError(
                f"entity key value #{index}: expected str or int, got {type(value).__name__}"
            )
        if ENTITY_KEY_SEPARATOR in part:
            raise StateValueError(
                f"entity key value #{index}: expected no \\x1f character, got {value!r}",
                hint="\\x1f separates join-key values and cannot appear inside one",
            )
        parts.append(part)
    return ENTITY_KEY_SEPARATOR.join(parts)


def _check_shards(n_shards: int) -> None:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int):
        raise StateTypeError(f"n_shards: expected int, got {type(n_shards).__name__}")
    if n_shards < 1:
        raise StateValueError(f"n_shards: expected at least 1, got {n_shards}")


def shard_for(fingerprint: bytes, entity_key: bytes, n_shards: int) -> int:
    """Shard that owns the state of one (view, entity)."""
    _check_shards(n_shards)
    check_fingerprint(fingerprint)
    _check_entity_key(entity_key)
    return zlib.crc32(fingerprint + entity_key) % n_shards


def shard_for_many(
    fingerprint: bytes, entity_keys: Sequence[bytes], n_shards: int
) -> npt.NDArray[np.int64]:
    """:func:`shard_for` of many entity keys of one view, as an int64 array."""
    _check_shards(n_shards)
    # crc32 is incremental, so hashing the fingerprint once and continuing per key
    # gives exactly crc32(fingerprint + key) without building the concatenation.
    seed = zlib.crc32(check_fingerprint(fingerprint))
    crc = zlib.crc32
    hashes = np.fromiter(
        (crc(key, seed) for key in entity_keys), dtype=np.int64, count=len(entity_keys)
    )
    return hashes % n_shards


def redis_key(fingerprint: bytes, entity_key: bytes) -> bytes:
    """Redis key of the packed tile record of one (view, entity)."""
    _check_entity_key(entity_key)
    return b"sf:" + check_fingerprint(fingerprint).hex().encode("ascii") + b":" + entity_key

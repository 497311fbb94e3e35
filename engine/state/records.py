"""Every record the state keeps, and every key it is kept under: the one owner.

RocksDB shard keys (one byte of prefix says what the record is):

- ``T`` tile record:      ``b"T" + fingerprint(8) + entity_key`` -> packed tiles
  (the value's layout is owned by engine/kernel/codec.py)
- ``K`` cold tile record: ``b"K" + fingerprint(8) + entity_key`` -> packed tiles: the
  older tiles of an entity whose ``T`` record (its hot part, flagged) grew too long
  (engine/kernel/codec.py, "Hot and cold parts"); its own prefix, so a scan of a view's
  ``T`` keys never meets one, and only a flagged ``T`` record says one is to be read
- ``O`` offset record:    ``b"O" + topic(UTF-8) + b"\\x00" + partition(>I)`` ->
  :class:`engine.state.offsets.OffsetRecord`
- ``M`` freshness record: ``b"M" + fingerprint`` -> ``<qq`` (newest event time the
  view has seen in the shard, wall-clock ms written); one per view in every shard
- ``H`` handoff record:   ``b"H" + fingerprint`` -> ``<q`` handoff time T (ms):
  history holds events ``e < T``, the stream ``e >= T`` (docs/backfill.md)
- ``B`` backfill run:     ``b"B" + fingerprint`` -> ``<qq`` (start ms, end ms) +
  the history topic name (UTF-8)
- ``C`` changelog position: ``b"C"`` -> ``<q`` offset of the last changelog record the
  shard holds (written in the same WriteBatch as the records, engine/state/changelog.py)
- ``D`` changelog identity: ``b"D"`` -> UTF-8 ``<changelog topic>#<shard>@<topic id>``:
  which changelog partition the shard copies (a directory from another deployment,
  another shard or a re-created topic is detected by it and restored afresh)

Redis keys (the optional online copy):

- tile record:      ``sf:<fingerprint hex>:<entity key>`` -> the same packed tiles
- cold tile record: ``sf:cold:<fingerprint hex>:<entity key>`` -> the same cold part
- freshness record: hash ``sf:meta:<fingerprint hex>``, one field per shard
  (``000``, ``001``, ...) -> the same ``<qq`` record

A view's freshness is its freshest shard's record (:func:`freshest`): every shard
writes its own, because each shard sees only its own entities' events.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from engine.state.exceptions import StateTypeError, StateValueError
from engine.state.keys import FINGERPRINT_LEN, check_entity_key, check_fingerprint

TILE_PREFIX = b"T"
COLD_PREFIX = b"K"
OFFSET_PREFIX = b"O"
META_PREFIX = b"M"
HANDOFF_PREFIX = b"H"
BACKFILL_RUN_PREFIX = b"B"

META_RECORD = struct.Struct("<qq")
HANDOFF_RECORD = struct.Struct("<q")
BACKFILL_RUN_RECORD = struct.Struct("<qq")
CHANGELOG_POSITION_KEY = b"C"
CHANGELOG_POSITION_RECORD = struct.Struct("<q")
CHANGELOG_IDENTITY_KEY = b"D"

REDIS_TILE_PREFIX = b"sf:"
REDIS_COLD_PREFIX = b"sf:cold:"
REDIS_META_PREFIX = b"sf:meta:"
REDIS_OFFSETS_PREFIX = b"sf:offsets:"
REDIS_COPIED_PREFIX = b"sf:copied:"

_TOPIC_END = b"\x00"
_PARTITION = struct.Struct(">I")
_MAX_PARTITION = 2**32 - 1


# -- tile records -----------------------------------------------------------------


def tile_key(fingerprint: bytes, entity_key: bytes) -> bytes:
    """Key of the packed tile record of one (view, entity)."""
    check_fingerprint(fingerprint)
    check_entity_key(entity_key)
    return TILE_PREFIX + fingerprint + entity_key


def view_prefix(fingerprint: bytes) -> bytes:
    """Common prefix of every tile record key of one view."""
    return TILE_PREFIX + check_fingerprint(fingerprint)


def cold_view_prefix(fingerprint: bytes) -> bytes:
    """Common prefix of every cold tile record key of one view; a cold key is this
    prefix and the entity key, as a tile key is :func:`view_prefix` and the entity key."""
    return COLD_PREFIX + check_fingerprint(fingerprint)


def split_tile_key(key: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`tile_key`: ``(fingerprint, entity_key)``."""
    if len(key) < 1 + FINGERPRINT_LEN or not key.startswith(TILE_PREFIX):
        raise StateValueError(f"tile key: expected b'T' + 8-byte fingerprint + entity key, got {key!r}")
    return key[1 : 1 + FINGERPRINT_LEN], key[1 + FINGERPRINT_LEN :]


# -- offset records ---------------------------------------------------------------


def topic_prefix(topic: str) -> bytes:
    """Common prefix of the offset record keys of every partition of ``topic``."""
    if not isinstance(topic, str):
        raise StateTypeError(f"topic: expected str, got {type(topic).__name__}")
    encoded = topic.encode("utf-8")
    if not encoded or _TOPIC_END in encoded:
        raise StateValueError(f"topic: expected a non-empty name without NUL characters, got {topic!r}")
    return OFFSET_PREFIX + encoded + _TOPIC_END


def offset_key(topic: str, partition: int) -> bytes:
    """Key of the offset record of one source partition."""
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise StateTypeError(f"partition of topic {topic!r}: expected int, got {type(partition).__name__}")
    if not 0 <= partition <= _MAX_PARTITION:
        raise StateValueError(f"partition of topic {topic!r}: expected 0..{_MAX_PARTITION}, got {partition}")
    return topic_prefix(topic) + _PARTITION.pack(partition)


def partition_of_offset_key(key: bytes, prefix: bytes) -> int:
    """Partition number of an offset record key that starts with ``prefix``."""
    tail = key[len(prefix) :]
    if not key.startswith(prefix) or len(tail) != _PARTITION.size:
        raise StateValueError(f"offset key: expected {prefix!r} + 4-byte partition, got {key!r}")
    partition: int = _PARTITION.unpack(tail)[0]
    return partition


# -- freshness records --------------------------------------------------------------


def meta_key(fingerprint: bytes) -> bytes:
    """Key of a view's freshness record in every shard."""
    return META_PREFIX + check_fingerprint(fingerprint)


def encode_meta(newest_event_ms: int, written_at_ms: int) -> bytes:
    return META_RECORD.pack(newest_event_ms, written_at_ms)


def decode_meta(raw: bytes | None) -> tuple[int, int] | None:
    """``(newest event ms, written at ms)``, or None when absent or not a meta record."""
    if raw is None or len(raw) != META_RECORD.size:
        return None
    record: tuple[int, int] = META_RECORD.unpack(raw)
    return record


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current a view's state is: its freshest shard's metadata record."""

    max_event_ts_ms: int | None  # None: no metadata record yet (freshness unknown)
    written_at_ms: int | None

    def __post_init__(self) -> None:
        if (self.max_event_ts_ms is None) != (self.written_at_ms is None):
            raise StateValueError(
                "Freshness: fields 'max_event_ts_ms' and 'written_at_ms': expected both "
                f"or neither, got {self.max_event_ts_ms!r} and {self.written_at_ms!r}"
            )

    def lag_ms(self, t_ms: int) -> int | None:
        """Event-time lag as of ``t_ms``: how far ``t_ms`` is past the newest applied event,
        counted no later than the wall clock of the write, so a future-dated event inside
        ``max_future_skew`` cannot keep a stalled view looking fresh (docs/serving.md)."""
        if self.max_event_ts_ms is None or self.written_at_ms is None:
            return None
        return max(0, t_ms - min(self.max_event_ts_ms, self.written_at_ms))

    def is_stale(self, t_ms: int, expected_freshness_ms: int) -> bool:
        """Whether the lag as of ``t_ms`` exceeds the view's ``expected_freshness`` (an
        unknown freshness is not stale: the status says what is known)."""
        lag = self.lag_ms(t_ms)
        return lag is not None and lag > expected_freshness_ms


UNKNOWN_FRESHNESS = Freshness(None, None)


def freshest(records: Iterable[bytes | None]) -> Freshness:
    """The view's freshness from its records in every shard: the freshest shard wins."""
    best: tuple[int, int] | None = None
    for raw in records:
        record = decode_meta(raw)
        if record is not None and (best is None or record > best):
            best = record
    return UNKNOWN_FRESHNESS if best is None else Freshness(best[0], best[1])


# -- handoff and backfill run records -----------------------------------------------


def handoff_key(fingerprint: bytes) -> bytes:
    """Key of a view's history handoff time in every shard.

    Written by a Parquet-history backfill (docs/backfill.md); appliers that respect
    handoffs skip the view's events with ``e < T``, which came from history.
    """
    return HANDOFF_PREFIX + check_fingerprint(fingerprint)


def encode_handoff(handoff_ms: int) -> bytes:
    return HANDOFF_RECORD.pack(handoff_ms)


def decode_handoff(raw: bytes) -> int:
    handoff: int = HANDOFF_RECORD.unpack(raw)[0]
    return handoff


def backfill_run_key(fingerprint: bytes) -> bytes:
    """Key of a view's history-backfill run record in every shard."""
    return BACKFILL_RUN_PREFIX + check_fingerprint(fingerprint)


def encode_backfill_run(start_ms: int, end_ms: int, history_topic: str) -> bytes:
    return BACKFILL_RUN_RECORD.pack(start_ms, end_ms) + history_topic.encode("utf-8")


def decode_backfill_run(raw: bytes) -> tuple[int, int, str]:
    """``(start ms, end ms, history topic)`` of a backfill run record."""
    start, end = BACKFILL_RUN_RECORD.unpack_from(raw)
    return int(start), int(end), raw[BACKFILL_RUN_RECORD.size :].decode("utf-8")


# -- Redis keys ---------------------------------------------------------------------


def redis_key(fingerprint: bytes, entity_key: bytes) -> bytes:
    """Redis key of the packed tile record of one (view, entity)."""
    check_entity_key(entity_key)
    return REDIS_TILE_PREFIX + check_fingerprint(fingerprint).hex().encode("ascii") + b":" + entity_key


def redis_cold_key(fingerprint: bytes, entity_key: bytes) -> bytes:
    """Redis key of the cold tile record of one (view, entity)."""
    check_entity_key(entity_key)
    return REDIS_COLD_PREFIX + check_fingerprint(fingerprint).hex().encode("ascii") + b":" + entity_key


def redis_meta_key(fingerprint: bytes) -> bytes:
    """Redis hash holding a view's freshness record of every shard."""
    return REDIS_META_PREFIX + check_fingerprint(fingerprint).hex().encode("ascii")


def redis_offsets_key(topic: str) -> bytes:
    """Redis hash holding every shard's offset records of ``topic`` (field: ``shard:partition``),
    so a server reading Redis knows how far the Parquet log is published."""
    return REDIS_OFFSETS_PREFIX + topic.encode("utf-8")


def redis_copied_key(topic: str, shard: int) -> bytes:
    """Redis key saying this Redis holds one shard's whole copy of ``topic``'s views:
    set after the shard was copied in full, never expiring, so a Redis that lost its
    data (restarted without persistence) has lost it too and the copy is redone."""
    return REDIS_COPIED_PREFIX + topic.encode("utf-8") + b":" + str(shard).encode("ascii")


def redis_offsets_field(shard: int, partition: int) -> bytes:
    """Field of one (shard, partition) offset record in :func:`redis_offsets_key`'s hash."""
    return redis_meta_field(shard) + b":" + str(partition).encode("ascii")


def parse_redis_offsets_field(field: bytes) -> tuple[int, int]:
    """``(shard, partition)`` of a :func:`redis_offsets_field`."""
    shard, _, partition = field.partition(b":")
    return int(shard), int(partition)


def redis_meta_field(shard: int) -> bytes:
    """Field of one shard's freshness record in :func:`redis_meta_key`'s hash."""
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise StateValueError(f"shard: expected an int >= 0, got {shard!r}")
    return f"{shard:03d}".encode("ascii")


def encode_changelog_position(offset: int) -> bytes:
    return CHANGELOG_POSITION_RECORD.pack(offset)


def decode_changelog_position(raw: bytes | None) -> int | None:
    """The changelog offset a shard holds up to, or None for a shard never logged."""
    if raw is None:
        return None
    if len(raw) != CHANGELOG_POSITION_RECORD.size:
        raise StateValueError(
            f"changelog position record: expected {CHANGELOG_POSITION_RECORD.size} bytes, got {len(raw)}"
        )
    return int(CHANGELOG_POSITION_RECORD.unpack(raw)[0])


def encode_changelog_identity(changelog_topic: str, shard: int, topic_id: str) -> bytes:
    """The identity of one changelog partition (Kafka's topic id tells a re-created
    topic of the same name apart)."""
    return f"{changelog_topic}#{shard}@{topic_id}".encode()

"""Brute-force reference of docs/semantics.md, written straight from the text.

Deliberately slow and loop based: every function here re-reads the contract
literally so property tests can compare the engine against it. Events are plain
dicts (keys ``entity``, ``e``, ``partition``, ``offset``, ``value``, optional
``valid``) or tuples ``(entity, e, partition, offset, value)``.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

Event = Mapping[str, Any] | Sequence[Any]
# The functions that return events return them in the type they were given.
E = TypeVar("E", bound=Event)
_TUPLE_FIELDS = ("entity", "e", "partition", "offset", "value")


def field(event: Event, name: str) -> Any:
    """Field ``name`` of a dict or tuple event."""
    if isinstance(event, Mapping):
        return event[name]
    return event[_TUPLE_FIELDS.index(name)]


def epoch_ms_of(moment: datetime) -> int:
    """Section 1: an aware time as UTC epoch milliseconds, sub-milliseconds floored."""
    utc = moment.astimezone(UTC)
    whole_seconds = int(utc.replace(microsecond=0).timestamp())
    return whole_seconds * 1000 + utc.microsecond // 1000


def window_start(t: int, window_ms: int | None, interval_ms: int) -> float:
    """start(t) = floor(t / g) * g - w   (semantics section 3); minus infinity for a
    lifetime window (``window_ms=None``: every event with e <= t, "Sketch functions")."""
    if window_ms is None:
        return -math.inf
    return (t // interval_ms) * interval_ms - window_ms


def window_events(
    events: Iterable[E],
    entity: Hashable,
    t: int,
    window_ms: int | None,
    interval_ms: int,
    filter: Callable[[Event], bool] | None = None,
) -> list[E]:
    """W(k, t): events of ``entity`` passing ``filter`` with start(t) <= e <= t."""
    start = window_start(t, window_ms, interval_ms)
    chosen: list[E] = []
    for event in events:
        if field(event, "entity") != entity:
            continue
        if filter is not None and not filter(event):
            continue
        if start <= field(event, "e") <= t:
            chosen.append(event)
    return chosen


# Section 3, "Types of values": ints whatever the column, and ints when the column is.
_INT_FUNCTIONS = frozenset({"count", "time_since_last", "first_seen", "count_distinct", "count_distinct_approx"})
_COLUMN_VALUE_FUNCTIONS = frozenset({"min", "max", "last"})


def reference_value(
    events: Iterable[Event],
    entity: Hashable,
    t: int,
    function: str,
    window_ms: int | None,
    interval_ms: int,
    default: float | int | None = None,
    filter: Callable[[Event], bool] | None = None,
    max_distinct: int | None = None,
    n: int | None = None,
    column: str = "value",
    int_column: bool = False,
) -> float | int | list[Any] | None:
    """The value of one aggregation as of ``t`` per the table of semantics section 3.

    ``int_column``: the column is an ``int`` field, so ``min``, ``max`` and ``last`` (one
    of its values) are ints, and so is a whole default of them (section 3, "Types of
    values"); counts and times are ints whatever the column.

    ``events`` must already be the applied events (see :func:`apply_watermark`).
    ``count_distinct`` (exact, "Sketch functions") needs ``max_distinct``; over it the
    value is None (served with status OVER_BOUND). The list functions ``last_n``,
    ``first_n`` and ``last_distinct_n`` (section 3, "List functions") need ``n`` and read
    the event field ``column`` (default ``value``).
    """
    chosen = window_events(events, entity, t, window_ms, interval_ms, filter)
    if function in ("last_n", "first_n", "last_distinct_n"):
        if n is None:
            raise ValueError(f"reference_value: {function} needs n")
        return reference_list(chosen, function, n, column)
    int_feature = function in _INT_FUNCTIONS or (int_column and function in _COLUMN_VALUE_FUNCTIONS)
    if not chosen:
        if default is not None:
            return int(default) if int_feature and float(default).is_integer() else default
        if function in ("count", "count_distinct"):
            return 0
        if function == "sum":
            return 0.0
        return None
    if function == "count":
        return len(chosen)
    if function == "count_distinct":
        # Values compare by decoded value and type: 1 and "1" differ.
        distinct = {(type(field(event, "value")).__name__, field(event, "value")) for event in chosen}
        if max_distinct is None:
            raise ValueError("reference_value: count_distinct needs max_distinct")
        return None if len(distinct) > max_distinct else len(distinct)
    if function == "time_since_last":
        return t - max(int(field(event, "e")) for event in chosen)
    if function == "first_seen":
        return min(int(field(event, "e")) for event in chosen)
    values = [float(field(event, "value")) for event in chosen]
    if function == "sum":
        return math.fsum(values)
    if function == "mean":
        return math.fsum(values) / len(values)
    if function in _COLUMN_VALUE_FUNCTIONS:  # one of the column's values, of its type
        as_column = int if int_column else float
        if function == "last":
            latest = chosen[0]
            for event in chosen[1:]:
                if _order_key(event) > _order_key(latest):
                    latest = event
            return as_column(field(latest, "value"))
        column_values = [as_column(field(event, "value")) for event in chosen]
        return min(column_values) if function == "min" else max(column_values)
    if function == "stddev":
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / len(values))
    raise ValueError(f"reference_value: unknown function {function!r}")


#: Section 3, "Numbers": the functions that read their column as a double.
DOUBLE_READING_FUNCTIONS = frozenset({"sum", "mean", "min", "max", "last", "stddev"})
#: Section 3, "Numbers": a double holds every integer up to 2^53 exactly, and no larger one.
EXACT_DOUBLE_LIMIT = 2**53


def inexact_int_fields(
    doc: Mapping[str, Any], schema: Mapping[str, str], aggregations: Iterable[tuple[str, str]]
) -> list[str]:
    """The ``int`` fields of the record ``doc`` (as decoded, a JSON int a Python int) that
    some aggregation ``(function, column)`` of a view of its source reads as a double and
    whose value lies beyond +-2^53: a record with any is refused as ``value_out_of_range``
    (sections 3 "Numbers" and 5). A field only counted, hashed, listed or used as a join key
    keeps every value; 2^53 itself is held exactly and kept."""
    read_as_double = {column for function, column in aggregations if function in DOUBLE_READING_FUNCTIONS}
    return [
        name
        for name, kind in schema.items()
        if kind == "int" and name in read_as_double and abs(int(doc[name])) > EXACT_DOUBLE_LIMIT
    ]


def reference_list(chosen: Sequence[Event], function: str, n: int, column: str = "value") -> list[Any]:
    """A list function over the window's events ``chosen`` (section 3, "List functions"):
    ``last_n`` the values of the n events with the greatest (e, partition, offset), newest
    first; ``first_n`` the n smallest, oldest first; ``last_distinct_n`` walking the
    window newest first, each value the first time it is met (values compare by type and
    value), until n values. ``[]`` for an empty window."""
    newest_first = sorted(chosen, key=_order_key, reverse=True)
    if function == "last_n":
        return [field(e, column) for e in newest_first[:n]]
    if function == "first_n":
        return [field(e, column) for e in sorted(chosen, key=_order_key)[:n]]
    seen: set[tuple[str, Any]] = set()
    out: list[Any] = []
    for event in newest_first:
        value = field(event, column)
        identity = (type(value).__name__, value)
        if identity in seen:
            continue
        seen.add(identity)
        out.append(value)
        if len(out) == n:
            break
    return out


def exact_rank_value(values: Iterable[float], q: float) -> float | None:
    """The value of rank ``floor(q * (count - 1))`` (0-based) of the sorted values: what
    ``percentile(q)`` estimates within its relative accuracy (semantics "Sketch functions")."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[math.floor(q * (len(ordered) - 1))]


def canonical_value_bytes(value: Any) -> bytes:
    """The canonical encoding of one decoded value (docs/architecture.md "The sketch
    section"): a type tag, then UTF-8 / little-endian int64 / float64 (``-0.0`` as
    ``0.0``) / one byte for bools."""
    if isinstance(value, bool):
        return b"b" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, int):
        return b"i" + struct.pack("<q", value)
    return b"f" + struct.pack("<d", float(value) + 0.0)


def hyperloglog_estimate(values: Iterable[Any], precision: int) -> int:
    """``count_distinct_approx`` of ``values``, straight from the definition: each
    distinct value's BLAKE2b-64 hash (read little endian) sets register ``h >> (64 - p)``
    to at least its rank (1 + the leading zeros of the remaining ``64 - p`` bits); the
    estimate is ``alpha_m * m^2 / sum(2^-M[j])``, or linear counting
    ``m * ln(m / zeros)`` when that is at most ``2.5 m`` and some register is zero;
    rounded to the nearest integer."""
    m = 1 << precision
    registers = [0] * m
    for value in values:
        h = int.from_bytes(hashlib.blake2b(canonical_value_bytes(value), digest_size=8).digest(), "little")
        index = h >> (64 - precision)
        rest = (h << precision) & (2**64 - 1)
        rank = min(64 - rest.bit_length() + 1, 64 - precision + 1)
        registers[index] = max(registers[index], rank)
    if not any(registers):
        return 0
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1 + 1.079 / m))
    raw = alpha * m * m / math.fsum(math.ldexp(1.0, -r) for r in registers)
    zeros = registers.count(0)
    return round(m * math.log(m / zeros) if raw <= 2.5 * m and zeros else raw)


def _order_key(event: Event) -> tuple[int, int, int]:
    return (field(event, "e"), field(event, "partition"), field(event, "offset"))


def apply_watermark(events: Iterable[E], allowed_lateness_ms: int, watermark_outliers: int = 1) -> list[E]:
    """The events that are applied (not late, not invalid), in input order.

    Per semantics section 5: the watermark of a partition just before offset ``o`` is the
    ``(watermark_outliers + 1)``-th largest ``e`` of the valid events of that partition
    with offset < o, minus ``allowed_lateness`` (minus infinity while there are fewer such
    events); an event with ``e < watermark`` is late. Dict events may carry
    ``valid: False`` for bad records, which are never applied and do not advance the
    watermark. (``watermark_outliers`` defaults to EventSource's default.)
    """
    listed = list(events)
    by_partition: dict[int, list[int]] = {}
    for i, event in enumerate(listed):
        by_partition.setdefault(field(event, "partition"), []).append(i)
    applied = [False] * len(listed)
    for indexes in by_partition.values():
        indexes.sort(key=lambda i: field(listed[i], "offset"))
        # Walk the partition in offset order; ``highest`` holds the largest e of the valid
        # events before the current one, descending, so highest[watermark_outliers] is the
        # rank the definition above names.
        highest: list[float] = []
        for i in indexes:
            event = listed[i]
            if not _is_valid(event):
                continue
            ranked = highest[watermark_outliers] if len(highest) > watermark_outliers else -math.inf
            watermark = ranked - allowed_lateness_ms
            applied[i] = not field(event, "e") < watermark
            highest = sorted([*highest, field(event, "e")], reverse=True)[: watermark_outliers + 1]
    return [event for event, keep in zip(listed, applied, strict=True) if keep]


def _is_valid(event: Event) -> bool:
    return bool(event.get("valid", True)) if isinstance(event, Mapping) else True


# -- Stored formats, written straight from docs/architecture.md "State" ---------------
# The one place the tests restate a byte format: each test that pins a key or record
# layout compares the engine's owner module (engine/state/records.py, keys.py,
# engine/kernel/codec.py, engine/state/offsets.py) against these.

#: The packed tile record's header: version, flags, width, n_tiles, max_event_ts.
TILE_RECORD_HEADER = struct.Struct("<BBHIq")


def tile_key_bytes(fingerprint: bytes, entity_key: bytes) -> bytes:
    """``b"T" + fingerprint(8 bytes) + entity_key``."""
    return b"T" + fingerprint + entity_key


def offset_key_bytes(topic: str, partition: int) -> bytes:
    """``b"O" + topic + b"\\x00" + partition(>I)``."""
    return b"O" + topic.encode("utf-8") + b"\x00" + struct.pack(">I", partition)


def redis_tile_key_bytes(fingerprint: bytes, entity_key: bytes) -> bytes:
    """``sf:<fingerprint hex>:<entity key>``."""
    return b"sf:" + fingerprint.hex().encode("ascii") + b":" + entity_key


def shard_of(fingerprint: bytes, entity_key: bytes, n_shards: int) -> int:
    """Shard routing (docs/semantics.md section 6): ``crc32(fingerprint + entity_key) % n_shards``."""
    return zlib.crc32(fingerprint + entity_key) % n_shards


def legacy_offset_record(applied: int, top_ts: int, log_offset: int, top_ts_at_log: int) -> bytes:
    """The 32-byte ``<qqqq`` offset record of the version before watermark ranks."""
    return struct.pack("<qqqq", applied, top_ts, log_offset, top_ts_at_log)


def offset_record_bytes(applied: int, log_offset: int, top_ts: Sequence[int], top_ts_at_log: Sequence[int]) -> bytes:
    """``<qqBB`` (applied offset, log offset, n_a, n_b), then ``n_a`` then ``n_b`` ``<q``."""
    head = struct.pack("<qqBB", applied, log_offset, len(top_ts), len(top_ts_at_log))
    return head + b"".join(struct.pack("<q", t) for t in (*top_ts, *top_ts_at_log))

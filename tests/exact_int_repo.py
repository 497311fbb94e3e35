"""A small repo with int fields on both sides of docs/semantics.md's exactness rule, and
records carrying the int values at its boundaries (shared by the stream/backfill and the
push tests).

``amount`` is an int that ``sum``, ``max``, ``min``, ``last`` and ``mean`` read as a double:
a value beyond +-2**53 refuses the record. ``card_number`` is an int id that is only
counted, hashed (``count_distinct``, ``count_distinct_approx``), listed (``last_n``,
``last_distinct_n``) and used as a join key: it keeps the whole int64 range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from engine.definitions import Aggregation, Entity, EventSource, FeatureRepo, FeatureService, StreamFeatureView
from tests.engine.streaming_support import assert_close, expected_values
from tests.reference import EXACT_DOUBLE_LIMIT

SERVICE = "exact_ints"
HOUR = timedelta(hours=1)
LIMIT = EXACT_DOUBLE_LIMIT
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# The boundaries of the rule and of int64: every one of them is a good card number.
BOUNDARY_INTS = (LIMIT - 1, LIMIT, LIMIT + 1, -LIMIT, -LIMIT - 1, INT64_MAX, INT64_MIN, 0, 1, -1)
# Amounts a double holds exactly. Each user's amounts share one sign, so a window's sum
# has no cancellation and agrees with the reference's correctly rounded sum within the
# documented relative tolerance (section 3, "Numbers").
POSITIVE_AMOUNTS = (LIMIT - 1, LIMIT, 0, 1, LIMIT - 2, 12_345)
NEGATIVE_AMOUNTS = (-LIMIT, 0, -1, -(LIMIT - 1), -98_765)
# Amounts a double does not hold exactly: each refuses its record.
INEXACT_AMOUNTS = (LIMIT + 1, -LIMIT - 1, INT64_MAX, INT64_MIN, 2**62 + 1, LIMIT + 2)
# The views' entity keys: the reference event field holding each one's key.
VIEW_KEYS = (("user_payments", "user_id"), ("card_activity", "card_number"))


def definitions(topic: str) -> tuple[EventSource, tuple[StreamFeatureView, ...], FeatureRepo]:
    """The source on ``topic``, its two views and the repo holding them and the service."""
    source = EventSource(
        name="payments",
        topic=topic,
        timestamp_field="ts",
        timestamp_format="epoch_millis",
        schema={"payment_id": "string", "user_id": "string", "amount": "int", "card_number": "int"},
        allowed_lateness=timedelta(minutes=5),
    )
    user = Entity(name="user", join_keys=["user_id"])
    card = Entity(name="card", join_keys=["card_number"])
    user_payments = _view(
        "user_payments",
        source,
        user,
        [
            *(Aggregation(column="amount", function=fn, window=HOUR) for fn in ("sum", "max", "min", "last", "mean")),
            Aggregation(column="amount", function="sum", window=None),
            Aggregation(column="card_number", function="count_distinct", max_distinct=64, window=HOUR),
            Aggregation(column="card_number", function="count_distinct_approx", precision=10, window=HOUR),
            Aggregation(column="card_number", function="last_n", n=4, window=HOUR),
            Aggregation(column="card_number", function="last_distinct_n", n=3, window=None),
        ],
    )
    card_activity = _view(
        "card_activity",
        source,
        card,
        [
            Aggregation(column="card_number", function="count", window=HOUR),
            Aggregation(column="amount", function="max", window=HOUR, name="card_amount_max_1h"),
            Aggregation(column="user_id", function="last_distinct_n", n=3, window=HOUR),
        ],
    )
    views = (user_payments, card_activity)
    service = FeatureService(name=SERVICE, features=list(views))
    return source, views, FeatureRepo.from_objects([source, user, card, *views, service])


def _view(name: str, source: EventSource, entity: Entity, aggregations: list[Aggregation]) -> StreamFeatureView:
    return StreamFeatureView(
        name=name,
        source=source,
        entities=[entity],
        aggregation_interval=timedelta(minutes=5),
        aggregations=aggregations,
    )


def payment(i: int, ts: int) -> dict[str, Any]:
    """Good record ``i``: users u0 and u1 pay positive amounts, u2 negative ones, all
    with card numbers at the boundaries."""
    user = i % 3
    amounts = NEGATIVE_AMOUNTS if user == 2 else POSITIVE_AMOUNTS
    return {
        "payment_id": f"p{i}",
        "user_id": f"u{user}",
        "amount": amounts[i // 3 % len(amounts)],
        "card_number": BOUNDARY_INTS[i % len(BOUNDARY_INTS)],
        "ts": ts,
    }


def inexact_payment(i: int, ts: int) -> dict[str, Any]:
    """A record whose amount a double does not hold exactly (its card number is good)."""
    return {**payment(i, ts), "amount": INEXACT_AMOUNTS[i % len(INEXACT_AMOUNTS)]}


def reference_event(doc: Mapping[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """A good record as tests/reference.py reads it: ints stay ints."""
    return {
        "e": doc["ts"],
        "partition": partition,
        "offset": offset,
        "user_id": doc["user_id"],
        "amount": doc["amount"],
        "card_number": doc["card_number"],
        "valid": True,
    }


def aggregations_read(views: Sequence[StreamFeatureView]) -> list[tuple[str, str]]:
    """(function, column) of every aggregation of ``views``, as the reference reads them."""
    return [(str(getattr(a.function, "value", a.function)), a.column) for v in views for a in v.aggregations]


def schema_kinds(source: EventSource) -> dict[str, str]:
    """The source's schema as tests/reference.py reads it: field name -> kind name."""
    return {name: str(kind) for name, kind in source.schema.items()}


# The reference event field holding each column: the column's own name.
_COLUMNS = {"amount": "amount", "card_number": "card_number", "user_id": "user_id"}
# Functions whose value is computed from several doubles (compared within the documented
# relative tolerance); every other value is copied or counted and must be equal exactly.
_COMPUTED = frozenset({"sum", "mean"})


def check_values(
    view: StreamFeatureView,
    got: Mapping[str, Any],
    applied: Sequence[dict[str, Any]],
    key_field: str,
    key: object,
    t: int,
    context: str,
) -> int:
    """``got``, the values of ``view`` for ``key`` as of ``t``, equal the reference over the
    ``applied`` events (``key_field``: the event field holding the view's key): sums and
    means within the documented tolerance, every other value exactly and of the same type.
    Returns how many ints beyond 2**53 ``got`` held."""
    assert isinstance(key, (str, int)), key
    mine = [e for e in applied if e[key_field] == key]
    want = expected_values(view, mine, key, t, key_field=key_field, filter=None, column_fields=_COLUMNS)
    computed = {a.output_name for a in view.aggregations if str(getattr(a.function, "value", a.function)) in _COMPUTED}
    assert got.keys() == want.keys(), context
    for name, wanted in want.items():
        if name in computed and wanted is not None:
            assert_close({name: got[name]}, {name: wanted}, context)
        else:
            assert _same(got[name], wanted), f"{context}: {name}: got {got[name]!r}, want {wanted!r}"
    return sum(_big_ints(v) for v in got.values())


def _same(got: object, want: object) -> bool:
    """Equal in value and in type, list elements included: an int served as a float (or a
    float as an int) differs, whatever == says."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    return type(got) is type(want) and got == want


def _big_ints(value: object) -> int:
    """How many ints beyond 2**53 ``value`` holds (lists included)."""
    if isinstance(value, list):
        return sum(map(_big_ints, value))
    return int(type(value) is int and abs(value) > LIMIT)

"""Streaming aggregation views of the fraud example."""

from datetime import timedelta

from engine.definitions import Aggregation, StreamFeatureView, col

from .entities import merchant, user
from .sources import transactions

_WINDOWS = (timedelta(minutes=15), timedelta(hours=1), timedelta(days=1))

user_spend = StreamFeatureView(
    name="user_spend",
    source=transactions,
    entities=[user],
    filter=col("event_type") == "PURCHASE",
    aggregation_interval=timedelta(minutes=1),
    aggregations=[
        *(Aggregation(column="amount", function=fn, window=w) for w in _WINDOWS for fn in ("sum", "count", "mean")),
        Aggregation(column="amount", function="max", window=timedelta(hours=1)),
        Aggregation(column="amount", function="stddev", window=timedelta(days=1)),
        Aggregation(
            column="amount", function="time_since_last", window=timedelta(days=1), name="ms_since_last_purchase"
        ),
        # How many merchants and cards the user paid with: exact up to a realistic bound
        # (OVER_BOUND beyond it), and a HyperLogLog estimate (1.6% error) where the
        # number is open ended.
        Aggregation(
            column="merchant_id",
            function="count_distinct",
            max_distinct=500,
            window=timedelta(hours=1),
            name="distinct_merchants_1h",
        ),
        Aggregation(
            column="card_id", function="count_distinct_approx", window=timedelta(days=1), name="distinct_cards_1d"
        ),
        # The user's 5 newest purchases' merchants, newest first (a list; [] when none).
        Aggregation(column="merchant_id", function="last_n", n=5, window=timedelta(days=1), name="last_5_merchants_1d"),
    ],
    description="Purchase spend of each user over 15 minutes, 1 hour and 1 day, "
    "and the distinct merchants and cards behind it.",
    tags={"team": "risk"},
)

# Explicit names: the default ones (amount_count_15m, ...) would collide with
# user_spend's inside the fraud_scoring service and the on-demand inputs.
merchant_activity = StreamFeatureView(
    name="merchant_activity",
    source=transactions,
    entities=[merchant],
    filter=col("event_type") == "PURCHASE",
    aggregation_interval=timedelta(minutes=1),
    aggregations=[
        Aggregation(column="amount", function="count", window=timedelta(minutes=15), name="merchant_txn_count_15m"),
        Aggregation(column="amount", function="count", window=timedelta(hours=1), name="merchant_txn_count_1h"),
        Aggregation(column="amount", function="sum", window=timedelta(hours=1), name="merchant_amount_sum_1h"),
        Aggregation(
            column="amount", function="first_n", n=3, window=timedelta(hours=1), name="merchant_first_3_amounts_1h"
        ),
    ],
    description="Purchase activity of each merchant.",
    tags={"team": "risk"},
)

# Keyed by the (user, merchant) pair: how much and how recently this user paid this
# merchant, the per-pair signal a fraud model weighs against the user's overall spend.
user_merchant_spend = StreamFeatureView(
    name="user_merchant_spend",
    source=transactions,
    entities=[user, merchant],
    filter=col("event_type") == "PURCHASE",
    aggregation_interval=timedelta(minutes=1),
    aggregations=[
        Aggregation(column="amount", function="count", window=timedelta(days=1), name="pair_txn_count_1d"),
        Aggregation(column="amount", function="sum", window=timedelta(days=1), name="pair_amount_sum_1d"),
        Aggregation(
            column="amount", function="time_since_last", window=timedelta(days=1), name="pair_ms_since_last_1d"
        ),
        Aggregation(column="amount", function="first_seen", window=timedelta(days=1), name="pair_first_seen_1d"),
    ],
    description="Purchases of each user at each merchant.",
    tags={"team": "risk"},
)

# How unusual an amount is against the user's own month: the median and high
# percentiles of 30 days of purchases, from one DDSketch per hour tile (answers within
# 1% of the exact rank value). Hour tiles keep a 30-day window at 720 tiles per user.
user_amount_profile = StreamFeatureView(
    name="user_amount_profile",
    source=transactions,
    entities=[user],
    filter=col("event_type") == "PURCHASE",
    aggregation_interval=timedelta(hours=1),
    aggregations=[
        Aggregation(column="amount", function="median", window=timedelta(days=30)),
        Aggregation(column="amount", function="percentile", q=(0.95, 0.99), window=timedelta(days=30)),
    ],
    description="Median, 95th and 99th percentile of each user's purchase amounts over 30 days.",
    tags={"team": "risk"},
)

# Lifetime windows (window=None): every purchase the user ever made. Only the finite
# windows set retention, so this view keeps a few minutes of tiles plus one compacted
# partial per user (docs/semantics.md, "Lifetime windows").
user_lifetime = StreamFeatureView(
    name="user_lifetime",
    source=transactions,
    entities=[user],
    filter=col("event_type") == "PURCHASE",
    aggregation_interval=timedelta(minutes=1),
    aggregations=[
        Aggregation(column="amount", function="count", window=None, name="user_purchases_lifetime"),
        Aggregation(column="amount", function="sum", window=None, name="user_amount_sum_lifetime"),
        Aggregation(column="amount", function="max", window=None, name="user_amount_max_lifetime"),
        Aggregation(column="amount", function="first_seen", window=None, name="user_first_seen_lifetime"),
        Aggregation(
            column="merchant_id",
            function="last_distinct_n",
            n=3,
            window=None,
            name="user_last_3_distinct_merchants_lifetime",
        ),
    ],
    description="Every purchase of each user since the first one.",
    tags={"team": "risk"},
)

"""The end of ``streamfeat demo``: train a small fraud model on the point-in-time training
set and score live transactions through the client, as an inference endpoint would.

Generated data has no fraud labels, so the demo labels its training rows with a stated
rule (a purchase more than 5x the user's spend of the last 15 minutes); the model
learns that rule from the features. The live stream runs far faster than the history
(1,000 events/s against 3), so live users have more recent spend and score lower. Scoring is the
endpoint's path: one synchronous ``FeatureClient.get_feature_vector`` per transaction
with the TTL cache on, features in the model's order, the model's cold-start defaults
for missing values. Each transaction is looked up at authorization and again at
capture (the same request, within the TTL): the second lookup is what the cache saves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from engine.clock import wall_clock_ms
from engine.generate import GeneratorConfig, generate
from serving.client import FeatureClient
from serving.client_cache import CacheConfig
from serving.model_file import LogisticModel, TrainedOn, fit_logistic

SERVICE = "fraud_scoring"
FEATURES = (
    "amount_sum_15m",
    "amount_count_15m",
    "amount_sum_1d",
    "amount_count_1d",
    "ms_since_last_purchase",
    "merchant_txn_count_15m",
    "spend_velocity_ratio",
)
COLD_START = {**dict.fromkeys(FEATURES, 0.0), "ms_since_last_purchase": 86_400_000.0}  # never seen: a day ago
SCORED_TRANSACTIONS = 200


def demo_spine(history_dir: Path, rows: int = 2_000) -> pl.DataFrame:
    """Historical purchases (keys, time, amount) to label: the training set's spine."""
    events = pl.read_parquet(history_dir / "**" / "*.parquet")
    purchases = events.filter(pl.col("event_type") == "PURCHASE")
    sample = purchases.sample(n=min(rows, purchases.height), seed=7)
    return sample.select("user_id", "merchant_id", pl.col("ts").alias("event_timestamp"), "amount")


def demo_labels(train: pl.DataFrame) -> list[int]:
    """The stated labelling rule (see the module docstring)."""
    return [int(r > 5.0) for r in train["spend_velocity_ratio"].fill_null(0.0).to_list()]


def train_model(train: pl.DataFrame, fingerprint: str) -> LogisticModel:
    rows = [[row[f] for f in FEATURES] for row in train.select(FEATURES).iter_rows(named=True)]
    return fit_logistic(rows, demo_labels(train), FEATURES, TrainedOn(SERVICE, fingerprint), COLD_START)


def score_live(url: str, model: LogisticModel, users: int, say: Callable[[str], None]) -> None:
    """Scores fresh transactions one by one through the cached client; prints a few
    scores, the positive rate, the cache hit rate and the per-lookup time."""
    live = generate(
        GeneratorConfig(events=SCORED_TRANSACTIONS, users=users, merchants=500, seed=999, start_ms=wall_clock_ms())
    )
    columns = live.columns
    scores: list[tuple[str, str, float, float]] = []
    started = time.perf_counter()
    with FeatureClient(url, timeout=2.0, cache=CacheConfig(default_ttl_s=5.0)) as client:
        for user, merchant, amount in zip(
            columns["user_id"], columns["merchant_id"], columns["amount"].tolist(), strict=True
        ):
            for _stage in ("authorization", "capture"):
                row = client.get_feature_vector(
                    SERVICE, {"user_id": user, "merchant_id": merchant}, request_data={"amount": amount}
                )
            vector = [COLD_START[f] if row[f] is None else float(row[f]) for f in model.features]
            scores.append((user, merchant, amount, model.predict_proba([vector])[0]))
        stats = client.cache.stats if client.cache is not None else None
    lookups = 2 * len(scores)
    elapsed_ms = (time.perf_counter() - started) * 1000
    say(f"scored {len(scores)} live transactions through FeatureClient (cache on); the riskiest:")
    for user, merchant, amount, score in sorted(scores, key=lambda s: -s[3])[:5]:
        print(f"    user {user} merchant {merchant} amount {amount:>9.2f}: fraud score {score:.3f}")
    flagged = sum(s[3] >= 0.5 for s in scores)
    hit_rate = f"{stats.hit_rate:.0%} ({stats.hits} hits, {stats.misses} misses)" if stats else "n/a"
    say(
        f"{flagged} of {len(scores)} scored >= 0.5; cache hit rate {hit_rate}; "
        f"{elapsed_ms / lookups:.2f} ms per lookup on average"
    )

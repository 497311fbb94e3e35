"""Feature services of the fraud example."""

from engine.definitions import FeatureService

from .on_demand import amount_zscore, spend_velocity, user_merchant_share
from .views import merchant_activity, user_amount_profile, user_lifetime, user_merchant_spend, user_spend

fraud_scoring = FeatureService(
    name="fraud_scoring",
    features=[
        user_spend,
        merchant_activity[["merchant_txn_count_15m", "merchant_txn_count_1h"]],
        user_merchant_spend,
        user_lifetime[["user_purchases_lifetime", "user_first_seen_lifetime"]],
        user_amount_profile,
        spend_velocity,
        user_merchant_share,
    ],
    description="Features of the real-time fraud model (one transaction per request): "
    "views keyed by user, by merchant and by the (user, merchant) pair, joined in one request.",
)

batch_review = FeatureService(
    name="batch_review",
    features=[
        user_spend[["amount_sum_1d", "amount_mean_1d", "amount_stddev_1d"]],
        amount_zscore,
    ],
    description="Nightly review of many transactions per request (batch-mode transform).",
)

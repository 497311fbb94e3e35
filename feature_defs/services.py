"""Feature services of the fraud example."""

from engine.definitions import FeatureService
from feature_defs.on_demand import spend_velocity, user_merchant_share
from feature_defs.views import merchant_activity, user_spend

fraud_scoring = FeatureService(
    name="fraud_scoring",
    features=[
        user_spend,
        merchant_activity[["merchant_txn_count_15m", "merchant_txn_count_1h"]],
        spend_velocity,
        user_merchant_share,
    ],
    description="Features of the real-time fraud model.",
)

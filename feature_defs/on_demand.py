"""On-demand views of the fraud example (transforms live in transforms.py)."""

from engine.definitions import OnDemandFeatureView
from feature_defs.sources import transaction_request
from feature_defs.views import merchant_activity, user_spend

spend_velocity = OnDemandFeatureView(
    name="spend_velocity",
    sources=[user_spend, transaction_request],
    schema={"spend_velocity_ratio": "float"},
    mode="python",
    fn="feature_defs.transforms:spend_velocity",
    description="Request amount / max(15-minute spend, 0.001).",
)

user_merchant_share = OnDemandFeatureView(
    name="user_merchant_share",
    sources=[user_spend, merchant_activity],
    schema={"user_merchant_share_1h": "float"},
    mode="batch",
    fn="feature_defs.transforms:user_merchant_share",
    description="User 1-hour spend / merchant 1-hour spend (0 when the merchant has none).",
)

"""On-demand views of the fraud example (transforms live in transforms.py).

Python mode runs one dict per row and costs microseconds, so the real-time scoring
service uses it; batch mode hands a polars DataFrame to the transform and pays a
fixed cost per call that only amortizes over many entities (batch review).
"""

from engine.definitions import OnDemandFeatureView

from .sources import transaction_request
from .views import merchant_activity, user_spend

# Each transform names the features it reads (view[[...]]): serving then evaluates and
# passes those windows only, and a change to another aggregation cannot break it.
spend_velocity = OnDemandFeatureView(
    name="spend_velocity",
    sources=[user_spend[["amount_sum_15m"]], transaction_request],
    schema={"spend_velocity_ratio": "float"},
    mode="python",
    fn="feature_defs.transforms:spend_velocity",
    description="Request amount / max(15-minute spend, 0.001).",
)

user_merchant_share = OnDemandFeatureView(
    name="user_merchant_share",
    sources=[user_spend[["amount_sum_1h"]], merchant_activity[["merchant_amount_sum_1h"]]],
    schema={"user_merchant_share_1h": "float"},
    mode="python",
    fn="feature_defs.transforms:user_merchant_share",
    description="User 1-hour spend / merchant 1-hour spend (0 when the merchant has none).",
)

amount_zscore = OnDemandFeatureView(
    name="amount_zscore",
    sources=[user_spend[["amount_mean_1d", "amount_stddev_1d"]], transaction_request],
    schema={"amount_zscore_1d": "float"},
    mode="batch",
    fn="feature_defs.transforms:amount_zscore",
    description="How unusual the request amount is against the user's 1-day purchases.",
)

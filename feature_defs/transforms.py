"""On-demand transforms of the fraud example, referenced by import path from on_demand.py."""

from __future__ import annotations

from typing import Any

import polars as pl


def spend_velocity(row: dict[str, Any]) -> dict[str, Any]:
    """Request amount relative to the user's 15-minute spend (python mode, one row)."""
    recent = row.get("amount_sum_15m") or 0.0
    return {"spend_velocity_ratio": float(row["amount"]) / max(float(recent), 0.001)}


def user_merchant_share(df: pl.DataFrame) -> pl.DataFrame:
    """The user's share of the merchant's 1-hour spend (batch mode); 0 when the merchant has none."""
    merchant_sum = pl.col("merchant_amount_sum_1h").fill_null(0.0)
    share = (
        pl.when(merchant_sum > 0.0)
        .then(pl.col("amount_sum_1h").fill_null(0.0) / merchant_sum)
        .otherwise(0.0)
        .cast(pl.Float64)
    )
    return df.select(share.alias("user_merchant_share_1h"))

"""Transforms used by the serving tests' own on-demand views (imported by path)."""

from __future__ import annotations

from typing import Any


def flaky(row: dict[str, Any]) -> dict[str, Any]:
    """Raises for the request amount 13.0, so one request fails and the next succeeds."""
    if row["amount"] == 13.0:
        raise RuntimeError("unlucky amount 13")
    return {"flaky_out": float(row["amount"]) * 2.0}


def merchant_ratio(row: dict[str, Any]) -> dict[str, Any]:
    """Request amount over the merchant's 1-hour sum of every transaction."""
    return {"merchant_ratio": float(row["amount"]) / max(float(row["amount_sum_1h"] or 0.0), 0.001)}

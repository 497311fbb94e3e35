"""streamfeat serving: FastAPI app over the online table, and a Python client.

``create_app`` (serving.app) builds the app; ``FeatureClient`` (serving.client) calls it.
Imports are lazy so ``import serving.client`` does not pull in FastAPI or RocksDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.app import create_app
    from serving.client import FeatureClient

__all__ = ["FeatureClient", "create_app"]


def __getattr__(name: str) -> Any:  # whichever lazily imported name is asked for
    if name == "create_app":
        from serving.app import create_app

        return create_app
    if name == "FeatureClient":
        from serving.client import FeatureClient

        return FeatureClient
    raise AttributeError(f"module 'serving' has no attribute {name!r}")

"""Feature names on both sides: streamfeat's ``view:feature`` references and the baseline's.

Feast answers full feature names as ``view__feature``; they are read back as
``view:feature``. A feature renamed in the migration is declared in a mapping file::

    {"features": {"user_spend:amount_sum_15m": "user_txn_stats:spend_15m"},
     "services": {"fraud_scoring": "fraud_model_v3"}}

(streamfeat name -> baseline name). Unlisted names are the same on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serving.shadow.exceptions import ShadowSetupError

FEAST_SEPARATOR = "__"  # Feast's full feature name: "<view>__<feature>"


def ref_from_full_name(name: str) -> str | None:
    """``"user_spend__amount_sum_15m"`` -> ``"user_spend:amount_sum_15m"``; None for a bare
    name (a join key or a request field echoed back)."""
    view, sep, feature = name.partition(FEAST_SEPARATOR)
    return f"{view}:{feature}" if sep and view and feature else None


def _is_ref(name: object) -> bool:
    return isinstance(name, str) and name.count(":") == 1 and all(name.split(":"))


@dataclass(frozen=True)
class FeatureMapping:
    """streamfeat name -> baseline name, for features (``view:feature``) and services."""

    features: Mapping[str, str] = field(default_factory=dict)
    services: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ours, theirs in self.features.items():
            if not (_is_ref(ours) and _is_ref(theirs)):
                raise ValueError(
                    f'FeatureMapping.features: expected "view:feature" -> "view:feature", got {ours!r} -> {theirs!r}'
                )
        if len(set(self.features.values())) != len(self.features):
            raise ValueError("FeatureMapping.features: two streamfeat features map to the same baseline feature")
        for ours, theirs in self.services.items():
            if not (isinstance(ours, str) and isinstance(theirs, str) and ours and theirs):
                raise ValueError(f"FeatureMapping.services: expected name -> name, got {ours!r} -> {theirs!r}")

    def baseline_ref(self, ref: str) -> str:
        return self.features.get(ref, ref)

    def streamfeat_ref(self, baseline_ref: str) -> str:
        for ours, theirs in self.features.items():
            if theirs == baseline_ref:
                return ours
        return baseline_ref

    def baseline_service(self, service: str) -> str:
        return self.services.get(service, service)


def load_mapping(path: Path) -> FeatureMapping:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShadowSetupError(
            f"--mapping {path}: cannot read it as JSON ({exc})",
            hint='write {"features": {"view:feature": "their_view:their_feature"}}',
        ) from None
    if not isinstance(raw, dict) or set(raw) - {"features", "services"}:
        raise ShadowSetupError(
            f"--mapping {path}: expected an object with keys 'features' and/or 'services', got {str(raw)[:80]}",
            hint='e.g. {"features": {"user_spend:amount_sum_15m": "user_stats:spend_15m"}}',
        )
    try:
        return FeatureMapping(dict(raw.get("features") or {}), dict(raw.get("services") or {}))
    except (ValueError, TypeError) as exc:
        raise ShadowSetupError(f"--mapping {path}: {exc}") from None

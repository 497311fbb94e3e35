"""The model file of batch scoring and the demo: a logistic regression as plain JSON.

Why JSON and not pickle: loading a pickle runs arbitrary code, so a model file from
anywhere else could take over the scoring process. This format holds numbers and names
only; ``load_model`` never executes anything from the file. Format
(``"format": "streamfeat.logistic/1"``)::

    {"format": "streamfeat.logistic/1",
     "trained_on": {"service": "fraud_scoring", "fingerprint": "9c0e..."},
     "features": ["amount_sum_15m", ...],          # the model's input order
     "defaults": {"amount_sum_15m": 0.0, ...},      # cold start: used for a missing (null) value
     "means": [...], "scales": [...],               # standardization, per feature
     "coefficients": [...], "intercept": -2.1}

``predict_proba(x) = 1 / (1 + exp(-(intercept + sum(coef * (x - mean) / scale))))``.
Any other model (scikit-learn, ...) scores through ``serving.scoring.score_batch`` from
Python when it carries a ``trained_on`` and a ``features`` attribute; persisting it is the
caller's choice and risk (skops for scikit-learn; never unpickle files you did not write).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from engine.json_types import JSONObject
from serving.exceptions import ModelFileError

MODEL_FORMAT = "streamfeat.logistic/1"


@dataclass(frozen=True)
class TrainedOn:
    """The feature service a model was trained on: its name and ``FeatureService.fingerprint_hex``."""

    service: str
    fingerprint: str

    def __post_init__(self) -> None:
        for field in ("service", "fingerprint"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise TypeError(f"TrainedOn.{field}: expected a non-empty string, got {getattr(self, field)!r}")


@dataclass(frozen=True)
class LogisticModel:
    trained_on: TrainedOn
    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    defaults: Mapping[str, float]

    def __post_init__(self) -> None:
        n = len(self.features)
        if n == 0:
            raise ValueError("LogisticModel.features: expected at least one feature name, got none")
        for field in ("coefficients", "means", "scales"):
            values = getattr(self, field)
            if len(values) != n:
                raise ValueError(f"LogisticModel.{field}: expected {n} numbers (one per feature), got {len(values)}")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise ValueError(f"LogisticModel.{field}: expected finite numbers, got {list(values)!r}")
        if any(s <= 0 for s in self.scales):
            raise ValueError(f"LogisticModel.scales: expected numbers > 0, got {list(self.scales)!r}")
        missing = [f for f in self.features if f not in self.defaults]
        if missing:
            raise ValueError(
                f"LogisticModel.defaults: expected a cold-start value for every feature, "
                f"missing {missing}; give each feature a default (e.g. 0.0)"
            )

    def _matrix(self, rows: Sequence[Sequence[float]]) -> npt.NDArray[np.float64]:
        x = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.features))
        scaled: npt.NDArray[np.float64] = (x - np.asarray(self.means)) / np.asarray(self.scales)
        return scaled

    def predict_proba(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Probability of the positive class per row (features in ``self.features`` order)."""
        z = self._matrix(rows) @ np.asarray(self.coefficients) + self.intercept
        return [float(p) for p in 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))]

    def predict(self, rows: Sequence[Sequence[float]]) -> list[int]:
        return [int(p >= 0.5) for p in self.predict_proba(rows)]

    def to_dict(self) -> JSONObject:
        return {
            "format": MODEL_FORMAT,
            "trained_on": {"service": self.trained_on.service, "fingerprint": self.trained_on.fingerprint},
            "features": list(self.features),
            "defaults": dict(self.defaults),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
        }


def fit_logistic(
    rows: Sequence[Sequence[float]],
    labels: Sequence[int],
    features: Sequence[str],
    trained_on: TrainedOn,
    defaults: Mapping[str, float],
    *,
    epochs: int = 500,
    learning_rate: float = 0.5,
    l2: float = 1e-3,
) -> LogisticModel:
    """A standardized L2 logistic regression by full-batch gradient descent (numpy only).

    Missing (None/NaN) inputs are replaced by ``defaults`` first, as at scoring time."""
    x = np.asarray(
        [[defaults[f] if v is None else v for f, v in zip(features, row, strict=True)] for row in rows],
        dtype=np.float64,
    )
    x = np.where(np.isnan(x), np.asarray([defaults[f] for f in features]), x)
    y = np.asarray(labels, dtype=np.float64)
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"fit_logistic: expected as many labels as rows (at least one), got {x.shape[0]} rows "
            f"and {y.shape[0]} labels"
        )
    means = x.mean(axis=0)
    scales = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    z = (x - means) / scales
    weights, bias = np.zeros(z.shape[1]), 0.0
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(z @ weights + bias)))
        weights -= learning_rate * (z.T @ (p - y) / len(y) + l2 * weights)
        bias -= learning_rate * float(np.mean(p - y))
    return LogisticModel(
        trained_on=trained_on,
        features=tuple(features),
        coefficients=tuple(float(w) for w in weights),
        intercept=bias,
        means=tuple(float(m) for m in means),
        scales=tuple(float(s) for s in scales),
        defaults=dict(defaults),
    )


def save_model(model: LogisticModel, path: Path) -> None:
    path.write_bytes(orjson.dumps(model.to_dict(), option=orjson.OPT_INDENT_2))


def load_model(path: Path) -> LogisticModel:
    """Reads a model file; every problem is a ModelFileError naming the file and the field."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ModelFileError(f"--model: no file at {path}", hint="train one first (see `streamfeat demo`)") from None
    except orjson.JSONDecodeError as exc:
        raise ModelFileError(
            f"model {path}: not JSON ({exc})",
            hint=f"a model file is the JSON format {MODEL_FORMAT!r} (serving/model_file.py)",
        ) from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelFileError(
            f"model {path}: field 'format': expected {MODEL_FORMAT!r}, got {got!r}",
            hint="only JSON logistic models load from files; score other models from Python",
        )
    try:
        trained = data["trained_on"]
        return LogisticModel(
            trained_on=TrainedOn(service=trained["service"], fingerprint=trained["fingerprint"]),
            features=tuple(data["features"]),
            coefficients=tuple(data["coefficients"]),
            intercept=float(data["intercept"]),
            means=tuple(data["means"]),
            scales=tuple(data["scales"]),
            defaults=dict(data["defaults"]),
        )
    except KeyError as exc:
        raise ModelFileError(
            f"model {path}: missing field {exc.args[0]!r}", hint="write model files with serving.model_file.save_model"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ModelFileError(
            f"model {path}: {exc}", hint="write model files with serving.model_file.save_model"
        ) from None

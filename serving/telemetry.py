"""FastAPI's native OpenTelemetry telemetry for the feature server, from settings.

FastAPI (>= 0.142) traces, measures and logs every request through OpenTelemetry by
default and checks on each request whether a provider is configured: with none, that
check is all it does, and it costs ~4-7 us of a ~100 us one-entity request. streamfeat
serves its own Prometheus metrics (serving/metrics.py), so the telemetry is off unless
``serve_telemetry: on`` or FastAPI's own switch for exporters from ``OTEL_*`` variables
(``FASTAPI_OTEL_AUTO_CONFIGURE=true``) asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi.telemetry import TelemetryConfig

from engine.config import Settings

#: FastAPI's environment switch that builds exporters from the ``OTEL_*`` variables.
AUTO_CONFIGURE_ENV = "FASTAPI_OTEL_AUTO_CONFIGURE"


def telemetry_config(settings: Settings, environ: Mapping[str, str] = os.environ) -> TelemetryConfig:
    """``FastAPI(telemetry=...)``: FastAPI's defaults when asked for, else all off."""
    if settings.serve_telemetry == "on" or environ.get(AUTO_CONFIGURE_ENV, "").strip().lower() == "true":
        return {}
    return {"tracing": False, "metrics": False, "logs": False}

"""FastAPI's native OpenTelemetry telemetry is off unless asked for (setting
``serve_telemetry: on`` or FastAPI's ``FASTAPI_OTEL_AUTO_CONFIGURE=true``): with it off a
request never asks OpenTelemetry for its providers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace

from engine.config import Settings
from engine.definitions import FeatureRepo
from engine.exceptions import SettingsError
from engine.plan import AppliedPlan
from serving.telemetry import AUTO_CONFIGURE_ENV, telemetry_config
from tests.serving.serving_support import rocksdb_client

ALL_OFF = {"tracing": False, "metrics": False, "logs": False}


@pytest.mark.parametrize(
    ("setting", "environ", "expected"),
    [
        ("off", {}, ALL_OFF),
        ("on", {}, {}),  # FastAPI's defaults: on when a provider is configured
        ("off", {AUTO_CONFIGURE_ENV: "true"}, {}),
        ("off", {AUTO_CONFIGURE_ENV: " TRUE "}, {}),
        ("off", {AUTO_CONFIGURE_ENV: "false"}, ALL_OFF),
    ],
)
def test_the_config_follows_the_setting_and_fastapis_switch(
    setting: str, environ: dict[str, str], expected: dict[str, bool]
) -> None:
    assert telemetry_config(Settings(serve_telemetry=setting), environ) == expected


def test_an_unknown_value_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"serve_telemetry: expected 'off' or 'on'.*got 'yes'"):
        Settings(serve_telemetry="yes")


@pytest.fixture
def provider_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request's look-up of OpenTelemetry's global providers, by kind."""
    seen: list[str] = []
    real_tracer, real_meter = trace.get_tracer_provider, metrics.get_meter_provider

    def tracer_provider() -> trace.TracerProvider:
        seen.append("tracer")
        return real_tracer()

    def meter_provider() -> metrics.MeterProvider:
        seen.append("meter")
        return real_meter()

    monkeypatch.setattr(trace, "get_tracer_provider", tracer_provider)
    monkeypatch.setattr(metrics, "get_meter_provider", meter_provider)
    monkeypatch.delenv(AUTO_CONFIGURE_ENV, raising=False)
    yield seen


@pytest.mark.parametrize(("setting", "asks"), [("off", False), ("on", True)])
def test_requests_ask_opentelemetry_only_when_telemetry_is_on(
    tmp_path: Path,
    repo: FeatureRepo,
    plan: AppliedPlan,
    events: list[dict[str, Any]],
    provider_lookups: list[str],
    setting: str,
    asks: bool,
) -> None:
    user = events[0]["user_id"]
    with rocksdb_client(tmp_path, repo, plan, events, meta_for=(), serve_telemetry=setting) as client:
        provider_lookups.clear()  # start-up may look them up once
        body = {"entities": {"user_id": [user]}, "request_data": {"amount": [3.0]}}
        answer = client.post("/v1/features/batch_review", json=body)
        assert answer.status_code == 200, answer.text
        assert bool(provider_lookups) is asks, provider_lookups

"""Prometheus metrics of the feature server, on a registry of its own.

A private registry keeps several apps in one process (tests) from colliding and keeps
the process-wide default collectors out of /metrics. With ``--workers`` > 1 every
worker answers /metrics with its own numbers (no multiprocess aggregation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Serving is expected to answer in about a millisecond: resolve that range finely.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    _children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.latency = Histogram(
            "streamfeat_request_duration_seconds",
            "Time to answer a request, by route template and feature service.",
            ("route", "service"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "streamfeat_responses",
            "Responses by route template and HTTP status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.freshness_lag = Gauge(
            "streamfeat_view_freshness_lag_seconds",
            "Wall clock minus the newest event time applied to the view (NaN: unknown).",
            ("view",),
            registry=self.registry,
        )
        self.invalid_values = Counter(
            "streamfeat_invalid_values",
            "Feature values served as null with status INVALID (non-finite window results), by view.",
            ("view",),
            registry=self.registry,
        )
        self.online_read_errors = Counter(
            "streamfeat_online_read_errors",
            "Online-table reads that failed, by backend.",
            ("backend",),
            registry=self.registry,
        )

    def observe(self, route: str, service: str, status: int, seconds: float) -> None:
        # labels() validates and hashes its arguments on every call; the label sets are
        # few (route templates x known services, statuses), so keep their children.
        key = (route, service, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.latency.labels(route, service),
                self.responses.labels(route, str(status)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

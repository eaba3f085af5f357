"""Prometheus metrics from the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter(
            "csi_calls_total", "CSI calls by method and gRPC code.", ["method", "code"], registry=self.registry
        )
        self.duration = Histogram(
            "csi_call_duration_seconds",
            "CSI call duration by method.",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "csi_calls_in_flight", "CSI calls being served, by method.", ["method"], registry=self.registry
        )
        self.build_info = Gauge(
            "nfs_csi_build_info",
            "Always 1; labels name the version, driver name and mode.",
            ["version", "driver", "mode"],
            registry=self.registry,
        )

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.duration.labels(method).observe(seconds)

"""The front's Prometheus metrics, in a registry of each app's own so several apps can live in one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.front.admission import Admission


class FrontMetrics:
    """Requests by route and status, latency, first-chunk latency, real-time factor, active and queued streams."""

    def __init__(self, admission: Admission, reloads: Callable[[], dict[str, int]] | None = None) -> None:
        """`reloads`: the hot reloader's counts by outcome (serving/reload.py), when the model can be reloaded."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "musicops_front_requests",
            "Requests by route and HTTP status (WebSocket: its close code).",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "musicops_front_request_seconds",
            "Request duration, to the last byte of the response or stream.",
            ["route"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.first_chunk = Histogram(
            "musicops_front_first_chunk_seconds",
            "From a request's arrival to its first audio chunk.",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.real_time_factor = Histogram(
            "musicops_front_real_time_factor",
            "Seconds of audio per second of generation (above 1: faster than real time).",
            ["route"],
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        # Read from the admission when scraped, so the gauges cannot drift from the truth.
        active = Gauge("musicops_front_active_streams", "Generations holding a slot now.", registry=self.registry)
        active.set_function(lambda: admission.active)
        queued = Gauge("musicops_front_queued_requests", "Requests waiting for a slot.", registry=self.registry)
        queued.set_function(lambda: admission.waiting)
        if reloads is not None:
            self.registry.register(_ReloadCounter(reloads))


class _ReloadCounter(Collector):
    """`musicops_front_model_reloads_total{outcome="loaded"|"refused"}`, read from the reloader when scraped."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "musicops_front_model_reloads",
            "New models the hot reload put in service (loaded) or turned away (refused).",
            labels=["outcome"],
        )
        for outcome, count in self.counts().items():
            family.add_metric([outcome], count)
        yield family


class MetricsMiddleware:
    """Counts and times every HTTP request by its route's template (a raw path would make labels unbounded)."""

    def __init__(self, app: ASGIApp, metrics: FrontMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # WebSocket routes count themselves, by close code
            await self.app(scope, receive, send)
            return
        status, started = 500, time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # FastAPI names only its API routes in the scope; the rest (static files, /docs, 404s) share a label.
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

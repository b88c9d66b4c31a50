"""The proxy's Prometheus metrics, kept and written by prometheus_client (Debian's python3-prometheus-client
on the host: bookworm ships 0.16, so only APIs that old are used).

Events (starts, stops, requests...) are counters and a histogram the proxy updates as they happen; what
describes the current state (requests in flight, services running, services configured) is read from the
proxy's service states at each scrape. Each Metrics has a registry of its own, written in the text format
0.0.4 without the `_created` series (a start time per label set, which no dashboard here reads)."""

from __future__ import annotations

from typing import Callable, Iterable, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram, exposition, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

# the format generate_latest writes (newer releases name 1.0.0 their latest, which it is not)
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", "text/plain; version=0.0.4; charset=utf-8")

START_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

# (host, state) pairs; a state has .in_flight and .websockets (int) and .ready (bool)
ServicesState = Callable[[], Iterable[Tuple[str, object]]]


class Metrics:
    def __init__(self, services_state: ServicesState | None = None):
        p = "docker_autostart_"
        self.starts = Counter(p + "starts_total", "Container starts (compose up) by service host.", ["host"],
                              registry=None)
        self.stops = Counter(p + "stops_total", "Idle stops (compose stop) by service host.", ["host"],
                             registry=None)
        self.start_failures = Counter(
            p + "start_failures_total",
            "Starts that failed: reason compose (compose up failed), exited (a container died while "
            "starting), timeout (not ready within maxWait), docker (docker not usable), docker_unavailable (the "
            "Docker daemon did not answer within maxWait: restarting, stopped), permanent (up, but its "
            "readiness answer reports a permanent problem: counted once per problem).",
            ["host", "reason"], registry=None)
        self.stop_failures = Counter(p + "stop_failures_total", "compose stop commands that failed.", ["host"],
                                     registry=None)
        self.start_duration = Histogram(
            p + "start_duration_seconds", "From compose up to the readiness path answering 2xx.", ["host"],
            buckets=START_BUCKETS, registry=None)
        self.compose_up_duration = Histogram(
            p + "compose_up_duration_seconds", "compose up -d (or docker start) alone: the containers' start, by service host; "
            "start_duration_seconds minus this is the service's own start (imports, model loads).", ["host"],
            buckets=START_BUCKETS, registry=None)
        self.requests = Counter(p + "requests_total", "Requests proxied or refused, by service host and status.",
                                ["host", "code"], registry=None)
        self.upstream_errors = Counter(p + "upstream_errors_total",
                                       "Upstream connection errors and timeouts.", ["host", "kind"], registry=None)
        self.reloads = Counter(p + "config_reloads_total", "Config (re)loads by result.", ["result"],
                               registry=None)
        self._state = services_state or (lambda: [])
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _state_families(self):
        p = "docker_autostart_"
        state = list(self._state())
        in_flight = GaugeMetricFamily(p + "in_flight_requests", "Requests being proxied or waiting for a start.",
                                      labels=["host"])
        running = GaugeMetricFamily(p + "service_running",
                                    "1 when the service was last seen running and ready, 0 when stopped or unknown.",
                                    labels=["host"])
        websockets = GaugeMetricFamily(p + "open_websockets",
                                       "WebSocket sessions relayed now (each one of in_flight_requests).",
                                       labels=["host"])
        degraded = GaugeMetricFamily(p + "service_degraded",
                                     "1 while the service's own /health says degraded (a dependency of it fails: "
                                     "Redis, its disk; see the proxy's /health for which), 0 when ok; absent "
                                     "until the proxy has read it (a stopped service is never asked).",
                                     labels=["host"])
        for host, s in state:
            in_flight.add_metric([host], s.in_flight)
            running.add_metric([host], 1 if s.ready else 0)
            websockets.add_metric([host], s.websockets)
            health = getattr(s, "health", None)
            if health:
                degraded.add_metric([host], 1 if health.get("status") == "degraded" else 0)
        configured = GaugeMetricFamily(p + "configured_services", "Services in the current config.",
                                       value=len(state))
        return in_flight, running, websockets, degraded, configured

    def collect(self):
        """The registry's one collector: every family, in a fixed order, without `_created` samples."""
        in_flight, running, websockets, degraded, configured = self._state_families()
        for metric in (self.starts, self.stops, self.start_failures, self.stop_failures, self.start_duration,
                       self.compose_up_duration, in_flight, running, websockets, degraded, self.requests,
                       self.upstream_errors, self.reloads, configured):
            for family in ([metric] if isinstance(metric, Metric) else metric.collect()):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family

    def render(self) -> str:
        return generate_latest(self.registry).decode()

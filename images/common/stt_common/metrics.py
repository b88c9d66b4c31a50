"""Prometheus metrics with the app's own registry, and a pure-ASGI middleware for requests and latency."""
from __future__ import annotations

import os
import time
from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def process_started_at() -> float:
    """When this process started (epoch seconds), from /proc: the container's start where the server is its first
    process; now where /proc cannot say."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


PROCESS_STARTED_AT = process_started_at()


class Metrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, prefix: str = "stt"):
        self._startup_done: set = set()
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(f"{prefix}_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(f"{prefix}_request_duration_seconds", "HTTP request latency", ["route"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
                                 registry=r)
        self.audio_seconds = Counter(f"{prefix}_audio_seconds_total", "Seconds of audio processed", ["task"],
                                     registry=r)
        self.inference_seconds = Counter(f"{prefix}_inference_seconds_total", "Seconds spent in inference",
                                         ["task"], registry=r)
        self.queue_depth = Gauge(f"{prefix}_queue_depth", "Requests waiting for an inference slot", registry=r)
        self.in_progress = Gauge(f"{prefix}_inference_in_progress", "Inferences running", registry=r)
        self.rejected = Counter(f"{prefix}_queue_rejected_total", "Requests refused with 503 (queue full)",
                                registry=r)
        self.model_loads = Counter(f"{prefix}_model_loads_total", "Model loads", ["model", "result"], registry=r)
        self.model_load_seconds = Histogram(f"{prefix}_model_load_seconds", "Model load time", ["model"],
                                            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.jobs_stopped = Counter(f"{prefix}_jobs_stopped_total",
                                    "Jobs stopped before the end (client gone, time limit)", ["reason"], registry=r)
        self.models_loaded = Gauge(f"{prefix}_models_loaded", "Models currently loaded", registry=r)
        self.phase_seconds = Counter(f"{prefix}_pipeline_seconds_total",
                                     "Seconds spent per pipeline phase (vad, asr, align, diarize_embedding ...)",
                                     ["phase"], registry=r)
        self.startup_seconds = Gauge(f"{prefix}_startup_seconds",
                                     "This process's start, phase by phase: seconds from the process start to the "
                                     "end of each phase (import, model_load, first_inference ...)", ["phase"],
                                     registry=r)
        self.dependency_failures = Counter(f"{prefix}_dependency_failures",
                                           "Requests answered 503/507 because a dependency failed (Redis, the "
                                           "jobs' disk: stt_common.dependencies)", ["dependency", "code"], registry=r)

    def startup(self, phase: str) -> None:
        """Mark the end of a startup phase (once per process): seconds since the process started."""
        if phase not in self._startup_done:
            self._startup_done.add(phase)
            self.startup_seconds.labels(phase).set(round(time.time() - PROCESS_STARTED_AT, 3))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def app_metrics(request: Request) -> Metrics:
    """The service's Metrics, held by its AppRuntime (`app.state.service`, create_app)."""
    return request.app.state.service.metrics


metrics_router = APIRouter(tags=["service"])   # mounted on the app by create_app: public, no API key


@metrics_router.get("/metrics", include_in_schema=True, summary="Prometheus metrics")
def get_metrics(metrics: Metrics = Depends(app_metrics)) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts requests and latency by route template (not raw path, so ids don't explode the labels)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t0)

"""Prometheus metrics in the text exposition format (0.0.4), written by hand so the host
needs no extra package."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

START_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

Labels = Tuple[Tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Iterable[Tuple[str, str]] = ()) -> str:
    items = list(labels) + list(extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in items) + "}"


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text

    def header(self) -> List[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    def __init__(self, name, help_text, labelnames=()):
        super().__init__(name, "counter", help_text)
        self.labelnames = tuple(labelnames)
        self.values: Dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels) -> None:
        key = tuple((n, str(labels[n])) for n in self.labelnames)
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, **labels) -> float:
        return self.values.get(tuple((n, str(labels[n])) for n in self.labelnames), 0)

    def render(self) -> List[str]:
        lines = self.header()
        if not self.labelnames and not self.values:
            lines.append(f"{self.name} 0")
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(key)} {_num(value)}")
        return lines


class Gauge(Counter):
    """Values set from the outside (or a callback producing {labels: value})."""

    def __init__(self, name, help_text, labelnames=(), collect=None):
        super().__init__(name, help_text, labelnames)
        self.kind = "gauge"
        self.collect = collect

    def set(self, value: float, **labels) -> None:
        self.values[tuple((n, str(labels[n])) for n in self.labelnames)] = value

    def render(self) -> List[str]:
        if self.collect is not None:
            self.values = {tuple((n, str(lab[n])) for n in self.labelnames): v for lab, v in self.collect()}
        return super().render()


class Histogram(_Family):
    def __init__(self, name, help_text, labelnames=(), buckets=START_BUCKETS):
        super().__init__(name, "histogram", help_text)
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.series: Dict[Labels, List[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels) -> None:
        key = tuple((n, str(labels[n])) for n in self.labelnames)
        row = self.series.setdefault(key, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                row[i] += 1
        row[-2] += value
        row[-1] += 1

    def count(self, **labels) -> float:
        key = tuple((n, str(labels[n])) for n in self.labelnames)
        return self.series.get(key, [0.0])[-1]

    def render(self) -> List[str]:
        lines = self.header()
        for key, row in sorted(self.series.items()):
            for bound, n in zip(self.buckets, row):
                lines.append(f"{self.name}_bucket{_labels(key, [('le', _num(bound))])} {_num(n)}")
            lines.append(f"{self.name}_sum{_labels(key)} {_num(row[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_num(row[-1])}")
        return lines


class Metrics:
    def __init__(self, services_state=None):
        p = "docker_autostart_"
        self.starts = Counter(p + "starts_total", "Container starts (compose up) by service host.", ["host"])
        self.stops = Counter(p + "stops_total", "Idle stops (compose stop) by service host.", ["host"])
        self.start_failures = Counter(
            p + "start_failures_total",
            "Starts that failed: reason compose (compose up failed), exited (a container died while "
            "starting), timeout (not ready within maxWait), docker (docker not usable).",
            ["host", "reason"])
        self.stop_failures = Counter(p + "stop_failures_total", "compose stop commands that failed.", ["host"])
        self.start_duration = Histogram(
            p + "start_duration_seconds", "From compose up to the readiness path answering 2xx.", ["host"])
        self.requests = Counter(p + "requests_total", "Requests proxied or refused, by service host and status.",
                                ["host", "code"])
        self.upstream_errors = Counter(p + "upstream_errors_total",
                                       "Upstream connection errors and timeouts.", ["host", "kind"])
        self.reloads = Counter(p + "config_reloads_total", "Config (re)loads by result.", ["result"])
        state = services_state or (lambda: [])
        self.in_flight = Gauge(p + "in_flight_requests", "Requests being proxied or waiting for a start.",
                               ["host"], collect=lambda: [({"host": h}, s.in_flight) for h, s in state()])
        self.running = Gauge(p + "service_running",
                             "1 when the service was last seen running and ready, 0 when stopped or unknown.",
                             ["host"], collect=lambda: [({"host": h}, 1 if s.ready else 0) for h, s in state()])
        self.configured = Gauge(p + "configured_services", "Services in the current config.",
                                collect=lambda: [({}, len(list(state())))])

    def families(self):
        return [self.starts, self.stops, self.start_failures, self.stop_failures, self.start_duration,
                self.in_flight, self.running, self.requests, self.upstream_errors, self.reloads,
                self.configured]

    def render(self) -> str:
        lines: List[str] = []
        for fam in self.families():
            lines.extend(fam.render())
        return "\n".join(lines) + "\n"

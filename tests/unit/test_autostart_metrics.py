"""docker_autostart.metrics: what a Prometheus scrape of /metrics reads (parsed as Prometheus parses it)."""

from prometheus_client.parser import text_string_to_metric_families

from docker_autostart.metrics import CONTENT_TYPE, Metrics


class State:
    def __init__(self, in_flight, ready, websockets=0, health=None):
        self.in_flight, self.ready, self.websockets, self.health = in_flight, ready, websockets, health


def scrape(metrics: Metrics) -> dict:
    """{(sample name, frozenset of labels): value} and {family name: type}."""
    text = metrics.render()
    assert text.endswith("\n")
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def test_label_values_are_escaped():
    m = Metrics()
    m.starts.labels(host='b"\\\n').inc()
    m.starts.labels(host="a").inc(2)
    samples, _ = scrape(m)
    assert samples[("docker_autostart_starts_total", frozenset({("host", 'b"\\\n')}))] == 1
    assert samples[("docker_autostart_starts_total", frozenset({("host", "a")}))] == 2


def test_start_duration_buckets_are_cumulative():
    m = Metrics()
    for v in (0.4, 3, 700):
        m.start_duration.labels(host="a").observe(v)
    samples, types = scrape(m)
    assert types["docker_autostart_start_duration_seconds"] == "histogram"

    def bucket(le):
        return samples[("docker_autostart_start_duration_seconds_bucket", frozenset({("host", "a"), ("le", le)}))]
    assert (bucket("0.5"), bucket("2.0"), bucket("5.0"), bucket("600.0"), bucket("+Inf")) == (1, 1, 2, 2, 3)
    assert samples[("docker_autostart_start_duration_seconds_sum", frozenset({("host", "a")}))] == 703.4
    assert samples[("docker_autostart_start_duration_seconds_count", frozenset({("host", "a")}))] == 3


def test_every_documented_family_is_exported_with_its_labels():
    m = Metrics(lambda: [("a.test", State(2, True, websockets=1, health={"status": "degraded", "degraded": ["redis"]})),
                         ("b.test", State(0, False))])
    m.starts.labels(host="a.test").inc()
    m.stops.labels(host="a.test").inc()
    m.start_failures.labels(host="a.test", reason="timeout").inc()
    m.stop_failures.labels(host="a.test").inc()
    m.start_duration.labels(host="a.test").observe(4.2)
    m.compose_up_duration.labels(host="a.test").observe(1.1)
    m.requests.labels(host="a.test", code=200).inc()
    m.upstream_errors.labels(host="a.test", kind="connect").inc()
    m.reloads.labels(result="ok").inc()
    samples, types = scrape(m)
    # the sample names and labels of autostart/README.md's table, which dashboards query
    expected = {
        "docker_autostart_starts_total": {"host": "a.test"},
        "docker_autostart_stops_total": {"host": "a.test"},
        "docker_autostart_start_failures_total": {"host": "a.test", "reason": "timeout"},
        "docker_autostart_stop_failures_total": {"host": "a.test"},
        "docker_autostart_start_duration_seconds_count": {"host": "a.test"},
        "docker_autostart_compose_up_duration_seconds_count": {"host": "a.test"},
        "docker_autostart_requests_total": {"host": "a.test", "code": "200"},
        "docker_autostart_upstream_errors_total": {"host": "a.test", "kind": "connect"},
        "docker_autostart_config_reloads_total": {"result": "ok"},
    }
    for name, labels in expected.items():
        assert samples[(name, frozenset(labels.items()))] == 1, name
    assert samples[("docker_autostart_in_flight_requests", frozenset({("host", "a.test")}))] == 2
    assert samples[("docker_autostart_in_flight_requests", frozenset({("host", "b.test")}))] == 0
    assert samples[("docker_autostart_service_running", frozenset({("host", "a.test")}))] == 1
    assert samples[("docker_autostart_service_running", frozenset({("host", "b.test")}))] == 0
    assert samples[("docker_autostart_configured_services", frozenset())] == 2
    assert samples[("docker_autostart_open_websockets", frozenset({("host", "a.test")}))] == 1
    # what the service's own /health said last; never asked (stopped): no sample
    assert samples[("docker_autostart_service_degraded", frozenset({("host", "a.test")}))] == 1
    assert ("docker_autostart_service_degraded", frozenset({("host", "b.test")})) not in samples
    assert {n for n, t in types.items() if t == "gauge"} == {
        "docker_autostart_in_flight_requests", "docker_autostart_service_running",
        "docker_autostart_open_websockets", "docker_autostart_configured_services",
        "docker_autostart_service_degraded"}
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_state_gauges_follow_the_services_at_each_scrape():
    services = []
    m = Metrics(lambda: services)
    samples, _ = scrape(m)
    assert samples[("docker_autostart_configured_services", frozenset())] == 0
    services.append(("a.test", State(1, False)))
    samples, _ = scrape(m)
    assert samples[("docker_autostart_configured_services", frozenset())] == 1
    assert samples[("docker_autostart_in_flight_requests", frozenset({("host", "a.test")}))] == 1


def test_two_proxies_in_one_process_count_apart():
    a, b = Metrics(), Metrics()
    a.stops.labels(host="x").inc()
    assert ("docker_autostart_stops_total", frozenset({("host", "x")})) not in scrape(b)[0]


def test_content_type_is_the_text_format_written():
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")

"""docker_autostart.metrics: the Prometheus text format written by hand."""

from docker_autostart.metrics import Counter, Histogram, Metrics


def test_counter_labels_are_escaped_and_sorted():
    c = Counter("x_total", "help", ["host"])
    c.inc(host='b"\\\n')
    c.inc(2, host="a")
    assert c.render() == ["# HELP x_total help", "# TYPE x_total counter",
                          'x_total{host="a"} 2', 'x_total{host="b\\"\\\\\\n"} 1']


def test_histogram_buckets_are_cumulative():
    h = Histogram("d_seconds", "help", ["host"], buckets=(1, 5))
    for v in (0.5, 3, 10):
        h.observe(v, host="a")
    lines = h.render()
    assert 'd_seconds_bucket{host="a",le="1"} 1' in lines
    assert 'd_seconds_bucket{host="a",le="5"} 2' in lines
    assert 'd_seconds_bucket{host="a",le="+Inf"} 3' in lines
    assert 'd_seconds_sum{host="a"} 13.5' in lines
    assert 'd_seconds_count{host="a"} 3' in lines


def test_families_named_in_the_issue_are_exported():
    class S:
        in_flight, ready = 2, True
    m = Metrics(lambda: [("a.test", S())])
    m.starts.inc(host="a.test")
    m.start_duration.observe(4.2, host="a.test")
    text = m.render()
    for name in ("docker_autostart_starts_total", "docker_autostart_stops_total",
                 "docker_autostart_start_duration_seconds", "docker_autostart_in_flight_requests",
                 "docker_autostart_start_failures_total"):
        assert f"# TYPE {name} " in text
    assert 'docker_autostart_in_flight_requests{host="a.test"} 2' in text
    assert 'docker_autostart_service_running{host="a.test"} 1' in text
    assert "docker_autostart_configured_services 1" in text
    assert text.endswith("\n")

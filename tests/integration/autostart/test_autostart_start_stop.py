"""Starting on demand, readiness, failures, idle stop, crash recovery: real Docker, real compose."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import compose_cmd, container_state, wait_for

pytestmark = pytest.mark.docker

M = "docker_autostart_"


def test_cold_start_waits_for_readiness_and_forwards_headers(make_service, start_proxy):
    svc = make_service(health_delay=2)
    proxy = start_proxy([svc])
    assert svc.state() == "missing"

    host_as_sent = svc.host.upper() + ":443"  # routing ignores case and port
    t0 = time.monotonic()
    r = proxy.get(host_as_sent, "/headers?x=%2Fa%20b", headers={
        "Connection": "keep-alive, X-Hop", "X-Hop": "drop me", "Keep-Alive": "timeout=5",
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Custom": "kept"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed >= 2.0, "answered before the service's /health turned 200"
    assert svc.state() == "running"

    body = r.json()
    assert body["path"] == "/headers?x=%2Fa%20b"  # raw path and query passed as sent
    seen = {k.lower(): v for k, v in body["headers"]}
    assert seen["host"] == host_as_sent  # Host kept as the client sent it
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"  # a front proxy's value is kept
    assert seen["x-forwarded-host"] == host_as_sent
    assert seen["x-custom"] == "kept"
    assert "x-hop" not in seen and "keep-alive" not in seen
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]  # repeated headers survive

    assert proxy.metric(M + "starts_total", host=svc.host) == 1
    assert proxy.metric(M + "start_duration_seconds_count", host=svc.host) == 1
    assert f"starting host={svc.host}" in proxy.log() and f"ready host={svc.host}" in proxy.log()

    # warm: no docker work, no new start
    t0 = time.monotonic()
    assert proxy.get(svc.host, "/health").status_code == 200
    assert time.monotonic() - t0 < 1.0
    head = proxy.request("HEAD", svc.host, "/anything")
    assert head.status_code == 200 and head.headers["Content-Length"] == "1234"
    assert proxy.metric(M + "starts_total", host=svc.host) == 1


def test_twenty_concurrent_cold_requests_start_once(make_service, start_proxy):
    svc = make_service(health_delay=1)
    proxy = start_proxy([svc])
    barrier = threading.Barrier(20)

    def one(_):
        barrier.wait()
        return proxy.get(svc.host, "/health").status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(one, range(20)))
    assert codes == [200] * 20
    assert proxy.metric(M + "starts_total", host=svc.host) == 1
    assert proxy.log().count(f"starting host={svc.host}") == 1


def test_never_ready_answers_504_after_max_wait(make_service, start_proxy):
    svc = make_service(health_delay=-1, max_wait=3)
    proxy = start_proxy([svc])
    t0 = time.monotonic()
    r = proxy.get(svc.host, "/health")
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["type"] == "start_timeout" and "maxWait=3s" in err["message"], err
    # the reason names what it waited on: normally the readiness path's last answer
    assert 3.0 <= elapsed < 10
    assert proxy.metric(M + "start_failures_total", host=svc.host, reason="timeout") == 1
    assert f"start failed host={svc.host} reason=timeout" in proxy.log()


@pytest.mark.parametrize("marked_by", ["code", "header"])
def test_a_permanent_problem_on_health_reaches_the_client_at_once(make_service, start_proxy, marked_by):
    """The service is up but its /health says waiting cannot help (the whisper images' STT_DEVICE=cuda without a
    GPU: 503 with the code device_unavailable; any service: the header X-Health-Permanent). The client gets the
    service's own answer at once, not a 504 after maxWait."""
    svc = make_service(health_permanent=marked_by, max_wait=60)
    proxy = start_proxy([svc])
    t0 = time.monotonic()
    r = proxy.request("POST", svc.host, "/v1/audio/transcriptions", data=b"x" * 100_000)   # cold: compose up first
    cold = time.monotonic() - t0
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    expected = {"code": ("device_unavailable", "STT_DEVICE=cuda but no GPU is visible"),
                "header": ("misconfigured", "misconfigured for good")}[marked_by]
    assert err["code"] == expected[0] and expected[1] in err["message"] and err["type"] == "server_error", err
    assert r.json()["path"] == "/v1/audio/transcriptions"   # the service answered this request itself
    assert cold < 20, "answered once the container was up, not after maxWait"
    assert svc.state() == "running"
    # warm: the next requests get their answer at once too (one docker inspect and one /health probe each)
    t0 = time.monotonic()
    r = proxy.get(svc.host, "/v1/models")
    assert r.status_code == 503 and r.json()["error"]["code"] == expected[0] and r.json()["path"] == "/v1/models"
    assert time.monotonic() - t0 < 3
    state = proxy.health()["services"][svc.host]
    assert state["state"] == "error" and expected[1] in state["last_error"], state
    # said and counted once, however many requests see it; no restart loop
    assert proxy.metric(M + "start_failures_total", host=svc.host, reason="permanent") == 1
    assert proxy.metric(M + "starts_total", host=svc.host) == 1
    assert proxy.log().count(f"host={svc.host} reports a permanent problem") == 1


def test_non_blocking_answers_503_with_retry_after_while_starting(make_service, start_proxy):
    svc = make_service(health_delay=2, blocking=False)
    proxy = start_proxy([svc])
    r = proxy.get(svc.host, "/health")
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    assert r.json()["error"]["type"] == "starting"
    wait_for(lambda: proxy.get(svc.host, "/health").status_code == 200, 30, interval=0.5,
             what="the non-blocking service to come up")
    assert proxy.metric(M + "starts_total", host=svc.host) == 1


def test_start_failure_answers_502_with_compose_reason(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    with socket.socket() as squatter:  # the service's port is taken: the daemon refuses to start it
        squatter.bind(("127.0.0.1", svc.port))
        squatter.listen()
        r = proxy.get(svc.host, "/")
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["type"] == "start_failed"
    assert "up -d failed" in err["message"] and str(svc.port) in err["message"], err["message"]
    assert proxy.metric(M + "start_failures_total", host=svc.host, reason="compose") == 1
    assert f"start failed host={svc.host} reason=compose" in proxy.log()
    # the next request tries again, and succeeds now that the port is free
    assert proxy.get(svc.host, "/health").status_code == 200


def test_idle_stop_then_next_request_starts_again(make_service, start_proxy):
    svc = make_service(idle_timeout=2)
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200
    assert svc.state() == "running"
    wait_for(lambda: proxy.metric(M + "stops_total", host=svc.host) == 1, 20, what="the idle stop")
    assert svc.state() == "exited"
    assert f"stopped host={svc.host} after" in proxy.log()
    # `stop`, not `down`: the container still exists and comes back
    assert proxy.get(svc.host, "/health").status_code == 200
    assert proxy.metric(M + "starts_total", host=svc.host) == 2


def test_a_stopped_project_is_started_with_docker_start_only_while_it_is_current(make_service, start_proxy,
                                                                               request):
    svc = make_service(idle_timeout=1)
    compose_file, env_file = svc.dir / "docker-compose.yml", svc.dir / ".env"
    worker = svc.container + "-worker"   # a second container, as the services' job worker
    tag = f"{svc.project}:current"        # the test's own tag, built again below
    subprocess.run(["docker", "tag", svc.entry_image, tag], check=True)
    request.addfinalizer(lambda: subprocess.run(["docker", "rmi", "-f", tag], capture_output=True))
    compose_file.write_text(compose_file.read_text().replace(svc.entry_image, tag) + f"""\
  worker:
    image: {tag}
    container_name: {worker}
    stop_grace_period: 2s
""")
    svc.entry["dockerStart"] = {"containers": [svc.container, worker],
                                "madeFrom": [str(compose_file), str(env_file)]}
    proxy = start_proxy([svc])

    def container():
        return subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{json .Config.Env}}", svc.container],
                              capture_output=True, text=True, check=True).stdout

    def cold_start(starts: int) -> str:
        wait_for(lambda: svc.state() == "exited", 30, what="the idle stop")
        assert proxy.get(svc.host, "/health").status_code == 200
        assert proxy.metric(M + "starts_total", host=svc.host) == starts
        return container()

    assert proxy.get(svc.host, "/health").status_code == 200      # no container yet: compose makes it
    assert "missing" in proxy.log()
    made = container()
    assert cold_start(2) == made                                    # the same container, started by docker
    assert f"host={svc.host}: started {svc.container} with docker start" in proxy.log()
    # the worker once the service is ready, not beside it
    proxy.wait_log(f"started {worker} with docker start, once it was ready")
    wait_for(lambda: container_state(worker) == "running", 10, what="the worker")

    # the compose file changed while the project was stopped: compose recreates it with the change
    compose_file.write_text(compose_file.read_text().replace('LISTEN_DELAY: "0"', 'LISTEN_DELAY: "0.1"'))
    remade = cold_start(3)
    assert remade.split()[0] != made.split()[0] and "LISTEN_DELAY=0.1" in remade
    assert "its files changed since its containers were made" in proxy.log()

    # a file touched but not changed: compose once (it changes nothing), docker start from then on
    os.utime(env_file)
    assert cold_start(4) == remade
    assert proxy.log().count("its files changed since its containers were made") == 2
    assert cold_start(5) == remade
    assert proxy.log().count(f"started {svc.container} with docker start") == 2

    # the tag now names another image (a deploy's rebuild): compose recreates the containers on it
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=f"FROM {svc.entry_image}\nLABEL rebuilt=1\n",
                   text=True, check=True, capture_output=True)
    rebuilt = cold_start(6)
    assert rebuilt.split()[0] != remade.split()[0]
    assert f"{svc.container}, {worker} run an older {tag}" in proxy.log()


def test_long_request_in_flight_is_not_cut_by_idle_stop(make_service, start_proxy):
    svc = make_service(idle_timeout=2)
    proxy = start_proxy([svc])
    r = proxy.get(svc.host, "/slow?seconds=7")  # three and a half idle timeouts long
    assert r.status_code == 200 and r.json() == {"slept": 7.0}
    assert proxy.metric(M + "stops_total", host=svc.host) == 0
    assert svc.state() == "running"
    wait_for(lambda: proxy.metric(M + "stops_total", host=svc.host) == 1, 20,
             what="the idle stop after the request ended")
    assert svc.state() == "exited"


def test_service_with_jobs_queued_or_running_is_not_stopped(make_service, start_proxy):
    svc = make_service(idle_timeout=2)
    proxy = start_proxy([svc])
    assert proxy.request("POST", svc.host, "/jobs?queued=1&running=1").status_code == 200
    # idle for longer than the timeout, but its /health reports asynchronous jobs: it keeps running
    wait_for(lambda: f"kept host={svc.host} running: 1 jobs queued, 1 running" in proxy.log(), 20,
             what="the proxy keeping the busy service")
    assert proxy.metric(M + "stops_total", host=svc.host) == 0 and svc.state() == "running"
    assert proxy.request("POST", svc.host, "/jobs?queued=0&running=0").status_code == 200
    wait_for(lambda: proxy.metric(M + "stops_total", host=svc.host) == 1, 20, what="the idle stop once done")
    assert svc.state() == "exited"


def test_crashed_container_is_started_by_next_request(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200
    subprocess.run(["docker", "kill", svc.container], check=True, capture_output=True)
    wait_for(lambda: svc.state() != "running", 10, what="the container to die")
    # right away, within the proxy's "seen ready" window, and with a body: the refused
    # connection is noticed before any body byte is read, so the request is replayed intact
    r = proxy.request("POST", svc.host, "/echo", data=b"x" * 100_000)
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == 100_000
    assert svc.state() == "running"
    assert proxy.metric(M + "starts_total", host=svc.host) == 2


def test_an_upload_to_a_service_restarted_behind_the_proxys_back_is_answered_by_it(make_service, start_proxy):
    """Restarted by someone else (an operator's compose restart, its restart policy after a crash) and not
    listening yet: Docker's port proxy takes the connection and drops it. The proxy asks for '100 Continue' before
    it sends a body, so nothing of the upload was sent when the connection dropped: it waits for the service and
    sends the upload then, the client never sees a 502."""
    svc = make_service(listen_delay=3)
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200
    subprocess.run(["docker", "restart", "-t", "1", svc.container], check=True, capture_output=True)
    body = os.urandom(2_000_000)
    r = proxy.request("POST", svc.host, "/echo", data=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "chunked": False}
    assert proxy.metric(M + "upstream_errors_total", host=svc.host, kind="broken") == 0


def test_an_answer_given_before_the_upload_was_read_reaches_the_client(make_service, start_proxy):
    """The whisper images answer 401, 429, 503 or 507 before they read an upload: the client gets that answer, not
    a 502 for the connection the service closed while the proxy was still sending the body."""
    svc = make_service()
    proxy = start_proxy([svc])
    for _ in range(5):
        r = proxy.request("POST", svc.host, "/refuse?status=507", data=b"x" * 8_000_000)
        assert r.status_code == 507 and r.json()["error"]["message"] == "refused before the body was read", r.text
    assert proxy.request("POST", svc.host, "/echo", data=b"y" * 1000).json()["bytes"] == 1000
    assert proxy.metric(M + "upstream_errors_total", host=svc.host, kind="broken") == 0


def test_upstream_timeout_answers_504(make_service, start_proxy):
    svc = make_service()
    svc.entry["upstreamTimeout"] = 1
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/slow?seconds=0").status_code == 200
    r = proxy.get(svc.host, "/slow?seconds=3")
    assert r.status_code == 504 and r.json()["error"]["type"] == "upstream_timeout"
    assert proxy.metric(M + "upstream_errors_total", host=svc.host, kind="timeout") == 1


def test_wake_path_starts_the_service_without_waiting_for_it(make_service, start_proxy):
    svc = make_service(health_delay=6, wake_path="/_autostart/wake")
    proxy = start_proxy([svc])
    t0 = time.monotonic()
    r = proxy.get(svc.host, "/_autostart/wake")   # what a page that will call the service sends when it loads
    assert time.monotonic() - t0 < 4, "the wake request waited for the start"
    assert r.status_code == 202 and r.json()["status"] == "starting", r.text
    assert proxy.get(svc.host, "/_autostart/wake").status_code == 202   # joins the start under way
    wait_for(lambda: proxy.get(svc.host, "/_autostart/wake").status_code == 200, 60, what="the woken service")
    assert proxy.get(svc.host, "/_autostart/wake").json()["status"] == "ready"
    # the upload that follows finds it running: no start of its own, no wait
    t0 = time.monotonic()
    assert proxy.get(svc.host, "/health").status_code == 200 and time.monotonic() - t0 < 1.0
    assert proxy.metric(M + "starts_total", host=svc.host) == 1
    # the container's own start is timed apart from the service's readiness
    assert proxy.metric(M + "compose_up_duration_seconds_count", host=svc.host) == 1
    assert proxy.metric(M + "start_duration_seconds_count", host=svc.host) == 1
    # without the knob the path is the service's like any other (forwarded, after a start)
    plain = make_service()
    proxy2 = start_proxy([plain])
    assert proxy2.get(plain.host, "/_autostart/wake").status_code == 404   # the app's own answer


def test_own_health_and_metrics_do_not_wake_services(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    for host in (f"127.0.0.1:{proxy.port}", "localhost", None):
        r = proxy.get(host, "/health")
        assert r.status_code == 200
        assert r.json()["services"][svc.host]["state"] in ("unknown", "stopped")
        m = proxy.get(host, "/metrics")
        assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert M + "in_flight_requests" in m.text
    unknown = proxy.get("nope.example.test", "/")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_host"
    time.sleep(1)
    assert svc.state() == "missing"
    assert proxy.metric(M + "starts_total", host=svc.host) == 0
    assert "starting host=" not in proxy.log()


def test_sigterm_lets_the_request_in_flight_finish(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(proxy.get, svc.host, "/slow?seconds=3")
        time.sleep(1)
        proxy.proc.send_signal(signal.SIGTERM)
        r = pending.result()
    assert r.status_code == 200 and r.json() == {"slept": 3.0}
    assert proxy.proc.wait(10) == 0
    assert svc.state() == "running"  # containers are left as they are


def test_a_docker_daemon_that_does_not_answer_is_waited_for_then_a_503(make_service, start_proxy):
    """Docker restarting (its CLI cannot reach the daemon): a start waits for it up to maxWait, then the client gets
    503 docker_unavailable with Retry-After, never a 502; the daemon back, the next request starts the service."""
    svc = make_service(max_wait=3)
    proxy = start_proxy([svc], extra_args=["--docker-command", "docker -H unix:///nonexistent/docker.sock"])
    started = time.monotonic()
    r = proxy.get(svc.host, "/health")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
    assert r.json()["error"]["type"] == "docker_unavailable" and "Cannot connect to the Docker daemon" in r.text
    assert 2.5 <= time.monotonic() - started < 15
    assert proxy.metric(M + "start_failures_total", host=svc.host, reason="docker_unavailable") == 1
    assert "the Docker daemon does not answer, waiting for it" in proxy.log()
    assert svc.state() == "missing"


def test_a_degraded_service_is_shown_without_waking_anything_and_kept_running(make_service, start_proxy):
    """The service's /health says degraded (its job store away): the proxy's own /health and /metrics say so,
    read from the running service every --health-interval; its jobs are unknown, so the idle stop keeps it."""
    svc = make_service(idle_timeout=2)
    proxy = start_proxy([svc], extra_args=["--health-interval", "0.5"])
    assert proxy.get(svc.host, "/health").json()["status"] == "ok"
    assert proxy.health()["services"][svc.host]["health"]["status"] == "ok"
    assert proxy.request("POST", svc.host, "/degrade?deps=redis").status_code == 200
    seen = wait_for(lambda: (proxy.health()["services"][svc.host]["health"] or {}).get("status") == "degraded"
                    and proxy.health()["services"][svc.host], 10, what="the proxy reading the degraded health")
    assert seen["health"]["degraded"] == ["redis"] and seen["health"]["jobs"] == {"error": "jobs_unavailable"}
    assert proxy.metric(M + "service_degraded", host=svc.host) == 1
    assert f"host={svc.host} degraded: redis" in proxy.log()
    wait_for(lambda: f"kept host={svc.host} running: jobs unknown (jobs_unavailable)" in proxy.log(), 20,
             what="the idle stop keeping a service whose jobs are unknown")
    assert svc.state() == "running" and proxy.metric(M + "stops_total", host=svc.host) == 0
    assert proxy.request("POST", svc.host, "/degrade?deps=").status_code == 200
    wait_for(lambda: proxy.metric(M + "stops_total", host=svc.host) == 1, 20, what="the idle stop once healthy")
    assert proxy.metric(M + "service_degraded", host=svc.host) == 0 and f"host={svc.host} healthy again" in proxy.log()


def test_a_get_the_service_hung_up_on_before_answering_is_sent_again(make_service, start_proxy):
    """The service went away mid-request (Docker restarting it, a deploy recreating it) before any answer: a
    request that HTTP calls idempotent is sent again once the service is ready, not answered 502."""
    svc = make_service()
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200
    r = proxy.get(svc.host, "/hangup-once")
    assert r.status_code == 200 and r.json() == {"calls": 2}, r.text
    assert proxy.metric(M + "upstream_errors_total", host=svc.host, kind="broken") == 0


def test_containers_stopped_by_someone_else_while_awaited_are_started_again(make_service, start_proxy):
    """Found running but not ready yet (started by someone else: a deploy, its restart policy), then stopped
    (an operator's compose stop, a deploy recreating it) while the proxy waits for it: started again, the request
    answered, not a 502 'container stopped while starting'."""
    svc = make_service(health_delay=4)
    subprocess.run(compose_cmd() + ["up", "-d"], cwd=svc.dir, check=True, capture_output=True)
    proxy = start_proxy([svc])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(proxy.get, svc.host, "/health")
        wait_for(lambda: "waiting for readiness" in json.dumps(proxy.health()) or svc.state() == "running", 10,
                 what="the proxy waiting for the service")
        time.sleep(0.5)
        subprocess.run(["docker", "stop", "-t", "1", svc.container], check=True, capture_output=True)
        r = pending.result()
    assert r.status_code == 200, r.text
    assert "its containers stopped while it was checked" in proxy.log()
    assert proxy.metric(M + "start_failures_total", host=svc.host, reason="exited") == 0


def test_compose_waits_for_the_project_folders_lock(make_service, start_proxy):
    """A deploy recreating the project holds `flock <composeDir>` (stages/compose_projects.py): the proxy's own
    compose up for a request waits for it instead of running into it."""
    svc = make_service()
    proxy = start_proxy([svc])
    holder = subprocess.Popen(["flock", str(svc.dir), "sleep", "4"])
    try:
        time.sleep(0.5)
        started = time.monotonic()
        r = proxy.get(svc.host, "/health")
        assert r.status_code == 200, r.text
        assert time.monotonic() - started >= 3   # the proxy's compose up waited for the holder
    finally:
        holder.wait(10)

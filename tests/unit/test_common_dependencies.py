"""stt_common.dependencies: the one place that turns a dependency's failure (Redis, a full disk) into a documented
503/507 with Retry-After in OpenAI's shape, and /health's `degraded` and the metrics that say why. Redis's and the
disk's own exceptions are raised by the routes here (the real Redis down and a real full disk: the faster job
tests, tests/integration/faster/test_faster_jobs.py)."""
import errno
import logging

import pytest
from fastapi.testclient import TestClient
from redis import exceptions as rx

from stt_common import STTSettings, create_app
from stt_common.dependencies import check_free_space, disk_probe, failure

RAISE = {}


def make(probes=None):
    app, svc = create_app(STTSettings(api_keys=""), title="t")
    svc.ready = lambda: True
    for name, probe in (probes or {}).items():
        svc.dependencies.add(name, probe)

    @svc.api.get("/raise/{what}")
    async def raising(what: str):
        raise RAISE[what]

    svc.mount()
    return TestClient(app, raise_server_exceptions=False), svc


def error(r, status, code):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["code"] == code and e["type"] == "server_error"
    return e


@pytest.mark.parametrize("exc", [
    rx.ConnectionError("Error 2 connecting to /run/redis/redis.sock. No such file or directory."),
    rx.TimeoutError("Timeout reading from socket"),
    rx.BusyLoadingError("Redis is loading the dataset in memory"),
    rx.AuthenticationError("invalid username-password pair"),
    rx.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
    rx.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    rx.ReadOnlyError("READONLY You can't write against a read only replica."),
])
def test_redis_failures_are_503_jobs_unavailable_with_retry_after(exc):
    RAISE["redis"] = exc
    client, _ = make()
    r = client.get("/raise/redis")
    error(r, 503, "jobs_unavailable")
    assert r.headers["retry-after"] == "5"
    assert "/run/redis" not in r.text   # the cause is for the operator (logs, /health), not the client


def test_a_full_disk_is_507_insufficient_storage():
    for e in (OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EDQUOT, "Disk quota exceeded")):
        RAISE["disk"] = e
        r = make()[0].get("/raise/disk")
        error(r, 507, "insufficient_storage")
        assert r.headers["retry-after"] == "60"


@pytest.mark.parametrize("exc", [rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
                                 rx.DataError("Invalid input of type: 'dict'"), FileNotFoundError(2, "gone"),
                                 PermissionError(13, "denied")])
def test_anything_else_stays_a_500(exc):
    """Our own bugs are not a dependency's failure: a logged 500 internal_error, never hidden as a 503."""
    RAISE["bug"] = exc
    error(make()[0].get("/raise/bug"), 500, "internal_error")
    assert failure(exc) is None


def test_health_says_degraded_and_why_while_staying_ready():
    state = {"down": True}

    def redis_probe():
        if state["down"]:
            raise rx.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return {"status": "ok"}

    client, _ = make({"redis": redis_probe, "disk": lambda: {"status": "ok", "free_bytes": 5 << 30}})
    h = client.get("/health")
    assert h.status_code == 200   # synchronous transcriptions still work: the autostart proxy keeps it ready
    body = h.json()
    assert body["status"] == "degraded" and body["degraded"] == ["redis"]
    redis = body["dependencies"]["redis"]
    assert redis["status"] == "unavailable" and redis["code"] == "jobs_unavailable"
    assert redis["error"].startswith("ConnectionError: Error 111") and redis["since"].endswith("Z")
    assert body["dependencies"]["disk"] == {"status": "ok", "free_bytes": 5 << 30}
    since = redis["since"]
    assert client.get("/health").json()["dependencies"]["redis"]["since"] == since   # since the first failure
    state["down"] = False
    body = client.get("/health").json()
    assert body["status"] == "ok" and "degraded" not in body and body["dependencies"]["redis"] == {"status": "ok"}


def test_metrics_say_which_dependency_and_how_many_requests_it_cost():
    RAISE["redis"] = rx.ConnectionError("Connection closed by server.")
    client, _ = make({"redis": lambda: (_ for _ in ()).throw(rx.ConnectionError("down")),
                      "disk": lambda: {"status": "ok", "free_bytes": 123}})
    for _ in range(3):
        client.get("/raise/redis")
    text = client.get("/metrics").text
    assert 'stt_dependency_up{dependency="redis"} 0.0' in text
    assert 'stt_dependency_up{dependency="disk"} 1.0' in text
    assert "stt_jobs_disk_free_bytes 123.0" in text
    assert 'stt_dependency_failures_total{code="jobs_unavailable",dependency="redis"} 3.0' in text


def test_an_outage_is_logged_once_per_interval_not_once_per_request(caplog):
    RAISE["redis"] = rx.ConnectionError("Connection refused.")
    client, _ = make()
    with caplog.at_level(logging.WARNING, logger="stt_common.dependencies"):
        for _ in range(20):
            client.get("/raise/redis")
    lines = [r for r in caplog.records if r.name == "stt_common.dependencies"]
    assert len(lines) == 1 and "redis unavailable (GET /raise/redis answered jobs_unavailable)" in lines[0].getMessage()


def test_free_space_check_and_probe_read_the_real_disk(tmp_path):
    check_free_space(str(tmp_path), 1 << 20, 0)   # room enough
    with pytest.raises(Exception) as e:
        check_free_space(str(tmp_path), 0, 1 << 62)   # keep 4 EiB free: no disk has that
    assert e.value.status == 507 and e.value.code == "insufficient_storage"
    assert disk_probe(str(tmp_path), 0)()["status"] == "ok"
    full = disk_probe(str(tmp_path), 1 << 62)()
    assert full["status"] == "full" and full["code"] == "insufficient_storage" and full["free_bytes"] > 0

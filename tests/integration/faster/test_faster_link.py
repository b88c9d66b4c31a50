"""Worker hosts through the front's link interface (stt_common/jobs/link.py, relay.py, remote.py), played on this
machine over plain HTTP on 127.0.0.1 (the link's TLS and pinned certificates are nginx's: tests/e2e/test_multihost.py
and tests/integration/provision/test_nginx_link.py). Real Redis, real relay processes, real tiny.en inference.

A worker host has no Redis access: everything it does goes through the link, with its own token, about the
leases it holds. Here the tests either run a real worker-host process (python -m faster_server.worker with
STT_JOBS_FRONT_URL and no Redis setting at all), or play the worker host themselves with httpx to try what a
stolen token could."""
from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from support.jobs_support import Worker, needs_redis

from .conftest import KEY, faster_worker, fill, headers, start_server, status, stop_server, submit, wait_for

pytestmark = needs_redis
TOKEN, OTHER = "link-token-of-gpu-7", "link-token-of-gpu-8"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def workers_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("link") / "link-workers"
    path.write_text("".join(f"{host} {hashlib.sha256(t.encode()).hexdigest()}\n"
                            for host, t in (("gpu-7", TOKEN), ("gpu-8", OTHER))))
    return path


@pytest.fixture(scope="module")
def front_env(tmp_path_factory, redis_server, workers_file):
    return redis_server.jobs_env(tmp_path_factory.mktemp("front-jobs"), STT_API_KEYS=KEY, STT_ALLOW_OPEN_ACCESS="0",
                                 STT_WORKER_NAME="front", STT_JOB_HEARTBEAT_TTL="4", STT_JOB_RETRY_INTERVALS="2",
                                 STT_LINK_WORKERS_FILE=str(workers_file), STT_LINK_MAX_RESULT_MB="0.05",
                                 STT_JOBS_SERVICE="faster")


@pytest.fixture(scope="module")
def front(tmp_path_factory, front_env):
    s = start_server(tmp_path_factory.mktemp("front"), **front_env)
    yield s
    stop_server(s)


@pytest.fixture
def relay(tmp_path, front_env):
    r = Worker(tmp_path, {**front_env, "STT_LINK_RELAYS": "1"}, "faster", module="stt_common.jobs.relay")
    yield r
    r.stop()


def take(front, token: str = TOKEN, ticket: str = "ab" * 16, wait: float = 20) -> httpx.Response:
    return httpx.post(front.url + "/internal/link/next", headers=bearer(token),
                      json={"ticket": ticket, "slot": "s1", "wait": wait}, timeout=wait + 30)


def lease_url(front, lease: str, what: str) -> str:
    return f"{front.url}/internal/link/leases/{lease}/{what}"


def assignment_for(front, relay, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = take(front, ticket=f"{int(time.monotonic() * 1000):032x}")
        if r.status_code == 200:
            a = r.json()
            assert a["job_id"] == job_id, a
            return a
        assert r.status_code == 204, r.text
    raise AssertionError("no assignment: " + relay.logs())


def test_a_worker_host_runs_a_job_through_the_link_only(front, front_env, relay, speech, tmp_path):
    own = tmp_path / "worker-host-jobs"
    # a worker host's whole setting: the front's URL, its token, its own folder; no Redis URL, no password
    host = faster_worker(tmp_path, {"STT_JOBS_FRONT_URL": front.url, "STT_LINK_TOKEN": TOKEN,
                                    "STT_JOBS_DIR": str(own), "STT_WORKER_NAME": "gpu-7", "STT_JOB_HEARTBEAT_TTL": "4"})
    try:
        job = submit(front, speech["long"], response_format="text", language="en")
        done, _ = wait_for(front, job["id"], worker=host)
        assert done["status"] == "succeeded" and done["worker"] == "gpu-7", (done, host.logs(), relay.logs())
        assert done["progress"]["fraction"] == 1.0 and done["progress"]["seconds_total"] > 60
        text = httpx.get(front.url + done["result_url"], headers=headers(), timeout=10).text
        assert "speech" in text.lower()
        assert list(own.iterdir()) == []   # the worker host kept no copy
        listed = httpx.get(front.url + "/v1/jobs", headers=headers(), timeout=10).json()
        assert listed["workers"].get("gpu-7", 0) >= 1
        metrics = httpx.get(front.url + "/metrics", timeout=10).text
        assert 'stt_jobs_finished_by_worker_total{outcome="succeeded",worker="gpu-7"} 1.0' in metrics
        assert 'stt_job_workers{worker="gpu-7"} 1.0' in metrics
        assert "relay" not in metrics   # a relay stands for the worker host's slot, never shown as a host
    finally:
        host.stop()
    assert "REDIS" not in "".join(k for k in host.proc.args)


def test_a_token_opens_only_its_own_hosts_leases_and_results_are_checked(front, relay, speech):
    job = submit(front, speech["wav"], language="en")
    assert httpx.post(front.url + "/internal/link/next", json={"ticket": "cd" * 16, "slot": "s"},
                      timeout=10).status_code == 401
    assert take(front, token="no-such-token").status_code == 401
    a = assignment_for(front, relay, job["id"])
    lease = a["lease"]
    # another host's token: the lease does not exist for it
    for what, method in (("audio", "GET"), ("progress", "POST"), ("result", "POST"), ("failure", "POST")):
        r = httpx.request(method, lease_url(front, lease, what), headers=bearer(OTHER), json={}, timeout=10)
        assert r.status_code == 404, (what, r.text)
    audio = httpx.get(lease_url(front, lease, "audio"), headers=bearer(TOKEN), timeout=10)
    assert audio.status_code == 200 and audio.content == speech["wav"].read_bytes()
    beat = httpx.post(lease_url(front, lease, "progress"), headers=bearer(TOKEN),
                      json={"seconds_done": 1.5, "seconds_total": 7.0}, timeout=10)
    assert beat.status_code == 200 and beat.json() == {"stop": None}
    assert httpx.post(lease_url(front, lease, "progress"), headers=bearer(TOKEN), json={"seconds_done": -1},
                      timeout=10).status_code == 422
    deadline = time.monotonic() + 10
    while status(front, job["id"])["progress"]["seconds_total"] != 7.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    running = status(front, job["id"])
    assert running["status"] == "running" and running["worker"] == "gpu-7" and running["progress"]["seconds_done"] == 1.5, relay.logs()

    def result(body) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(lease_url(front, lease, "result"), headers=bearer(TOKEN), content=data, timeout=30)

    good = {"text": "the weather today", "segments": [{"id": 0, "start": 0.0, "end": 2.0, "text": " the weather today"}],
            "language": "english", "duration": 2.0, "task": "transcribe", "words": None}
    refused = {
        b"not json": 422,
        b'{"text": "x", "segments": [{"start": NaN, "end": 1}], "language": "en", "duration": 1}': 422,
        json.dumps({**good, "segments": [{"start": 5, "end": 1, "text": "x"}]}).encode(): 422,
        json.dumps({**good, "segments": [{"start": 0, "end": 1e12, "text": "x"}]}).encode(): 422,
        json.dumps({"segments": []}).encode(): 422,   # valid shape, but it does not render (no text, no language)
        json.dumps({**good, "text": "x" * 60_000}).encode(): 413,   # past STT_LINK_MAX_RESULT_MB
    }
    for body, code in refused.items():
        r = result(body)
        assert r.status_code == code, (body[:80], r.text)
    assert status(front, job["id"])["status"] == "running"   # nothing refused reached the job
    assert result(good).status_code == 200
    done, _ = wait_for(front, job["id"], worker=relay)
    assert done["status"] == "succeeded" and done["worker"] == "gpu-7", done
    text = httpx.get(front.url + done["result_url"], params={"response_format": "text"}, headers=headers(), timeout=10)
    assert text.text.strip() == "the weather today"
    # the lease has ended: it opens nothing more
    assert httpx.get(lease_url(front, lease, "audio"), headers=bearer(TOKEN), timeout=10).status_code == 410
    assert result(good).status_code == 410


def test_a_host_that_stops_beating_loses_its_job_and_a_canceled_job_says_stop(front, relay, speech):
    job = submit(front, speech["wav"], language="en")
    lease = assignment_for(front, relay, job["id"])["lease"]
    httpx.post(lease_url(front, lease, "progress"), headers=bearer(TOKEN), json={"seconds_done": 0.5}, timeout=10)
    # silence: after STT_JOB_HEARTBEAT_TTL (4 s) the relay ends the attempt as a crash; RQ retries it after 2 s
    deadline = time.monotonic() + 60
    while status(front, job["id"])["attempts"] < 2 or status(front, job["id"])["status"] != "queued":
        assert time.monotonic() < deadline, (status(front, job["id"]), relay.logs())
        time.sleep(0.3)
        if status(front, job["id"])["status"] == "queued" and status(front, job["id"])["attempts"] >= 1:
            break
    assert httpx.post(lease_url(front, lease, "progress"), headers=bearer(TOKEN), json={},
                      timeout=10).status_code == 410
    second = assignment_for(front, relay, job["id"])
    assert second["lease"] != lease and second["attempt"] == 2
    httpx.post(lease_url(front, second["lease"], "progress"), headers=bearer(TOKEN), json={"seconds_done": 0.5},
               timeout=10)
    assert httpx.delete(f"{front.url}/v1/jobs/{job['id']}", headers=headers(), timeout=10).status_code == 200
    deadline = time.monotonic() + 15
    while True:
        r = httpx.post(lease_url(front, second["lease"], "progress"), headers=bearer(TOKEN), json={}, timeout=10)
        if r.status_code == 410 or r.json()["stop"]:
            break
        assert time.monotonic() < deadline, relay.logs()
        time.sleep(0.3)
    done, _ = wait_for(front, job["id"], timeout=30, worker=relay)
    assert done["status"] == "canceled", done


def test_a_host_removed_from_the_tokens_file_is_refused_at_once(front, workers_file):
    assert take(front, token=OTHER, wait=5).status_code == 204
    kept = workers_file.read_text()
    try:
        workers_file.write_text("".join(line for line in kept.splitlines(True) if not line.startswith("gpu-8 ")))
        assert take(front, token=OTHER, wait=5).status_code == 401   # no restart of the front
    finally:
        workers_file.write_text(kept)


def test_a_worker_host_that_stops_hands_its_job_back_without_using_a_retry(front, relay, speech):
    """A worker host asked to stop (a deploy, Docker or the host restarting) says so: its job goes back to the head of
    the queue at once, as a stopping worker on the front hands its job back, and keeps every retry."""
    job = submit(front, speech["wav"], language="en")
    first = assignment_for(front, relay, job["id"])
    assert first["attempt"] == 1
    httpx.post(lease_url(front, first["lease"], "progress"), headers=bearer(TOKEN), json={"seconds_done": 0.5},
               timeout=10)
    r = httpx.post(lease_url(front, first["lease"], "failure"), headers=bearer(TOKEN),
                   json={"kind": "shutdown", "error": {"message": "the worker host stopped"}}, timeout=10)
    assert r.status_code == 200, r.text
    second = assignment_for(front, relay, job["id"])   # at once: no retry back-off (STT_JOB_RETRY_INTERVALS)
    assert second["lease"] != first["lease"] and second["attempt"] == 1, second
    assert status(front, job["id"])["status"] == "running"
    good = {"text": "handed back", "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": " handed back"}],
            "language": "english", "duration": 1.0, "task": "transcribe", "words": None}
    assert httpx.post(lease_url(front, second["lease"], "result"), headers=bearer(TOKEN), content=json.dumps(good),
                      timeout=30).status_code == 200
    done, _ = wait_for(front, job["id"], worker=relay)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert httpx.post(lease_url(front, first["lease"], "failure"), headers=bearer(TOKEN),
                      json={"kind": "reboot"}, timeout=10).status_code in (410, 422)


def test_a_worker_hosts_result_on_a_full_front_disk_is_kept(front_env, speech, small_disk, tmp_path):
    """The front's jobs disk fills while a worker host transcribes: its result is still accepted and the job
    succeeds (kept in Redis, as a front worker's result is then), and nothing half-written stays on disk."""
    env = {**front_env, "STT_JOBS_DIR": str(small_disk), "STT_JOBS_MIN_FREE_MB": "1"}
    small_front = start_server(tmp_path / "small-front", **env)
    relay = Worker(tmp_path, {**env, "STT_LINK_RELAYS": "1"}, "faster", module="stt_common.jobs.relay")
    try:
        job = submit(small_front, speech["wav"], language="en")
        lease = assignment_for(small_front, relay, job["id"])["lease"]
        fill(small_disk, leave=0)
        good = {"text": "kept in redis", "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": " kept in redis"}],
                "language": "english", "duration": 1.0, "task": "transcribe", "words": None}
        r = httpx.post(lease_url(small_front, lease, "result"), headers=bearer(TOKEN), content=json.dumps(good),
                       timeout=30)
        assert r.status_code == 200, r.text
        done, _ = wait_for(small_front, job["id"], worker=relay)
        assert done["status"] == "succeeded", (done, relay.logs())
        text = httpx.get(small_front.url + done["result_url"], params={"response_format": "text"}, headers=headers(),
                         timeout=10).text
        assert text.strip() == "kept in redis"
        assert sorted(p.name for p in (small_disk / job["id"]).iterdir()) == ["audio"]
        assert "no room for its result on disk" in relay.logs()
    finally:
        relay.stop()
        stop_server(small_front)

"""Asynchronous jobs (POST /v1/jobs) with a real Redis, real RQ workers (python -m faster_server.worker) and
real tiny.en inference: status and progress, every result format, cancel, signed webhooks, a worker killed
mid-job, Redis restarted with jobs queued, retries that back off, a job that kills every worker it lands on, and
the error paths."""
from __future__ import annotations

import http.server
import json
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from support.jobs_support import Worker, needs_redis
from stt_common.jobs import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from support.transcript_wer import wer

from .conftest import KEY, faster_worker, fill, free_port, headers, start_server, status, stop_server, submit, wait_for

pytestmark = needs_redis
SECRET = "test-webhook-secret"
BACK_OFF = 6   # s a retry waits (STT_JOB_RETRY_INTERVALS): longer than finding a dead worker takes here (4-6 s)


@pytest.fixture(scope="module")
def jobs_env(tmp_path_factory, redis_server):
    return redis_server.jobs_env(tmp_path_factory.mktemp("jobs"), STT_WEBHOOK_SECRET=SECRET,
                                 STT_WEBHOOK_ALLOW_PRIVATE="1", STT_JOB_HEARTBEAT_TTL="4",
                                 STT_JOB_RETRY_INTERVALS=str(BACK_OFF),
                                 STT_API_KEYS=f"{KEY},sk-other-caller", STT_ALLOW_OPEN_ACCESS="0")


@pytest.fixture(scope="module")
def api(tmp_path_factory, jobs_env):
    s = start_server(tmp_path_factory.mktemp("jobs-api"), **jobs_env)
    yield s
    stop_server(s)


@pytest.fixture
def worker(tmp_path, jobs_env):
    w = faster_worker(tmp_path, jobs_env)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def meeting(speech, tmp_path_factory) -> Path:
    """About 12 minutes (some 15 s of work for tiny.en's batched decoder here): long enough to be seen running,
    cancelled or killed halfway."""
    d = tmp_path_factory.mktemp("meeting")
    lst = d / "list.txt"
    lst.write_text("".join(f"file '{speech['long']}'\n" for _ in range(10)))
    out = d / "meeting.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst), str(out)], check=True)
    return out


def test_job_runs_to_the_end_with_progress_and_every_format(api, worker, speech):
    job = submit(api, speech["long"], response_format="verbose_json", language="en")
    assert job["status"] == "queued" and job["object"] == "transcription.job"
    done, seen = wait_for(api, job["id"], worker=worker)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["worker"] and done["error"] is None
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["seconds_total"] > 60
    running = [s["progress"]["seconds_done"] for s in seen if s["status"] == "running"]
    assert running == sorted(running), "progress never goes back"
    r = httpx.get(api.url + done["result_url"], headers=headers(), timeout=10)
    assert r.status_code == 200
    body = r.json()   # the job's own response_format
    assert body["language"] == "english" and body["segments"]
    assert body["duration"] == pytest.approx(done["progress"]["seconds_total"], abs=1)
    assert wer(" ".join([speech["text"]] * 6), body["text"]) < 0.25
    for fmt, check in (("text", lambda t: t.strip()), ("srt", lambda t: "-->" in t), ("vtt", lambda t: t.startswith("WEBVTT")),
                       ("json", lambda t: json.loads(t)["text"])):
        r = httpx.get(api.url + done["result_url"], params={"response_format": fmt}, headers=headers(), timeout=10)
        assert r.status_code == 200 and check(r.text), (fmt, r.text[:200])
    # long polling answers at once for a finished job
    t0 = time.monotonic()
    assert status(api, job["id"])["status"] == "succeeded"
    r = httpx.get(f"{api.url}/v1/jobs/{job['id']}", params={"wait": 30}, headers=headers(), timeout=40)
    assert r.json()["status"] == "succeeded" and time.monotonic() - t0 < 5
    # the job and the synchronous endpoint agree on the same audio
    with open(speech["long"], "rb") as f:
        sync = httpx.post(api.url + "/v1/audio/transcriptions", headers=headers(), files={"file": f},
                          data={"language": "en"}, timeout=120).json()
    assert sync["text"] == body["text"]


def test_list_is_per_caller_and_unknown_jobs_are_404(api, worker, speech):
    mine = submit(api, speech["wav"])
    theirs = submit(api, speech["wav"], key="sk-other-caller")
    ids = [j["id"] for j in httpx.get(api.url + "/v1/jobs", headers=headers(), timeout=10).json()["data"]]
    assert mine["id"] in ids and theirs["id"] not in ids
    assert httpx.get(f"{api.url}/v1/jobs/{theirs['id']}", headers=headers(), timeout=10).status_code == 404
    r = httpx.get(f"{api.url}/v1/jobs/0123abcd", headers=headers(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert httpx.get(f"{api.url}/v1/jobs/{mine['id']}", timeout=10).status_code == 401  # no key
    wait_for(api, mine["id"], worker=worker)


def test_bad_input_is_refused_before_queueing_or_fails_the_job_once(api, worker, tmp_path):
    noise = tmp_path / "notes.txt"
    noise.write_text("not audio at all " * 100)
    # what can be checked at once is a 4xx at submission, nothing queued
    with open(noise, "rb") as f:
        r = httpx.post(api.url + "/v1/jobs", headers=headers(), files={"file": f}, data={"model": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with open(noise, "rb") as f:
        r = httpx.post(api.url + "/v1/jobs", headers=headers(), files={"file": f},
                       data={"callback_url": "ftp://example.org/x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "callback_url"
    # undecodable audio is found by the worker: failed, with the reason, and not retried
    job = submit(api, noise)
    done, _ = wait_for(api, job["id"], worker=worker)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "invalid_audio"
    r = httpx.get(api.url + f"/v1/jobs/{job['id']}/result", headers=headers(), timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_failed"


def test_cancel_a_running_job(api, worker, meeting):
    job = submit(api, meeting)
    wait_for(api, job["id"], states=("running",), worker=worker)
    # long polling on a running job waits, then answers with its current state
    t0 = time.monotonic()
    r = httpx.get(f"{api.url}/v1/jobs/{job['id']}", params={"wait": 1.5}, headers=headers(), timeout=10)
    assert r.json()["status"] == "running" and time.monotonic() - t0 >= 1.4
    r = httpx.get(api.url + f"/v1/jobs/{job['id']}/result", headers=headers(), timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_running"
    t0 = time.monotonic()
    assert httpx.delete(f"{api.url}/v1/jobs/{job['id']}", headers=headers(), timeout=10).status_code == 200
    done, _ = wait_for(api, job["id"], timeout=30, worker=worker)
    assert done["status"] == "canceled", done
    assert time.monotonic() - t0 < 15, "a running job stops at its next segment"
    assert done["progress"]["seconds_done"] < done["progress"]["seconds_total"]


def test_webhook_is_signed_and_delivered(api, worker, speech):
    with hook_receiver() as (url, received):
        job = submit(api, speech["wav"], callback_url=url)
        wait_for(api, job["id"], worker=worker)
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
    assert received, worker.logs()
    got_headers, body = received[0]
    # the caller's own secret, as it reads it from the API; the signature covers the recipient URL too
    mine = httpx.get(api.url + "/v1/jobs/webhook-secret", headers=headers(), timeout=10).json()["secret"]
    theirs = httpx.get(api.url + "/v1/jobs/webhook-secret", headers=headers("sk-other-caller"), timeout=10)
    assert theirs.json()["secret"] != mine and SECRET not in (mine, theirs.json()["secret"])
    signature = got_headers[SIGNATURE_HEADER]
    assert verify(mine, signature, url, body)
    assert not verify(theirs.json()["secret"], signature, url, body)   # no caller signs for another
    assert not verify(SECRET, signature, url, body)                    # nor does the host's master secret
    assert not verify(mine, signature, url + "x", body)                # replayed to another receiver: refused
    assert not verify(mine, signature, url, body + b" ")
    assert got_headers[DELIVERY_HEADER]
    payload = json.loads(body)
    assert payload == {"id": job["id"], "object": "transcription.job", "status": "succeeded",
                       "result_url": f"/v1/jobs/{job['id']}/result", "error": None}


def test_worker_killed_mid_job_is_retried_and_finishes(api, jobs_env, meeting, tmp_path):
    first = faster_worker(tmp_path, jobs_env)
    try:
        job = submit(api, meeting)
        running, _ = wait_for(api, job["id"], states=("running",), worker=first)
        deadline = time.monotonic() + 60
        while status(api, job["id"])["progress"]["seconds_done"] <= 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        first.stop(signal.SIGKILL)   # as the OOM killer or a host reboot would
    finally:
        first.stop()
    assert status(api, job["id"])["status"] == "running"   # nobody knows yet
    second = faster_worker(tmp_path, jobs_env)
    try:
        done, _ = wait_for(api, job["id"], timeout=300, worker=second)
    finally:
        second.stop()
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    result = httpx.get(api.url + done["result_url"], params={"response_format": "verbose_json"}, headers=headers())
    assert result.json()["duration"] == pytest.approx(done["progress"]["seconds_total"], abs=1)


def when(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@contextmanager
def hook_receiver():
    """A webhook receiver on 127.0.0.1: yields (url, the deliveries received as (headers, raw body))."""
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers, body))  # case-insensitive, as HTTP headers are
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{hook.server_port}/hook", received
    finally:
        hook.shutdown()


def running_attempt(api, job_id: str, attempt: int, worker: Worker) -> dict:
    """Wait until the job's `attempt`-th run has begun on a worker."""
    s, _ = wait_for(api, job_id, states=("running",), worker=worker)
    deadline = time.monotonic() + 120
    while s["attempts"] < attempt or s["status"] != "running":
        assert s["status"] in ("queued", "running") and time.monotonic() < deadline, (s, worker.logs())
        time.sleep(0.2)
        s = status(api, job_id)
    return s


def test_a_dead_workers_job_waits_its_back_off_then_finishes(api, jobs_env, meeting, tmp_path):
    """The worker dies with its scheduler (the container's end: OOM, host down). Another worker finds the job
    abandoned, schedules it BACK_OFF seconds later, takes over the dead worker's scheduler lock and runs it then.
    The dead one delivered no webhooks (no webhook secret), the other is like the front's worker (its deliveries run
    in threads of their own, no RQ queue: its scheduler starts only once it has taken over the jobs queue's lock)."""
    first = faster_worker(tmp_path, {**jobs_env, "STT_WORKER_NAME": "host-a", "STT_WEBHOOK_SECRET": ""})
    second = None
    try:
        job = submit(api, meeting)
        running_attempt(api, job["id"], 1, first)
        second = faster_worker(tmp_path, {**jobs_env, "STT_WORKER_NAME": "host-b"})
        deadline = time.monotonic() + 60
        while "Listening on" not in second.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(api, job["id"])["status"] == "running", second.logs()
        killed_at = time.time()
        first.kill_all()
        waiting, seen = wait_for(api, job["id"], states=("queued", "succeeded", "failed"), worker=second)
        assert waiting["status"] == "queued", waiting
        assert waiting["attempts"] == 1 and waiting["error"] is None and waiting["retry_at"], waiting
        retry_at = when(waiting["retry_at"])
        assert retry_at >= killed_at + BACK_OFF - 1, "the retry waits its interval after the worker's death"
        done, seen = wait_for(api, job["id"], timeout=300, worker=second)
    finally:
        first.stop()
        if second:
            second.stop()
    assert done["status"] == "succeeded", (done, second.logs())
    assert done["attempts"] == 2 and done["worker"] == "host-b" and done["retry_at"] is None
    retried_at = when(done["started_at"])
    assert retried_at >= retry_at, "not before its time"
    assert retried_at - retry_at < 10, "and soon after: the dead worker's scheduler lock did not hold it up"
    print(f"worker killed -> retry started: {retried_at - killed_at:.1f} s (back-off {BACK_OFF} s)")
    result = httpx.get(api.url + done["result_url"], params={"response_format": "verbose_json"}, headers=headers())
    assert result.json()["duration"] == pytest.approx(done["progress"]["seconds_total"], abs=1)


def test_a_job_that_kills_every_worker_fails_after_its_last_attempt(api, jobs_env, meeting, tmp_path):
    """A poison job: every worker it lands on dies (here SIGKILLed as the OOM killer would, worker and scheduler).
    Its retries back off; after the last (STT_JOB_RETRIES=2: 3 attempts) it fails clearly, and its webhook says so."""
    workers = []
    with hook_receiver() as (url, received):
        try:
            workers.append(faster_worker(tmp_path, {**jobs_env, "STT_WORKER_NAME": "poisoned-1"}))
            job = submit(api, meeting, callback_url=url)
            started = []
            for attempt in (1, 2, 3):
                started.append(when(running_attempt(api, job["id"], attempt, workers[-1])["started_at"]))
                workers[-1].kill_all()
                workers.append(faster_worker(tmp_path, {**jobs_env, "STT_WORKER_NAME": f"poisoned-{attempt + 1}"}))
            done, _ = wait_for(api, job["id"], timeout=60, worker=workers[-1])
            deadline = time.monotonic() + 20
            while not received and time.monotonic() < deadline:
                time.sleep(0.2)
            survivor = workers[-1]
            assert survivor.proc.poll() is None, survivor.logs()
        finally:
            for w in workers:
                w.stop()
    assert done["status"] == "failed" and done["attempts"] == 3, done
    error = done["error"]
    assert error["code"] == "job_failed" and error["type"] == "server_error", error
    assert "failed 3 times" in error["message"] and "last attempt stopped" in error["message"], error
    assert started[1] - started[0] >= BACK_OFF and started[2] - started[1] >= BACK_OFF, started
    r = httpx.get(api.url + f"/v1/jobs/{job['id']}/result", headers=headers(), timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_failed" and "3 times" in r.text
    payloads = [json.loads(body) for _, body in received]
    assert payloads == [{"id": job["id"], "object": "transcription.job", "status": "failed", "result_url": None,
                         "error": error}], payloads


def test_redis_restart_keeps_queued_jobs(api, jobs_env, redis_server, speech, tmp_path):
    queued = [submit(api, speech["wav"])["id"] for _ in range(2)]   # no worker: they stay queued
    assert all(status(api, i)["status"] == "queued" for i in queued)
    health = httpx.get(api.url + "/health", timeout=10).json()
    assert health["jobs"]["queued"] >= 2   # what the autostart proxy reads before an idle stop
    redis_server.stop()
    redis_server.start()
    w = faster_worker(tmp_path, jobs_env)
    try:
        for job_id in queued:
            done, _ = wait_for(api, job_id, worker=w)
            assert done["status"] == "succeeded"
    finally:
        w.stop()


def test_jobs_are_off_without_redis(server):
    with open(__file__, "rb") as f:
        r = httpx.post(server.url + "/v1/jobs", files={"file": f}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "jobs_unavailable"


def test_redis_down_is_a_503_on_every_job_route_and_health_says_why(api, redis_server, speech):
    """Redis stopped: every job route answers 503 jobs_unavailable with Retry-After in OpenAI's shape (never a 500),
    /health stays 200 and says degraded and why, /metrics too; Redis back, all is as before and nothing was lost."""
    job = submit(api, speech["wav"])   # no worker: it stays queued
    redis_server.stop()
    try:
        routes = [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job['id']}"),
                  ("GET", f"/v1/jobs/{job['id']}/result"), ("DELETE", f"/v1/jobs/{job['id']}")]
        for method, path in routes:
            files = {"file": ("a.wav", open(speech["wav"], "rb"))} if method == "POST" else None
            r = httpx.request(method, api.url + path, headers=headers(), files=files, timeout=30)
            assert r.status_code == 503 and r.headers["retry-after"] == "5", (method, path, r.text)
            assert r.json()["error"]["code"] == "jobs_unavailable" and r.json()["error"]["type"] == "server_error"
        health = httpx.get(api.url + "/health", timeout=10)
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and body["degraded"] == ["redis"], body
        assert body["dependencies"]["redis"]["code"] == "jobs_unavailable" and body["jobs"] == {"error": "jobs_unavailable"}
        assert body["dependencies"]["disk"]["status"] == "ok"
        metrics = httpx.get(api.url + "/metrics", timeout=10).text
        assert 'stt_dependency_up{dependency="redis"} 0.0' in metrics
        refused = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('stt_dependency_failures_total{code="jobs_unavailable",dependency="redis"}')]
        assert refused and refused[0] >= len(routes), metrics
    finally:
        redis_server.start()
    body = httpx.get(api.url + "/health", timeout=10).json()
    assert body["status"] == "ok" and "degraded" not in body and body["jobs"]["queued"] >= 1
    assert status(api, job["id"])["status"] == "queued"   # kept in Redis's AOF
    httpx.delete(f"{api.url}/v1/jobs/{job['id']}", headers=headers(), timeout=10)


def test_a_worker_asked_to_stop_hands_its_job_back_at_once(api, jobs_env, meeting, tmp_path):
    """SIGTERM mid-job (a deploy recreating the worker, Docker or the host restarting): the worker stops at its next
    decoder step, within the containers' 30 s stop grace, instead of finishing the meeting first; the job goes back
    to the head of the queue without using a retry, and the next worker runs it to the end once: one result, one
    webhook."""
    with hook_receiver() as (url, received):
        first = faster_worker(tmp_path, jobs_env)
        try:
            job = submit(api, meeting, callback_url=url)
            wait_for(api, job["id"], states=("running",), worker=first)
            deadline = time.monotonic() + 60
            while status(api, job["id"])["progress"]["seconds_done"] <= 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            stopped = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            first.proc.wait(20)
            took = time.monotonic() - stopped
        finally:
            first.stop()
        assert took < 25, (took, first.logs())   # the signal waits for the decoder's step, then one more
        back = status(api, job["id"])
        assert back["status"] == "queued" and back["attempts"] == 0 and back["queue_position"] == 0, back
        assert back["retry_at"] is None and "back to the head of the queue" in first.logs()
        second = faster_worker(tmp_path, jobs_env)
        try:
            done, _ = wait_for(api, job["id"], timeout=300, worker=second)
        finally:
            second.stop()
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert [json.loads(body)["status"] for _, body in received] == ["succeeded"]


def test_a_full_jobs_disk_is_a_507_and_loses_no_job(jobs_env, small_disk, speech, tmp_path):
    """New jobs get 507 insufficient_storage (before the upload when its size is known, when a write fails
    otherwise) and nothing half-written stays; /health says degraded (disk); a job accepted before finishes, its
    result kept in Redis when it no longer fits on disk."""
    env = {**jobs_env, "STT_JOBS_DIR": str(small_disk), "STT_JOBS_MIN_FREE_MB": "1"}
    api = start_server(tmp_path / "api", **env)
    worker = None
    try:
        job = submit(api, speech["wav"])   # accepted while there is room; no worker yet
        fill(small_disk, leave=1536 * 1024)   # 1.5 MB free: above the reserve, below what the next upload needs
        big = tmp_path / "big.wav"
        big.write_bytes((Path(speech["wav"]).read_bytes() * 20)[:1600 * 1024])   # refused: its content is no matter
        with open(big, "rb") as f:   # its size is known: refused before a byte is written
            r = httpx.post(api.url + "/v1/jobs", headers=headers(), files={"file": ("big.wav", f)}, timeout=60)
        assert r.status_code == 507 and r.headers["retry-after"] == "60", r.text
        assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "server_error", "param": None,
                                     "code": "insufficient_storage"}

        def chunked():   # no Content-Length: the write that meets the full disk is what refuses it
            boundary = b"day-two"
            yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
            data = big.read_bytes()
            for i in range(0, len(data), 256 * 1024):
                yield data[i:i + 256 * 1024]
            yield b"\r\n--" + boundary + b"--\r\n"
        r = httpx.post(api.url + "/v1/jobs", headers={**headers(), "Content-Type": "multipart/form-data; boundary=day-two"},
                       content=chunked(), timeout=60)
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        leftovers = [p.name for p in small_disk.iterdir() if not p.name.startswith("filler") and p.name != job["id"]]
        assert leftovers == [], leftovers   # the half-received upload is gone
        fill(small_disk, leave=0)
        health = httpx.get(api.url + "/health", timeout=10).json()
        assert health["status"] == "degraded" and health["degraded"] == ["disk"], health
        assert health["dependencies"]["disk"]["status"] == "full"
        worker = faster_worker(tmp_path, env)
        done, _ = wait_for(api, job["id"], worker=worker)
        assert done["status"] == "succeeded", (done, worker.logs())
        assert sorted(p.name for p in (small_disk / job["id"]).iterdir()) == ["audio"]   # no result.json.part
        assert "no room for its result on disk" in worker.logs()
        text = httpx.get(api.url + done["result_url"], params={"response_format": "text"}, headers=headers(),
                         timeout=10).text
        assert wer(speech["text"], text) < 0.25
        for filler in small_disk.glob("filler-*"):
            filler.unlink()
        assert httpx.get(api.url + "/health", timeout=10).json()["status"] == "ok"
        again = submit(api, speech["wav"])
        assert wait_for(api, again["id"], worker=worker)[0]["status"] == "succeeded"
    finally:
        if worker:
            worker.stop()
        stop_server(api)

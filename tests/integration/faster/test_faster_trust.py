"""The jobs' trust boundaries with a real Redis, the real faster API and real workers (tiny.en): nothing stored in
Redis runs as code, each caller (an API key, a basic-auth user) sees its own jobs within its quotas, a full Redis
is a 503 that leaves nothing half-made, and webhooks go only where the rules allow, apart from transcription.

Each finding of the review has its regression test here; the worker hosts' side is test_faster_link.py, the
outbound guard's tests/unit/test_outbound.py, nginx's tests/integration/provision/."""
from __future__ import annotations

import json
import os
import pickle
import socket
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from support.jobs_support import RedisServer, Worker, needs_redis
from support.local_http import Receiver, drip, redirect
from stt_common.jobs import SIGNATURE_HEADER, derived_secret, verify

from .conftest import KEY, faster_worker, headers, start_server, stop_server, submit, wait_for

pytestmark = needs_redis
SECRET = "trust-webhook-master-secret"
PROXY_KEY = "pk-" + "q" * 64


class Planted:
    """What a pickle payload in Redis would do if anything unpickled it: create a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    return redis_server.jobs_env(tmp_path_factory.mktemp("trust-jobs"), STT_API_KEYS=f"{KEY},sk-other-caller",
                                 STT_ALLOW_OPEN_ACCESS="0", STT_WEBHOOK_SECRET=SECRET, STT_WEBHOOK_ALLOW_PRIVATE="1",
                                 STT_PROXY_KEY=PROXY_KEY, STT_JOB_HEARTBEAT_TTL="4", STT_JOBS_SERVICE="faster")


@pytest.fixture(scope="module")
def api(tmp_path_factory, env):
    s = start_server(tmp_path_factory.mktemp("trust-api"), **env)
    yield s
    stop_server(s)


@pytest.fixture
def conn(redis_server):
    return Redis.from_url(redis_server.url, password=redis_server.password)


def burst(tmp_path, env, timeout=180) -> Worker:
    """A worker that takes what is queued, then exits."""
    w = faster_worker(tmp_path, {**env, "STT_WORKER_BURST": "1"})
    w.proc.wait(timeout)
    return w


# ------------------------------------------------------------------ no code from Redis
def test_a_pickle_written_into_a_jobs_hash_is_never_unpickled_by_the_api(api, conn, speech, tmp_path):
    """Before: `meta` was a pickle, unpickled by every status or list call. Now JSON: the planted job is a 404."""
    marker = tmp_path / "pwned-by-meta"
    job = submit(api, speech["wav"])
    conn.hset(f"rq:job:{job['id']}", "meta", pickle.dumps(Planted(marker)))
    r = httpx.get(f"{api.url}/v1/jobs/{job['id']}", headers=headers(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    listed = httpx.get(api.url + "/v1/jobs", headers=headers(), timeout=10)
    assert listed.status_code == 200 and job["id"] not in [j["id"] for j in listed.json()["data"]]
    assert httpx.get(api.url + "/health", timeout=10).status_code == 200
    assert not marker.exists()


def test_a_worker_runs_only_the_allowed_functions(api, env, conn, tmp_path):
    """Jobs naming another function, a planted pickle as their data, or a failure callback of their own choosing
    fail without running anything."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    marker = tmp_path / "pwned-by-worker"
    q = Queue("stt-faster", connection=conn, serializer=JSONSerializer)
    named = q.enqueue_call("os.system", args=[f"touch {marker}"], meta={"service": "faster"})
    callback = q.enqueue_call("stt_common.jobs.execute", meta={"service": "faster", "params": {}},
                              on_failure=__import__("rq").Callback("os.system"))
    planted = q.enqueue_call("stt_common.jobs.execute", meta={"service": "faster"})
    conn.hset(f"rq:job:{planted.id}", "data", pickle.dumps(("stt_common.jobs.execute", None, (Planted(marker),), {})))
    w = burst(tmp_path, env)
    assert not marker.exists(), w.logs()
    failed = {m.decode() for m in conn.zrange("rq:failed:stt-faster", 0, -1)}
    assert {named.id, callback.id, planted.id} <= failed, w.logs()
    assert "names no function of this service" in w.logs()


def test_jobs_pickled_by_an_earlier_version_are_converted_and_run(api, env, conn, speech, tmp_path):
    """An upgrade with jobs queued: the old (pickled) ones run after it, read as plain data; a planted payload among
    them is refused, not run; the old webhook queue becomes delivery records."""
    marker = tmp_path / "pwned-by-legacy"
    job = submit(api, speech["wav"], response_format="text")   # then stored as the old version did: pickled
    raw = conn.hgetall(f"rq:job:{job['id']}")
    import zlib
    data = json.loads(zlib.decompress(raw[b"data"]))
    conn.hset(f"rq:job:{job['id']}", mapping={"data": zlib.compress(pickle.dumps(tuple(data))),
                                              "meta": pickle.dumps(json.loads(raw[b"meta"]))})
    planted = submit(api, speech["wav"])
    conn.hset(f"rq:job:{planted['id']}", "meta", pickle.dumps({"service": "faster", "x": Planted(marker)}))
    from rq import Queue
    legacy = Queue("stt-faster-webhooks", connection=conn).enqueue_call(   # RQ's default serializer: pickle
        "stt_common.jobs.deliver_webhook", args=["http://127.0.0.1:9/hook", {"id": job["id"], "status": "x"}])
    w = burst(tmp_path, env)
    assert not marker.exists(), w.logs()
    done, _ = wait_for(api, job["id"], timeout=30, worker=w)
    assert done["status"] == "succeeded", (done, w.logs())
    assert httpx.get(f"{api.url}/v1/jobs/{planted['id']}", headers=headers(), timeout=10).status_code == 404
    assert not conn.exists(f"rq:job:{legacy.id}") and not conn.exists("rq:queue:stt-faster-webhooks")
    records = [json.loads(conn.get(f"stt:webhook:{d.decode()}")) for d in conn.zrange("stt:faster:webhooks", 0, -1)]
    assert any(r["url"] == "http://127.0.0.1:9/hook" and r["payload"]["id"] == job["id"] for r in records)
    conn.delete("stt:faster:webhooks")


# ------------------------------------------------------------------ one identity per caller
def test_each_basic_auth_user_is_a_caller_of_its_own(api, speech):
    """What nginx sends for a basic-auth user: the proxy key and the user's name. Two users see only their own
    jobs, and neither sees the API keys' jobs (before: every basic-auth user was API key #1)."""
    def as_user(name):
        return {"Authorization": f"Bearer {PROXY_KEY}", "X-STT-User": name}

    with open(speech["wav"], "rb") as f:
        alice = httpx.post(api.url + "/v1/jobs", headers=as_user("alice"), files={"file": f}, timeout=30).json()
    with open(speech["wav"], "rb") as f:
        bob = httpx.post(api.url + "/v1/jobs", headers=as_user("bob"), files={"file": f}, timeout=30).json()
    key1 = submit(api, speech["wav"])

    def ids(h):
        return {j["id"] for j in httpx.get(api.url + "/v1/jobs", headers=h, timeout=10).json()["data"]}
    assert ids(as_user("alice")) == {alice["id"]} and ids(as_user("bob")) == {bob["id"]}
    assert alice["id"] not in ids(headers()) and key1["id"] not in ids(as_user("alice"))
    for h in (as_user("bob"), headers()):
        assert httpx.get(f"{api.url}/v1/jobs/{alice['id']}", headers=h, timeout=10).status_code == 404
        assert httpx.delete(f"{api.url}/v1/jobs/{alice['id']}", headers=h, timeout=10).status_code == 404
    # the user's name counts only with the proxy key; the proxy key only with a name
    assert ids({**headers(), "X-STT-User": "alice"}) == ids(headers())
    for bad in ({"Authorization": f"Bearer {PROXY_KEY}"}, as_user("a b"), as_user("x" * 65)):
        assert httpx.get(api.url + "/v1/jobs", headers=bad, timeout=10).status_code == 401
    secrets = {httpx.get(api.url + "/v1/jobs/webhook-secret", headers=h, timeout=10).json()["secret"]
               for h in (as_user("alice"), as_user("bob"), headers())}
    assert len(secrets) == 3   # a webhook secret each


# ------------------------------------------------------------------ quotas, a full Redis, atomic submission
@pytest.fixture
def limited(tmp_path, redis_server):
    """An API of its own (Redis database 2) with small limits."""
    env = redis_server.jobs_env(tmp_path / "jobs", STT_API_KEYS=f"{KEY},sk-other-caller", STT_ALLOW_OPEN_ACCESS="0",
                                STT_JOB_QUOTA_JOBS="2", STT_JOBS_MAX_QUEUED="3", STT_JOB_QUOTA_MB="1.5",
                                STT_REDIS_URL=redis_server.url.rsplit("/", 1)[0] + "/2")
    (tmp_path / "jobs").mkdir()
    s = start_server(tmp_path / "api", **env)
    yield s
    stop_server(s)


def refused(api, path, key=KEY) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(api.url + "/v1/jobs", headers=headers(key), files={"file": f}, timeout=30)


def test_quotas_per_caller_and_per_service_answer_429_with_retry_after(limited, speech, tmp_path):
    first = [submit(limited, speech["wav"]) for _ in range(2)]
    r = refused(limited, speech["wav"])
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert r.json()["error"]["code"] == "too_many_jobs" and r.json()["error"]["type"] == "rate_limit_error"
    submit(limited, speech["wav"], key="sk-other-caller")   # another caller has its own count
    r = refused(limited, speech["wav"], key="sk-other-caller")
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"   # 3 in all
    # a canceled job frees its place at once
    assert httpx.delete(f"{limited.url}/v1/jobs/{first[0]['id']}", headers=headers(), timeout=10).status_code == 200
    submit(limited, speech["wav"], key="sk-other-caller")
    usage = httpx.get(limited.url + "/v1/jobs", headers=headers(), timeout=10).json()
    assert usage["usage"]["jobs"] == 1 and usage["limits"]["jobs"] == 2
    # stored bytes: 1.5 MiB per caller; a larger upload is refused after it was read, and leaves nothing behind
    big = tmp_path / "big.wav"
    big.write_bytes(speech["wav"].read_bytes() + b"\0" * 1_100_000)
    before = set(os.listdir(tmp_path / "jobs"))
    httpx.delete(f"{limited.url}/v1/jobs/{first[1]['id']}", headers=headers(), timeout=10)
    r = refused(limited, big)
    assert r.status_code == 429 and r.json()["error"]["code"] == "storage_quota_exceeded" \
        and r.headers["retry-after"] == "600", r.text
    assert set(os.listdir(tmp_path / "jobs")) <= before   # no folder of a refused job


def test_a_full_redis_answers_503_and_leaves_no_half_made_job(tmp_path, speech):
    """Redis at maxmemory (noeviction): 503 jobs_unavailable with Retry-After, never 500; no folder, no job, no index
    entry left (the job and its index are written in one transaction)."""
    redis = RedisServer(tmp_path).start()
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    s = start_server(tmp_path / "api", **redis.jobs_env(jobs_dir, STT_API_KEYS=KEY, STT_ALLOW_OPEN_ACCESS="0"))
    try:
        ok = submit(s, speech["wav"])
        c = Redis(port=redis.port, password=redis.password)
        used = int(c.info("memory")["used_memory"])
        c.config_set("maxmemory", used + 64 * 1024)
        c.config_set("maxmemory-policy", "noeviction")
        i = 0
        try:
            while i < 100_000:
                c.set(f"filler:{i}", "x" * 1024)
                i += 1
        except Exception:  # noqa: BLE001 - OOM: full
            pass
        # and kept full: Redis's own accounting moves (client buffers come and go: the API's connections, the
        # health probe's), so a limit just below what it holds could let one write through by chance
        c.config_set("maxmemory", int(c.info("memory")["used_memory"]) // 2)
        keys_before = set(c.keys("*"))
        folders_before = set(os.listdir(jobs_dir))
        statuses = [refused(s, speech["wav"]).status_code for _ in range(5)]
        r = refused(s, speech["wav"])
        assert statuses == [503] * 5 and r.status_code == 503, (statuses, r.text)
        assert r.json()["error"]["code"] == "jobs_unavailable" and r.headers["retry-after"]
        assert set(c.keys("*")) == keys_before and set(os.listdir(jobs_dir)) == folders_before
        # reads still work: the accepted job is listed and answers
        assert httpx.get(f"{s.url}/v1/jobs/{ok['id']}", headers=headers(), timeout=10).status_code == 200
    finally:
        stop_server(s)
        redis.stop()


def test_bad_callback_urls_are_400_at_submission(api, speech):
    for url in ("http://exa\tmple.org/hook", "http://x:99999/", "http://127.0.0.1:9/hook?a=b c", "ftp://x/",
                "http://user:pw@example.org/"):
        with open(speech["wav"], "rb") as f:
            r = httpx.post(api.url + "/v1/jobs", headers=headers(), files={"file": f}, data={"callback_url": url},
                           timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_callback_url", (url, r.text)


# ------------------------------------------------------------------ webhooks
class Settings:
    webhook_secret = SECRET
    webhook_allow_private = False
    webhook_allow_networks = "127.0.0.2/32"   # the stand-in for a public receiver (tests/unit/test_outbound.py)
    webhook_timeout = 2.0


def deliverer(conn, **kw):
    from stt_common.jobs.webhooks import Deliverer
    settings = Settings()
    for k, v in kw.items():
        setattr(settings, k, v)
    return Deliverer(conn, settings, "trust-test", threads=2, poll_s=0.1,
                     resolver=kw.get("resolver"))


def queued(conn, url, owner="o1"):
    from stt_common.jobs.webhooks import queue_delivery
    return queue_delivery(conn, "trust-test", url, owner, {"id": "j1", "status": "succeeded"}, 3600)


def record(conn, delivery):
    raw = conn.get(f"stt:webhook:{delivery}")
    return None if raw is None else json.loads(raw)


def test_a_delivery_is_signed_for_its_caller_and_url(conn):
    with Receiver("127.0.0.2") as hook:
        d = queued(conn, hook.url + "/in")
        assert deliverer(conn).deliver_next()
    got = hook.requests[0]
    assert verify(derived_secret(SECRET, "o1"), got.headers[SIGNATURE_HEADER.lower()], hook.url + "/in", got.body)
    assert not verify(derived_secret(SECRET, "o2"), got.headers[SIGNATURE_HEADER.lower()], hook.url + "/in", got.body)
    assert record(conn, d) is None   # delivered: gone


def test_a_redirect_is_not_followed_and_a_private_address_never_reached(conn):
    with Receiver("127.0.0.1") as local, Receiver("127.0.0.2", behave=redirect("http://127.0.0.1/admin")) as hop:
        d = queued(conn, hop.url + "/in")
        assert deliverer(conn).deliver_next()
        rec = record(conn, d)
        assert rec["attempt"] == 1 and rec["last_error"].startswith("redirect"), rec
        due = conn.zscore("stt:trust-test:webhooks", d)
        assert 5 < due - time.time() <= 10   # retried after 10 s
        d2 = queued(conn, local.url + "/in")   # a private address (the policy allows 127.0.0.2 only)
        conn.zadd("stt:trust-test:webhooks", {d: time.time() + 3600})
        assert deliverer(conn).deliver_next()
        assert record(conn, d2)["last_error"].startswith("forbidden_address")
        assert local.connections == 0
    conn.delete("stt:trust-test:webhooks")


def test_a_rebinding_name_reaches_only_the_address_it_was_checked_with(conn):
    calls = []

    def rebinding(host, port, *a):
        calls.append(host)
        address = "127.0.0.2" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    with Receiver("127.0.0.1") as local, Receiver("127.0.0.2") as public:
        d = queued(conn, f"http://hooks.example.test:{public.port}/in")
        assert deliverer(conn, resolver=rebinding).deliver_next()
    assert calls == ["hooks.example.test"] and len(public.requests) == 1 and local.connections == 0
    assert record(conn, d) is None


def test_a_slow_drip_receiver_is_cut_at_the_deadline_and_delays_no_other_delivery(conn):
    with Receiver("127.0.0.2", behave=drip(0.5)) as slow, Receiver("127.0.0.2") as quick:
        d = deliverer(conn).start()
        try:
            t0 = time.monotonic()
            stuck = queued(conn, slow.url + "/in")
            time.sleep(0.3)
            queued(conn, quick.url + "/in")
            while not quick.requests and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            quick_after = time.monotonic() - t0
            while (record(conn, stuck) or {}).get("attempt", 0) < 1 and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            cut_after = time.monotonic() - t0
        finally:
            d.close()
    assert quick.requests and quick_after < 1.5, quick_after   # the other delivery did not wait
    assert record(conn, stuck)["last_error"].startswith("timeout") and cut_after < 4, cut_after   # 2 s deadline
    conn.delete("stt:trust-test:webhooks")


def test_a_slow_receiver_delays_no_transcription(api, env, speech, tmp_path):
    """The worker delivers webhooks on threads of their own: a job whose receiver drips forever ends, and the next
    job starts at once (before: the worker was held in the delivery, ten seconds per byte read at most)."""
    with Receiver("127.0.0.1", behave=drip(1.0, total=10_000)) as slow:
        w = faster_worker(tmp_path, {**env, "STT_WEBHOOK_TIMEOUT": "60"})
        try:
            first = submit(api, speech["wav"], callback_url=slow.url + "/hook")
            second = submit(api, speech["wav"])
            done1, _ = wait_for(api, first["id"], worker=w)
            done2, _ = wait_for(api, second["id"], worker=w)
        finally:
            w.stop()
    from datetime import datetime

    def when(iso):
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    assert done1["status"] == done2["status"] == "succeeded"
    assert slow.requests, "the slow receiver was called"
    assert when(done2["started_at"]) - when(done1["finished_at"]) < 5, (done1, done2)

"""A job worker on another host (issue 14), played on this machine by a worker process that shares nothing with
the API but Redis: its own jobs folder, the audio fetched from the API with the job's token, the result handed
back through Redis. Real Redis, real RQ, real tiny.en inference. (TLS on the link is the sandbox's part:
tests/e2e/test_multihost.py; here the fetch is plain HTTP on 127.0.0.1.)"""
from __future__ import annotations


import httpx
import pytest

from jobs_support import needs_redis
from stt_common.jobs import JobContext, claim_finish, finished_key
from stt_common.executor import JobStopped

from .conftest import start_server, stop_server
from .test_faster_jobs import KEY, faster_worker, headers, status, submit, wait_for

pytestmark = needs_redis


@pytest.fixture(scope="module")
def front(tmp_path_factory, redis_server):
    env = redis_server.jobs_env(tmp_path_factory.mktemp("front-jobs"), STT_API_KEYS=KEY,
                                STT_ALLOW_OPEN_ACCESS="0", STT_WORKER_NAME="front")
    s = start_server(tmp_path_factory.mktemp("front"), **env)
    yield s, env
    stop_server(s)


def test_a_worker_elsewhere_fetches_the_audio_with_the_jobs_token(front, redis_server, speech, tmp_path):
    api, env = front
    own = tmp_path / "worker-jobs"
    w = faster_worker(tmp_path, {**redis_server.jobs_env(own), "STT_JOBS_FETCH_URL": api.url,
                                 "STT_WORKER_NAME": "gpu-7"})
    try:
        job = submit(api, speech["long"], response_format="text", language="en")
        # the audio route wants the job's own token: not the API key, not another job's
        url = f"{api.url}/internal/jobs/{job['id']}/audio"
        assert httpx.get(url, headers=headers(), timeout=10).status_code == 404
        assert httpx.get(url, headers={"X-Job-Token": "guess"}, timeout=10).status_code == 404
        done, _ = wait_for(api, job["id"], worker=w)
        assert done["status"] == "succeeded" and done["worker"] == "gpu-7", (done, w.logs())
        text = httpx.get(api.url + done["result_url"], headers=headers(), timeout=10).text
        assert "speech" in text.lower()
        assert list(own.iterdir()) == []   # the worker kept no copy
        listed = httpx.get(api.url + "/v1/jobs", headers=headers(), timeout=10).json()
        assert listed["workers"].get("gpu-7", 0) >= 1
        metrics = httpx.get(api.url + "/metrics", timeout=10).text
        assert 'stt_jobs_finished_by_worker_total{outcome="succeeded",worker="gpu-7"} 1.0' in metrics
        assert 'stt_job_workers{worker="gpu-7"} 1.0' in metrics
        # once finished, the token opens nothing
        from redis import Redis
        from rq.job import Job
        conn = Redis.from_url(redis_server.url, password=redis_server.password)
        token = Job.fetch(job["id"], connection=conn).meta["audio_token"]
        assert httpx.get(url, headers={"X-Job-Token": token}, timeout=10).status_code == 404
        assert status(api, job["id"])["status"] == "succeeded"
    finally:
        w.stop()


def test_a_late_attempt_never_overwrites_the_winner(redis_server):
    """A worker cut off mid-job whose job was retried and finished elsewhere: its progress and its result are
    dropped (JobStopped at its next write), and it cannot claim the job."""
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(redis_server.url, password=redis_server.password)

    class S:
        job_ttl = 60
    job = Queue("stt-claim-test", connection=conn).enqueue("os.getpid", meta={"state": None})
    late, winner = JobContext(job, conn), JobContext(job, conn)
    assert claim_finish(conn, job, S, winner.attempt)
    winner.progress(5.0, force=True)   # the winner still writes
    with pytest.raises(JobStopped):
        late.progress(3.0, force=True)
    assert not claim_finish(conn, job, S, late.attempt)
    assert conn.get(finished_key(job.id)).decode() == winner.attempt
